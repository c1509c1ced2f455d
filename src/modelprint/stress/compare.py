"""compare_schemes(): every fingerprint scheme through the same stress suite, side by side (issue #9).

For each scheme (a registered generation strategy): generate ``n`` fingerprints from the base model,
embed them with the scheme's own recipe (``Strategy.embed_config``; nothing for ``trains=False``
schemes, whose marked model is the base itself), run :func:`modelprint.stress.stress` on the result,
and check the negative control (the unmarked base must not verify; for intrinsic schemes an unrelated
model is the right control). Each scheme's artifacts live under ``out/<scheme>/`` and a scheme is
finished once its ``result.json`` is written, so a re-run resumes: finished schemes are read back,
a killed one continues from its last artifact, a failed one is tried again. A scheme that fails
becomes a failed row; the others still run.

Equal n or equal key budgets: by default every scheme gets ``n`` keys. With ``queries=Q`` each gets the keys
that fit in Q queries at its own per-key cost (``Strategy.queries_per_key``: a multi-turn scheme asks several
queries per key, so it gets fewer keys), and each row records its keys, cost per key and queries spent — the
schemes are then compared on the same number of queries to the suspect.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from modelprint.config import VERIFY_DEFAULTS, load_config
from modelprint.embed import EmbedConfig
from modelprint.errors import ConfigError, FingerprintFileError, ModelprintError, OutputExistsError
from modelprint.evaluation import TaskResult, answer_agreement, get_task, reference_answers, run_tasks
from modelprint.fingerprints import FingerprintSet, load_fingerprints
from modelprint.generate import Strategy, get_strategy
from modelprint.io import atomic_directory, check_output_path, write_json_atomic
from modelprint.models import DEFAULT_MODEL, LoadedModel, load_model
from modelprint.stress.serving import GenerationBackend
from modelprint.stress.report import json_safe
from modelprint.stress.blueprint import SCOPE_WEIGHTS, Stressed
from modelprint.stress.runner import (AGREEMENT, StressReport, normalized_ratio, resolve_options, stress,
                                      verification_backend, verification_cell)
from modelprint.stress.suites import SuiteSpec

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
RESULT_FILE = "result.json"
BASE_FILE = "base_utility.json"
CONTROL = "control"  # column id of the negative control (base / unrelated model must NOT verify)
UNSTRESSED = "none"  # the stress report's baseline row label


class Comparison(StressReport):
    """comparison.json's content (one row per scheme, no key or response text) and where it was written."""


@dataclasses.dataclass
class _Plan:
    """Everything validated before any work: strategies, recipes, suite and the settings that must not change."""

    strategies: list[Strategy]
    sizes: dict[str, int]  # set size per scheme (``name:n`` overrides the common n)
    recipes: dict[str, Optional[EmbedConfig]]
    suite: SuiteSpec
    settings: dict[str, Any]


def parse_tasks(spec: Optional[str]) -> Optional[dict[str, int]]:
    """``"perplexity=16,piqa=8"`` → ``{"perplexity": 16, "piqa": 8}`` (None/empty: the suite's own sizes)."""
    if not spec:
        return None
    sizes: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, raw = part.partition("=")
        try:
            sizes[name.strip()] = int(raw)
        except ValueError:
            raise ConfigError(f"--tasks entry '{part}' is not of the form task=N") from None
        if sizes[name.strip()] < 1:
            raise ConfigError(f"--tasks entry '{part}': N must be ≥ 1")
    return sizes


def parse_schemes(schemes: Sequence[str], n: int) -> dict[str, int]:
    """``["perinucleus", "rofl:4"]`` → set size per scheme (``name:n`` for a scheme too slow to make n of)."""
    sizes: dict[str, int] = {}
    for item in (s.strip() for s in schemes if s.strip()):
        name, _, raw = item.partition(":")
        if name in sizes:
            raise ConfigError(f"scheme '{name}' is named twice")
        try:
            sizes[name] = int(raw) if raw else n
        except ValueError:
            raise ConfigError(f"scheme '{item}' is not of the form name or name:N") from None
        if sizes[name] < 1:
            raise ConfigError(f"scheme '{item}': the number of fingerprints must be ≥ 1")
    if not sizes:
        raise ConfigError("no schemes given (e.g. --schemes perinucleus,random-word)")
    return sizes


def key_budget(strategy: Strategy, queries: int) -> int:
    """The keys of ``strategy`` that fit in ``queries`` queries: ⌊queries / its per-key cost⌋ (at least 1)."""
    if queries < 1:
        raise ConfigError(f"the query budget must be ≥ 1, got {queries}")
    n = queries // strategy.queries_per_key
    if n < 1:
        raise ConfigError(f"a budget of {queries} queries affords no key of '{strategy.name}' "
                          f"({strategy.queries_per_key} queries per key): raise --queries")
    return n


def _plan(schemes: Sequence[str], model: Union[str, Path, LoadedModel], n: int, suite: Union[str, SuiteSpec],
          tasks: Optional[dict[str, int]], seed: int, alpha: float, match: str, embed_overrides: Sequence[str],
          unrelated: Union[str, Path, LoadedModel, None], queries: Optional[int] = None) -> _Plan:
    sizes = parse_schemes(schemes, n)
    strategies = [get_strategy(s) for s in sizes]  # unknown name → one line listing the known ones
    if queries is not None:
        if any(":" in s for s in schemes):
            raise ConfigError("a query budget sets every scheme's number of keys: drop the name:N sizes")
        sizes = {s.name: key_budget(s, queries) for s in strategies}
    spec = resolve_options(suite, tasks, match, alpha)
    for name in spec.tasks:
        get_task(name)
    recipes = {s.name: load_config(EmbedConfig, s.embed_config, list(embed_overrides)) if s.trains else None
               for s in strategies}
    settings = {"model": model.source if isinstance(model, LoadedModel) else str(model),
                "n": n if queries is None else None,
                "suite": spec.name, "entries": [e.label for e in spec.entries], "tasks": dict(spec.tasks),
                "seed": seed, "alpha": alpha, "match": match, "embed_overrides": list(embed_overrides),
                "unrelated": None if unrelated is None else
                (unrelated.source if isinstance(unrelated, LoadedModel) else str(unrelated)), "queries": queries}
    return _Plan(strategies, sizes, recipes, spec, settings)


def _prepare_out(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` or check that it was made with the same settings (so resuming is meaningful)."""
    check_output_path(out, overwrite, directory=True, reuse=True)
    stored = out / SETTINGS_FILE
    if out.exists() and overwrite:
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        if not stored.is_file():
            raise OutputExistsError(f"'{out}' exists and is not a scheme comparison (pass --overwrite to replace it)")
        import json

        old = json.loads(stored.read_text())
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise OutputExistsError(f"'{out}' was made with other settings ({', '.join(changed)} differ); use another "
                                    "--out or pass --overwrite")
    out.mkdir(exist_ok=True)
    write_json_atomic(stored, settings)


class _BaseUtility:
    """The base model's task scores and answer-agreement reference, computed once and cached in ``out``."""

    def __init__(self, base: LoadedModel, tasks: dict[str, int], seed: int, out: Path,
                 progress: Optional[bool]) -> None:
        self.base, self.seed, self.path, self.progress = base, seed, out / BASE_FILE, progress
        self.sizes = {t: n for t, n in tasks.items() if t != AGREEMENT}
        self.n_agree = tasks.get(AGREEMENT, 0)
        self._scores: Optional[dict[str, TaskResult]] = None
        self._reference = None

    def scores(self) -> dict[str, TaskResult]:
        if self._scores is None:
            import json

            if self.path.is_file() and json.loads(self.path.read_text()).get("model_hash") == self.base.model_hash:
                self._scores = {t: TaskResult(**r) for t, r in json.loads(self.path.read_text())["tasks"].items()}
            else:
                log.info("measuring the base model's utility once (the reference for the cost of embedding)")
                self._scores = run_tasks(self.base, list(self.sizes), self.sizes, self.seed, progress=self.progress)
                write_json_atomic(self.path, {"model_hash": self.base.model_hash, "tasks": {
                    t: {k: v for k, v in dataclasses.asdict(r).items() if k != "details"}
                    for t, r in self._scores.items()}})
        return self._scores

    def reference(self):
        if self._reference is None and self.n_agree:
            self._reference = reference_answers(self.base, self.n_agree, self.seed, progress=self.progress)
        return self._reference


def _embed_cost(marked: LoadedModel, report: dict[str, Any], base: _BaseUtility, trains: bool,
                progress: Optional[bool]) -> dict[str, Any]:
    """The unstressed marked model's utility normalized to the base model's (1.0 = embedding cost nothing)."""
    if not trains:
        return {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "tasks": {}, "note": "no training: the marked model is "
                                                                                  "the base"}
    none_row = next(r for r in report["rows"] if r["label"] == UNSTRESSED)
    per_task: dict[str, Any] = {}
    for task, base_res in base.scores().items():
        u = none_row["utility"].get(task)
        if not u:
            continue
        marked_res = TaskResult(task, u["metric"], u["score"], u["n"], u["ci"][0], u["ci"][1],
                                base_res.higher_is_better)
        per_task[task] = normalized_ratio(marked_res, base_res)
    reference = base.reference()
    if reference is not None:
        agree = answer_agreement(marked, reference, progress=progress)
        per_task[AGREEMENT] = (agree.score, agree.ci_low, agree.ci_high)
    vals = [v for v in per_task.values() if v[0] == v[0]]  # drop NaN ratios
    mean = [sum(v[i] for v in vals) / len(vals) if vals else float("nan") for i in range(3)]
    return {"mean": mean[0], "ci_low": mean[1], "ci_high": mean[2],
            "tasks": {t: {"normalized": v[0], "normalized_ci": [v[1], v[2]]} for t, v in per_task.items()}}


def _load_or_generate(strategy: Strategy, base: LoadedModel, path: Path, n: int) -> FingerprintSet:
    """The scheme's set in ``path`` (a resumed run), else a new one with a secret seed from the OS.

    ``--seed`` orders keys and samples tasks; it does not make the set (a fixed seed would make it guessable).
    """
    if path.is_file():
        fs = load_fingerprints(path)
        asked = fs.params.get("num_fingerprints", len(fs))  # a scheme may keep fewer than asked (RoFL drops misses)
        if (fs.strategy, asked, fs.model_hash) != (strategy.name, n, base.model_hash):
            raise FingerprintFileError(f"'{path}' holds another set than this comparison asks for (delete it to "
                                       "regenerate)")
        return fs
    from modelprint.generate import generate

    fs = generate(base, None, strategy=strategy.name, num_fingerprints=n)
    fs.save(path)  # atomic, owner-only
    return fs


def _control(strategy: Strategy, fs: FingerprintSet, base: LoadedModel, unrelated: Optional[LoadedModel],
             alpha: float, match: str, seed: int) -> dict[str, Any]:
    """The negative control: the unmarked base (or, for intrinsic schemes, an unrelated model) must not verify."""
    if strategy.trains:
        target, what = base, "base"
    elif unrelated is not None:
        target, what = unrelated, "unrelated"
    else:
        return {"status": "skipped", "model": None,
                "error": "intrinsic scheme: the base IS the marked model, and no unrelated model was given "
                         "(--unrelated)"}
    if target.tokenizer_hash != fs.tokenizer_hash:
        return {"status": "skipped", "model": target.source,
                "error": f"the {what} model tokenizes differently: it cannot be asked the keys token for token"}
    # asked the way the marked model's unstressed row is asked (white-box with --match auto|candidate)
    unstressed = Stressed(target, GenerationBackend(target, "none"), SCOPE_WEIGHTS)
    cell = verification_cell(verification_backend(unstressed, match), fs, alpha, match, seed)
    return {"status": "ok", "model": what, "verification": cell}


def _run_scheme(strategy: Strategy, recipe: Optional[EmbedConfig], base: LoadedModel,
                unrelated: Optional[LoadedModel], base_utility: _BaseUtility, sdir: Path, plan: _Plan,
                progress: Optional[bool], fast: bool) -> dict[str, Any]:
    s = plan.settings
    seconds: dict[str, float] = {}
    sdir.mkdir(mode=0o700, exist_ok=True)  # holds the secret set
    t = time.perf_counter()
    fs = _load_or_generate(strategy, base, sdir / "fingerprints.jsonl", plan.sizes[strategy.name])
    seconds["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    marked = base
    if strategy.trains:
        model_dir = sdir / "model"
        if (model_dir / "config.json").is_file():
            marked = load_model(model_dir)
        else:
            from modelprint.embed import embed

            marked = embed(base, fs, model_dir, config=recipe, resume=True).model  # killed run: continues
    seconds["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    report_dir = sdir / "report"
    if (report_dir / "report.json").is_file():
        import json

        report = json.loads((report_dir / "report.json").read_text())
    else:
        from modelprint.stress.report import write_report

        report = stress(marked, fs, base=base, suite=plan.suite, alpha=s["alpha"], match=s["match"], seed=s["seed"],
                        progress=progress, fast=fast).data
        with atomic_directory(report_dir, overwrite=True) as tmp:
            write_report(report, tmp)
    seconds["stress"] = time.perf_counter() - t

    t = time.perf_counter()
    control = _control(strategy, fs, base, unrelated, s["alpha"], s["match"], s["seed"])
    cost = _embed_cost(marked, report, base_utility, strategy.trains, progress)
    seconds["control_and_cost"] = time.perf_counter() - t
    return {"status": "ok", "set_id": fs.set_id, "n_fingerprints": len(fs), "marked_model_hash": report["model_hash"],
            "control": control, "embed_cost": cost, "rows": report["rows"], "seconds": seconds}


def _cells(result: dict[str, Any], columns: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell per column: verification rate, ASR, verdict and normalized utility (no per-task detail)."""
    by_label = {r["label"]: r for r in result.get("rows", [])}
    cells: dict[str, Any] = {}
    for col in columns:
        if col["id"] == CONTROL:
            c = result.get("control") or {"status": "failed", "error": "not run"}
            if c["status"] != "ok":
                cells[CONTROL] = {"status": c["status"], "error": c.get("error", "")}
                continue
            v = c["verification"]
            cells[CONTROL] = {"status": "ok", "model": c["model"], "rate": v["rate"], "asr": v["asr"],
                              "verdict": v["verdict"], "log10_p": v["log10_p"], "matches": v["matches"], "n": v["n"],
                              "utility": None}
            continue
        row = by_label.get(col["id"])
        if row is None or row.get("status") != "ok":
            cells[col["id"]] = {"status": "failed", "error": (row or {}).get("error", "not run")}
            continue
        v = row["verification"]
        um = result["embed_cost"] if col["id"] == UNSTRESSED else (row.get("utility_mean") or {})
        cells[col["id"]] = {"status": "ok", "rate": v["rate"], "asr": v["asr"], "verdict": v["verdict"],
                            "log10_p": v["log10_p"], "matches": v["matches"], "n": v["n"],
                            "utility": um.get("mean"), "utility_ci": [um.get("ci_low"), um.get("ci_high")],
                            "scope": row.get("scope")}
    return cells


def _columns(spec: SuiteSpec) -> list[dict[str, Any]]:
    from modelprint.stress.blueprint import get_stress

    cols = [{"id": CONTROL, "label": "control (base / unrelated must NOT verify)", "kind": "control"},
            {"id": UNSTRESSED, "label": "marked, unstressed (utility vs base = embedding cost)", "kind": "baseline"}]
    return cols + [{"id": e.label, "label": e.label, "stress": e.stress, "kind": get_stress(e.stress).kind,
                    "params": dict(e.params)} for e in spec.entries]


def _row(strategy: Strategy, result: dict[str, Any], columns: list[dict[str, Any]]) -> dict[str, Any]:
    row = {"scheme": strategy.name, "description": strategy.description, "source": strategy.source,
           "trains": strategy.trains, "embed_config": strategy.embed_config, "verifier": strategy.verifier,
           "status": result["status"], "seconds": result.get("seconds", {}),
           "queries_per_key": strategy.queries_per_key, "n_requested": result.get("n_requested")}
    if result["status"] != "ok":
        row["error"] = result.get("error", "")
        row["cells"] = {}
        return row
    row.update(set_id=result["set_id"], n_fingerprints=result["n_fingerprints"],
               queries=result["n_fingerprints"] * strategy.queries_per_key,  # what verifying every key costs
               marked_model_hash=result["marked_model_hash"], embed_cost=result["embed_cost"],
               cells=_cells(result, columns))
    return row


def compare_schemes(schemes: Sequence[str], *, model: Union[str, Path, LoadedModel] = DEFAULT_MODEL,
                    num_fingerprints: int = 16, suite: Union[str, SuiteSpec] = "quick",
                    out: Union[str, Path, None] = None, tasks: Optional[dict[str, int]] = None, seed: int = 0,
                    alpha: float = VERIFY_DEFAULTS.alpha, match: str = VERIFY_DEFAULTS.match,
                    embed_overrides: Sequence[str] = (),
                    unrelated: Union[str, Path, LoadedModel, None] = None, overwrite: bool = False,
                    progress: Optional[bool] = None, fast: bool = False, queries: Optional[int] = None) -> Comparison:
    """Generate, embed and stress every scheme from ``model``; write ``out/comparison.json|html`` and the plot.

    ``queries``: an equal key budget instead of an equal ``num_fingerprints`` — each scheme gets
    :func:`key_budget` keys (⌊queries / its queries per key⌋).

    ``out`` keeps each scheme's artifacts (``<scheme>/fingerprints.jsonl`` 0600, ``model/``, ``report/``,
    ``result.json``) so a re-run with the same settings resumes; without ``out`` nothing is kept.
    """
    start = time.perf_counter()
    plan = _plan(schemes, model, num_fingerprints, suite, tasks, seed, alpha, match, embed_overrides, unrelated,
                 queries)
    if out is None:
        import tempfile

        work, keep = Path(tempfile.mkdtemp(prefix="modelprint-compare-")), False
    else:
        work, keep = Path(out), True
        _prepare_out(work, plan.settings, overwrite)
    try:
        base = load_model(model)
        other = load_model(unrelated) if unrelated is not None else None
        base_utility = _BaseUtility(base, dict(plan.suite.tasks), seed, work, progress)
        columns = _columns(plan.suite)
        rows = []
        for strategy in plan.strategies:
            rows.append(_row(strategy, _scheme_result(strategy, plan, base, other, base_utility, work, progress,
                                                      fast), columns))
        data = {"format": "modelprint.stress.compare", "version": 1, "model": base.source,
                "model_hash": base.model_hash, **{k: v for k, v in plan.settings.items() if k != "model"},
                "columns": columns, "rows": rows, "seconds": time.perf_counter() - start,
                "notes": {"cell": "verification rate (share of keys answered with their response; ASR = 1 − rate) "
                                  "and "
                                  "normalized utility; the verdict is verify's decision at alpha",
                          CONTROL: "must NOT verify: the unmarked base for schemes that train; for schemes that do not "
                                   "train (the marked model is the base) only an unrelated model is a valid control",
                          UNSTRESSED: "utility normalized to the BASE model: the cost of embedding",
                          "stresses": "utility normalized to the unstressed marked model, as in each scheme's stress "
                                      "report (out/<scheme>/report/)",
                          "budget": "equal n: every scheme gets the same number of keys" if queries is None else
                                    f"equal key budget: each scheme gets ⌊{queries} / its queries per key⌋ keys, "
                                    "so all are verified with at most the same number of queries"}}
        comparison = Comparison(data, work if keep else None)
        if keep:
            from modelprint.stress.compare_report import write_comparison

            write_comparison(data, work)
        return comparison
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _scheme_result(strategy: Strategy, plan: _Plan, base: LoadedModel, unrelated: Optional[LoadedModel],
                   base_utility: _BaseUtility, work: Path, progress: Optional[bool], fast: bool) -> dict[str, Any]:
    """The scheme's finished result (read back when done before), else run it; a failure is recorded, not raised."""
    import json

    path = work / strategy.name / RESULT_FILE
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("status") == "ok" and done.get("n_requested") == plan.sizes[strategy.name]:
            log.info("%s: done before, read back", strategy.name)
            return done
    log.info("scheme %s: generate → embed → stress", strategy.name)
    t = time.perf_counter()
    try:
        result = _run_scheme(strategy, plan.recipes[strategy.name], base, unrelated, base_utility,
                             work / strategy.name, plan, progress, fast)
    except Exception as exc:  # noqa: BLE001  (one failed scheme must not stop the comparison)
        msg = str(exc) if isinstance(exc, ModelprintError) else f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning("scheme %s failed: %s", strategy.name, msg)
        result = {"status": "failed", "error": msg.splitlines()[0] if msg else type(exc).__name__, "seconds": {}}
    result["seconds"]["total"] = time.perf_counter() - t
    result["n_requested"] = plan.sizes[strategy.name]
    (work / strategy.name).mkdir(mode=0o700, exist_ok=True)
    result = json_safe(result)  # NaN → None, so a fresh result equals the one read back on resume
    write_json_atomic(path, result)
    return result

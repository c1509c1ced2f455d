"""Run registered tasks by name, define the quick/full suites, and turn results into one utility number.

The runner knows no task: it looks names up in the registry and passes sample
sizes, seeds and options through, so embed and stress evaluate identically.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Optional, Sequence, Union

from modelprint.errors import ModelprintError
from modelprint.evaluation.agreement import AgreementReference
from modelprint.evaluation.data import MissingDataError
from modelprint.evaluation.blueprint import TASKS, get_task
from modelprint.evaluation.results import TaskResult
from modelprint.models import LoadedModel

log = logging.getLogger(__name__)

QUICK_TASKS = ("perplexity", "mmlu", "openbookqa", "commonsenseqa", "piqa", "nq-open", "truthfulqa", "gsm8k")
FULL_TASKS = QUICK_TASKS + ("perplexity-news",)


def suite(name: str) -> dict[str, int]:
    """Task name -> sample size of suite ``quick`` (minutes on 2 CPU cores, 135M) or ``full``."""
    if name == "quick":
        return {t: get_task(t).quick_n for t in QUICK_TASKS}
    if name == "full":
        return {t: get_task(t).default_n for t in FULL_TASKS}
    raise ModelprintError(f"unknown evaluation suite '{name}' (known: quick, full)")


SUITES = ("quick", "full")


def run_tasks(model: LoadedModel, names: Sequence[str], n: Union[int, Mapping[str, int], None] = None,
              seed: int = 0, *, options: Optional[Mapping[str, Mapping[str, Any]]] = None,
              reference: Optional[AgreementReference] = None, base: Optional[LoadedModel] = None,
              batch_size: Optional[int] = None, progress: Optional[bool] = None,
              skip_missing_data: bool = False) -> dict[str, TaskResult]:
    """Run each named task; ``n`` is one size for all, a per-task mapping, or None (each task's default).

    ``options`` holds per-task keyword options (e.g. ``{"gsm8k": {"max_new_tokens": 256}}``);
    ``reference``/``base`` feed ``answer-agreement``. With ``skip_missing_data`` a task whose data
    is not installed is logged and left out instead of failing the run.
    """
    specs = [get_task(name) for name in names]  # fail on a typo before any work
    results: dict[str, TaskResult] = {}
    for spec in specs:
        size = n.get(spec.name) if isinstance(n, Mapping) else n
        opts: dict[str, Any] = dict((options or {}).get(spec.name, {}))
        opts.setdefault("progress", progress)
        if batch_size is not None:
            opts.setdefault("batch_size", batch_size)
        if spec.name == "answer-agreement":
            opts.setdefault("reference", reference)
            opts.setdefault("base", base)
        start = time.perf_counter()
        try:
            result = spec.run(model, size, seed, **opts)
        except MissingDataError as exc:
            if not skip_missing_data:
                raise
            log.warning("skipping task %s: %s", spec.name, exc)
            continue
        result.seconds = time.perf_counter() - start
        log.info("%s: %s = %.4g [%.4g, %.4g] (n=%d, %.1fs)", spec.name, result.metric, result.score,
                 result.ci_low, result.ci_high, result.n, result.seconds)
        results[spec.name] = result
    return results


def run_suite(model: LoadedModel, name: str = "quick", seed: int = 0, *,
              reference: Optional[AgreementReference] = None, base: Optional[LoadedModel] = None,
              **kwargs: Any) -> dict[str, TaskResult]:
    """Run suite ``name``; answer agreement is added when a reference or base model is given."""
    sizes = suite(name)
    if reference is not None or base is not None:
        sizes["answer-agreement"] = get_task("answer-agreement").quick_n if name == "quick" else \
            get_task("answer-agreement").default_n
    kwargs.setdefault("skip_missing_data", name == "full")
    return run_tasks(model, list(sizes), sizes, seed, reference=reference, base=base, **kwargs)


def _score(r: Union[TaskResult, Mapping[str, Any]]) -> tuple[float, bool]:
    if isinstance(r, TaskResult):
        return float(r.score), bool(r.higher_is_better)
    return float(r["score"]), bool(r.get("higher_is_better", True))


def normalized_utility(stressed: Mapping[str, Union[TaskResult, Mapping[str, Any]]],
                       base: Mapping[str, Union[TaskResult, Mapping[str, Any]]]) -> dict[str, float]:
    """Per-task score ratio stressed/base (inverted for lower-is-better perplexity) and their ``mean``.

    1.0 means unchanged, below 1.0 worse. Tasks missing on either side are left
    out; a task whose base score is 0 (a small model on GSM8K) has no ratio
    (NaN) and is left out of the mean.
    """
    out: dict[str, float] = {}
    for name in stressed:
        if name not in base or name == "mean":
            continue
        s, higher = _score(stressed[name])
        b, _ = _score(base[name])
        num, den = (s, b) if higher else (b, s)
        if den == 0 or math.isnan(num) or math.isnan(den):
            ratio = float("nan")
        else:
            ratio = num / den
        out[name] = ratio
    valid = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = sum(valid) / len(valid) if valid else float("nan")
    return out


def available_tasks() -> list[str]:
    """Names of all registered tasks."""
    return sorted(TASKS)

"""What one grid point runs: ``embed`` → ``verify`` (exact and candidate), or the stress suite.

Both go through the stages' public entry points; the metrics they return are numbers and verdicts only
(never a key, response or seed), and NaN is stored as None so a record reads back equal.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

from pydantic import Field

from modelprint.config import VERIFY_DEFAULTS, StrictConfig
from modelprint.embed import EmbedConfig, embed
from modelprint.fingerprints import FingerprintSet, load_fingerprints
from modelprint.models import LoadedModel, load_model
from modelprint.stress import resolve_options, stress
from modelprint.sweep.grid import Grid, GridPoint, expand_grid, read_grid_yaml
from modelprint.sweep.report import write_sweep_report
from modelprint.sweep.runner import SweepResult, prepare_work, run_grid
from modelprint.verify import LocalBackend, verify
from modelprint.verify.verifiers import records_candidates

EMBED_METRICS = ("exact_rate", "candidate_rate", "retention", "perplexity_change", "answer_agreement", "epochs")
STRESS_METRICS = ("min_rate", "mean_rate", "rows_match", "utility_mean")


class StressSweepConfig(StrictConfig):
    """The stress options a sweep may vary (``modelprint stress``'s, same names and defaults)."""

    suite: str = "quick"
    access: list[str] = Field(default_factory=lambda: ["weights"])
    alpha: float = Field(VERIFY_DEFAULTS.alpha, gt=0.0, lt=1.0)
    match: Literal["auto", "exact", "prefix", "candidate", "sample"] = VERIFY_DEFAULTS.match
    seed: int = 0
    tasks: Optional[dict[str, int]] = Field(None, description="utility tasks and sizes instead of the suite's")


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def load_grid(kind: str, config: Union[str, Path, None], sets: Iterable[str]) -> Grid:
    """The grid of ``kind`` ('embed': :class:`EmbedConfig`; 'stress': :class:`StressSweepConfig`) from a YAML file
    (``{grid: [...]}`` leaves; a bare name finds ``configs/sweep/NAME.yaml``) and ``--set`` pairs; every point
    checked, stress points also against the suite and access names, before anything runs."""
    cls = {"embed": EmbedConfig, "stress": StressSweepConfig}[kind]
    data = read_grid_yaml(Path(config), "sweep") if config is not None else {}
    grid = expand_grid(cls, data, sets)
    if kind == "stress":
        for p in grid.points:
            c = p.config
            resolve_options(c.suite, c.tasks, c.match, c.alpha, c.access)
    return grid


def _verify_cells(lm: LoadedModel, fs: FingerprintSet, alpha: float) -> dict[str, Any]:
    backend = LocalBackend(lm)
    out: dict[str, Any] = {}
    for mode in ("exact", "candidate"):
        if mode == "candidate" and not records_candidates(fs):
            out.update({f"{mode}_rate": None, f"{mode}_verdict": "n/a (set records no candidates)",
                        f"{mode}_log10_p": None})
            continue
        rec = verify(backend, fs, alpha=alpha, match=mode, sequential=False, check_tokenizer=False)
        out.update({f"{mode}_rate": rec.matches / rec.n_asked if rec.n_asked else None,
                    f"{mode}_verdict": rec.verdict, f"{mode}_log10_p": _clean(rec.log10_p_value)})
    return out


def sweep_embed(model: Union[str, Path, LoadedModel], fingerprints: Union[str, Path, FingerprintSet], work: Union[str, Path],
                grid: Grid, *, alpha: float = VERIFY_DEFAULTS.alpha, keep_models: bool = False,
                overwrite: bool = False) -> SweepResult:
    """Embed ``fingerprints`` into ``model`` with each point's recipe, verify the result (exact and candidate
    matching, local weights) and record retention and the embed utility figures; table and plot in ``work``.

    ``keep_models``: keep each point's model directory (with its ``modelprint.json`` manifest) under
    ``points/<name>/model``; by default only the record is kept (a 135M model is ~0.5 GB per point).
    """
    fs = fingerprints if isinstance(fingerprints, FingerprintSet) else load_fingerprints(Path(fingerprints))
    base = load_model(model)
    inputs = {"model_hash": base.model_hash, "set_id": fs.set_id, "alpha": alpha}
    prepare_work(Path(work), "embed", inputs, overwrite)

    def run(point: GridPoint, pdir: Path) -> dict[str, Any]:
        cfg = point.config
        res = embed(base, fs, pdir / "model" if keep_models else None, config=cfg)
        metrics: dict[str, Any] = {"objective": cfg.objective, "retention": res.retention, "epochs": res.epochs,
                                   "averaged": res.averaged, "embed_seconds": res.seconds}
        metrics.update(_verify_cells(res.model, fs, alpha))
        if res.utility:
            metrics.update(perplexity_base=res.utility["base"]["perplexity"],
                           perplexity=res.utility["fingerprinted"]["perplexity"],
                           perplexity_change=res.utility["relative"]["perplexity_change"],
                           answer_agreement=res.utility["relative"]["answer_agreement"])
        return {k: _clean(v) for k, v in metrics.items()}

    result = run_grid(grid, Path(work), "embed", inputs, run)
    write_sweep_report(result, EMBED_METRICS)
    return result


def sweep_stress(model: Union[str, Path, LoadedModel], fingerprints: Union[str, Path, FingerprintSet],
                 work: Union[str, Path], grid: Grid, *, base: Union[str, Path, LoadedModel, None] = None,
                 overwrite: bool = False) -> SweepResult:
    """Run the stress suite on the fingerprinted ``model`` once per point (each point's report under
    ``points/<name>/report``); the table holds the lowest and mean verification rate over the stressed rows,
    how many rows still verify, and the mean normalized utility."""
    fs = fingerprints if isinstance(fingerprints, FingerprintSet) else load_fingerprints(Path(fingerprints))
    marked = load_model(model)
    base_lm = load_model(base) if base is not None else None
    inputs = {"model_hash": marked.model_hash, "set_id": fs.set_id,
              "base_hash": base_lm.model_hash if base_lm is not None else None}
    prepare_work(Path(work), "stress", inputs, overwrite)

    def run(point: GridPoint, pdir: Path) -> dict[str, Any]:
        c = point.config
        report = stress(marked, fs, base=base_lm, suite=c.suite, out=pdir / "report", alpha=c.alpha, match=c.match,
                        seed=c.seed, tasks=c.tasks, access=c.access)
        rows = [r for r in report.rows if r["kind"] != "baseline"]
        ok = [r for r in rows if r.get("status") == "ok"]
        rates = [r["verification"]["rate"] for r in ok]
        utils = [u for u in (_clean((r.get("utility_mean") or {}).get("mean")) for r in ok) if u is not None]
        metrics: dict[str, Any] = {
            "rows": len(rows), "rows_failed": len(rows) - len(ok),
            "rows_match": sum(r["verification"]["verdict"] == "match" for r in ok),
            "min_rate": min(rates) if rates else None, "mean_rate": sum(rates) / len(rates) if rates else None,
            "utility_mean": sum(utils) / len(utils) if utils else None,
            "unstressed_rate": report.rows[0]["verification"]["rate"]}
        metrics.update({f"rate[{r['label']}]": r["verification"]["rate"] for r in ok})
        return {k: _clean(v) for k, v in metrics.items()}

    result = run_grid(grid, Path(work), "stress", inputs, run)
    write_sweep_report(result, STRESS_METRICS)
    return result

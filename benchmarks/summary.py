"""What the seed-repeating benchmarks (embed.py, capacity.py) share: the figure table and the mean ± sd (worst run)
summary, so one lucky run is never the result and every benchmark reports its spread the same way.

A figure table maps a row key to (label, format, whether larger is better); the worst run is the min or the max
accordingly. Missing or NaN values (a run that did not measure the figure) are left out of that figure's summary.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Optional

Figures = dict[str, tuple[str, str, bool]]

# the figures embed.py reports per run; other benchmarks reuse entries by name
FIGURES: Figures = {
    "retention": ("retention", "{:.1%}", True),
    "perplexity_change": ("ppl Δ", "{:+.1%}", False),
    "answer_agreement": ("agreement", "{:.1%}", True),
    "task_utility": ("task util", "{:.3f}", True),
    "seconds": ("seconds", "{:.0f}", False),
    "averaged": ("λ", "{:.2f}", True),
}


def summarize(rows: list[dict[str, Any]], figures: Figures = FIGURES) -> dict[str, dict[str, float]]:
    """Per figure: mean, sample sd (0 for one run), worst run and the number of runs that reported it."""
    out: dict[str, dict[str, float]] = {}
    for name, (_, _, higher) in figures.items():
        values = [float(r[name]) for r in rows if r.get(name) is not None and not math.isnan(float(r[name]))]
        if not values:
            continue
        out[name] = {"mean": statistics.fmean(values),
                     "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "worst": min(values) if higher else max(values), "runs": len(values)}
    return out


def fmt(name: str, value: Optional[float], figures: Figures = FIGURES) -> str:
    """One value in its figure's format; '–' for a figure the run did not measure."""
    return "–" if value is None or math.isnan(value) else figures[name][1].format(value)


def header_cells(figures: Figures = FIGURES) -> str:
    return " ".join(f"{label:>10}" for label, _, _ in figures.values())


def row_cells(row: dict[str, Any], figures: Figures = FIGURES) -> str:
    return " ".join(f"{fmt(f, row.get(f), figures):>10}" for f in figures)


def summary_cells(summary: dict[str, dict[str, float]], figures: Figures = FIGURES) -> str:
    """``label mean ± sd (worst)`` for every figure the summary has, joined with ' · '."""
    return " · ".join(f"{figures[f][0]} {fmt(f, s['mean'], figures)} ± {fmt(f, s['sd'], figures).lstrip('+')} "
                      f"({fmt(f, s['worst'], figures)})" for f, s in summary.items())

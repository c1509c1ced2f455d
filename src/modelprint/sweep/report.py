"""One table across the grid (markdown, CSV, JSON Lines) and one plot: a panel per metric, x = the first grid
parameter, a line per value of the second (per combination of the rest). Numbers and grid values only."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

from modelprint.io import write_text_atomic
from modelprint.sweep.runner import SweepResult

TABLE_STEM = "sweep"


def table_rows(result: SweepResult) -> list[dict[str, Any]]:
    """One flat row per point: grid values, status, the point's metrics, seconds."""
    rows = []
    for rec in result.records:
        row: dict[str, Any] = {k: rec["values"].get(k) for k in result.axes}
        row["status"] = rec["status"]
        row.update(rec.get("metrics") or {})
        if rec["status"] != "ok":
            row["error"] = rec.get("error", "")
        row["seconds"] = rec.get("seconds")
        row["point"] = rec["point"]
        rows.append(row)
    return rows


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(v) for k, v in r.items()})
    return buf.getvalue()


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return float("nan")


def plot_metrics(result: SweepResult, rows: Sequence[dict[str, Any]], metrics: Sequence[str], path: Path) -> None:
    """A panel per metric; x = the first axis (numeric values on a log scale when they span a factor ≥ 10),
    a line per value of the remaining axes; a one-point grid is a bar per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = list(result.axes)
    metrics = [m for m in metrics if any(not math.isnan(_number(r.get(m))) for r in rows)] or ["seconds"]
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    panels = [list(grid.flat)]
    for spare in panels[0][len(metrics):]:
        spare.set_visible(False)
    x_key = axes[0] if axes else None
    xs = list(result.axes[x_key]) if x_key else [None]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    positions = [float(v) for v in xs] if numeric else list(range(len(xs)))
    log_x = numeric and min(positions) > 0 and max(positions) / min(positions) >= 10
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={_fmt(r.get(k))}" for k in axes[1:]) or "all"
        groups.setdefault(label, []).append(r)
    for panel, metric in zip(panels[0], metrics):
        for label, members in groups.items():
            by_x = {json.dumps(r.get(x_key), default=str): _number(r.get(metric)) for r in members}
            ys = [by_x.get(json.dumps(v, default=str), float("nan")) for v in xs]
            panel.plot(positions, ys, marker="o", label=label)
        panel.set_title(metric, fontsize=10)
        panel.set_xlabel(x_key or "")
        if log_x:
            panel.set_xscale("log")
        if not numeric:
            panel.set_xticks(positions, [_fmt(v) for v in xs], rotation=20, fontsize=8)
        panel.grid(alpha=0.3)
    if len(groups) > 1 or axes[1:]:
        panels[0][len(metrics) - 1].legend(fontsize=7, loc="best")
    fig.suptitle(f"modelprint sweep {result.kind}: {len(rows)} point(s)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_sweep_report(result: SweepResult, metrics: Sequence[str]) -> dict[str, Path]:
    """``sweep.md``, ``sweep.csv``, ``sweep.jsonl`` and ``sweep.png`` in the work directory, each atomically."""
    rows = table_rows(result)
    work = result.work
    paths = {ext: work / f"{TABLE_STEM}.{ext}" for ext in ("md", "csv", "jsonl", "png")}
    title = f"# modelprint sweep {result.kind}\n\n" + \
        "grid: " + "; ".join(f"{k} ∈ {json.dumps(v, default=str)}" for k, v in result.axes.items()) + "\n\n"
    write_text_atomic(paths["md"], title + markdown_table(rows))
    write_text_atomic(paths["csv"], csv_table(rows))
    write_text_atomic(paths["jsonl"], "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
    plot_metrics(result, rows, metrics, paths["png"])
    return paths

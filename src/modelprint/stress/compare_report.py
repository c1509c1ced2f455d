"""comparison.json, comparison.html, the one leaderboard plot with every scheme, and the terminal table."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from modelprint.io import write_json_atomic, write_text_atomic
from modelprint.stress.report import ACCEPT, json_safe, _f

CELL_WIDTH = 11
MARKERS = {"attack": "^", "stress": "o", "baseline": "*"}
X_MAX = 1.3  # utility above this (noise on tiny or broken models) is drawn at the edge


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _queries(row: dict[str, Any]) -> str:
    """Queries spent on a row's keys (rows written before budgets existed cost one query per key)."""
    return str(row.get("queries", row.get("n_fingerprints", "")))


def format_cell(cell: dict[str, Any]) -> str:
    """``rate/utility`` with ``*`` when verify says match (in the control column that is a false positive)."""
    if cell.get("status") != "ok":
        return cell.get("status", "failed")
    return f"{_f(cell['rate'])}/{'-' if _nan(cell.get('utility')) else _f(cell['utility'])}" + \
        ("*" if cell["verdict"] == "match" else "")


def _headers(col: dict[str, Any]) -> tuple[str, str]:
    """Two header lines that fit a cell: the plug-in's name, then its parameter values."""
    if col["kind"] in ("control", "baseline"):
        return col["id"], ""
    return col["stress"][:CELL_WIDTH], ",".join(str(v) for v in col.get("params", {}).values())[:CELL_WIDTH]


def format_comparison(data: dict[str, Any]) -> str:
    """Rows = schemes, columns = control, unstressed and each stress/attack (name over parameters)."""
    cols = data["columns"]
    width = max([6] + [len(r["scheme"]) for r in data["rows"]])
    heads = [_headers(c) for c in cols]
    lines = [f"{'scheme':{width}} {'n':>3} {'q':>4} " + " ".join(f"{h[0]:>{CELL_WIDTH}}" for h in heads)
             + f" {'time':>7}",
             f"{'':{width}} {'':>3} {'':>4} " + " ".join(f"{h[1]:>{CELL_WIDTH}}" for h in heads)]
    for r in data["rows"]:
        total = r.get("seconds", {}).get("total")
        t = f"{total / 60:6.1f}m" if total is not None else f"{'':>7}"
        if r["status"] != "ok":
            lines.append(f"{r['scheme']:{width}} failed: {r.get('error', '')}")
            continue
        lines.append(f"{r['scheme']:{width}} {r['n_fingerprints']:>3} {_queries(r):>4} "
                     + " ".join(f"{format_cell(r['cells'][c['id']]):>{CELL_WIDTH}}" for c in cols) + f" {t}")
    if data.get("queries") is not None:
        lines.append(f"equal key budget: {data['queries']} queries per scheme; n = ⌊budget / queries per key⌋")
    lines.append("n = fingerprints in the set; q = queries verifying them costs; cell = verification rate / normalized utility; * = verify says match at "
                 f"alpha={data['alpha']:g} (in 'control' a false positive); '-' = utility not measured")
    lines.append("control: unmarked base (or an unrelated model for schemes that do not train), must not verify; "
                 "none: marked model, utility vs the base (embedding cost); other columns: utility vs the marked model")
    for r in data["rows"]:
        skipped = r.get("cells", {}).get("control", {})
        if skipped.get("status") == "skipped":
            lines.append(f"{r['scheme']}: control skipped ({skipped.get('error', '')})")
    return "\n".join(lines)


def plot_comparison(data: dict[str, Any], path: Path) -> None:
    """One leaderboard: x = normalized utility, y = verification rate; a colour per scheme, a marker per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 6.5))
    colours = plt.get_cmap("tab10")
    kinds = {c["id"]: c["kind"] for c in data["columns"]}
    right = X_MAX + 0.02
    handles = []
    n_rows = max(1, len(data["rows"]))
    for i, r in enumerate(data["rows"]):
        colour = colours(i % 10)
        jitter = 0.012 * (i - (n_rows - 1) / 2)  # schemes side by side where points coincide
        handles.append(Line2D([], [], color=colour, marker="s", ls="", label=f"{r['scheme']}"
                              + ("" if r["status"] == "ok" else " (failed)")))
        for cid, cell in r.get("cells", {}).items():
            if cid == "control" or cell.get("status") != "ok":
                continue
            measured = not _nan(cell.get("utility"))
            x = min(cell["utility"], X_MAX) if measured else 1.0
            ax.scatter([x + jitter], [cell["rate"] + jitter], marker=MARKERS.get(kinds.get(cid, "stress"), "o"), s=90 if
                       cid == "none" else 45, facecolors=colour if measured else "none", edgecolors=colour,
                       alpha=0.85, zorder=3)
            if cell["verdict"] != "match":
                ax.scatter([x + jitter], [cell["rate"] + jitter], marker="x", s=20, color="black", zorder=4)
    ax.axvspan(ACCEPT, right, ymin=(ACCEPT + 0.05) / 1.1, ymax=1.0, color="tab:green", alpha=0.10)
    handles += [Line2D([], [], color="grey", marker=m, ls="", label=k) for k, m in MARKERS.items()]
    handles.append(Line2D([], [], color="grey", marker="o", ls="", markerfacecolor="none",
                          label="utility not measured (at 1.0)"))
    handles.append(Line2D([], [], color="black", marker="x", ls="", label=f"no match at α={data['alpha']:g}"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.set_xlim(0.0, right)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(f"normalized utility (★ unstressed: marked vs base; others: stressed vs marked; > {X_MAX} drawn "
                  f"at {X_MAX})")
    ax.set_ylabel("verification rate (1 − ASR)")
    ax.set_title(f"fingerprint schemes under stress suite {data['suite'][:30]}; "
                 f"green: both ≥ {ACCEPT:.0%}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_comparison_html(data: dict[str, Any]) -> str:
    e = html.escape
    cols = data["columns"]
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>modelprint scheme comparison</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
           "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
           ".m{background:#dfd}.x{background:#fdd}.f{background:#eee}th{font-size:11px;max-width:9em}</style>"
           "</head><body>",
           f"<h1>Fingerprint schemes side by side — stress suite {e(data['suite'][:80])}</h1>",
           f"<p>base {e(str(data['model']))} ({e(data['model_hash'][:19])}…), "
           + (f"{data['n']} fingerprints per scheme unless its row says otherwise, " if data.get("queries") is None
              else f"equal key budget of {data['queries']} queries per scheme (keys = ⌊budget / queries per key⌋), ")
           + 
           f"α = {data['alpha']:g}, match {e(data['match'])}, seed {data['seed']}, tasks "
           f"{e(', '.join(f'{k}={v}' for k, v in data['tasks'].items()))}, {data['seconds'] / 60:.1f} min.</p>",
           "<p>" + "<br>".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in data["notes"].items()) + "</p>",
           "<p>Cell: verification rate / normalized utility; green = verify says match, red = no match "
           "(in the control column red is the desired outcome).</p>",
           "<img src='leaderboard.png' alt='leaderboard'>",
           "<table><tr><th>scheme</th>" + "".join(f"<th>{e(c['label'])}</th>" for c in cols)
           + "<th>n</th><th>queries</th><th>minutes</th></tr>"]
    for r in data["rows"]:
        link = f"<a href='{e(r['scheme'])}/report/report.html'>{e(r['scheme'])}</a>" if r["status"] == "ok" \
            else e(r["scheme"])
        total = r.get("seconds", {}).get("total")
        if r["status"] != "ok":
            out.append(f"<tr class='f'><td>{link}</td><td colspan='{len(cols) + 3}' style='text-align:left'>failed: "
                       f"{e(r.get('error', ''))}</td></tr>")
            continue
        cells = []
        for c in cols:
            cell = r["cells"][c["id"]]
            cls = "f" if cell.get("status") != "ok" else ("m" if cell["verdict"] == "match" else "x")
            title = e(cell.get("error", "")) if cell.get("status") != "ok" else \
                f"ASR {_f(cell['asr'])}, log10 p {_f(cell['log10_p'], '{:.1f}')}, {cell['matches']}/{cell['n']}"
            cells.append(f"<td class='{cls}' title='{title}'>{e(format_cell(cell))}</td>")
        minutes = _f(total / 60 if total is not None else None, "{:.1f}")
        out.append(f"<tr><td>{link}<br><small>{e(r['source'][:60])}</small></td>" + "".join(cells)
                   + f"<td>{r['n_fingerprints']}</td><td>{_queries(r)}</td><td>{minutes}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def write_comparison(data: dict[str, Any], out: Path) -> None:
    """comparison.json (standard JSON, no secrets), comparison.html and leaderboard.png, each written atomically."""
    write_json_atomic(out / "comparison.json", json_safe(data))
    tmp = out / ".leaderboard.tmp.png"
    plot_comparison(data, tmp)
    tmp.replace(out / "leaderboard.png")
    write_text_atomic(out / "comparison.html", render_comparison_html(data))

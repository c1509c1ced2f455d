"""report.json, report.html and PNG plots of a stress run (matplotlib, Agg; no secrets anywhere)."""
from __future__ import annotations

import html
import math
import shutil
from pathlib import Path
from typing import Any

from modelprint.io import write_json_atomic

ACCEPT = 0.75  # acceptance region: verification rate and normalized utility both ≥ 75 %


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt.format(x)


def json_safe(obj: Any) -> Any:
    """NaN/inf → None so the JSON is standard."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def leaderboard_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    """(label, utility, rate, verdict, measured) per successful row; unmeasured utility plotted at 1.0."""
    pts = []
    for row in data["rows"]:
        if row.get("status") != "ok":
            continue
        u = (row.get("utility_mean") or {}).get("mean")
        measured = u is not None and not (isinstance(u, float) and math.isnan(u))
        pts.append({"label": row["label"], "kind": row["kind"], "utility": u if measured else 1.0,
                    "rate": row["verification"]["rate"], "verdict": row["verification"]["verdict"],
                    "measured": measured})
    return pts


def plot_leaderboard(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = leaderboard_points(data)
    right = max([1.1] + [p["utility"] + 0.05 for p in pts])
    fig, (ax, side) = plt.subplots(1, 2, figsize=(12, 6.5), gridspec_kw={"width_ratios": [3, 1.4]})
    ax.axvspan(ACCEPT, right, ymin=(ACCEPT + 0.05) / 1.1, ymax=1.0, color="tab:green", alpha=0.12,
               label=f"fingerprint holds (rate ≥ {ACCEPT:.0%}, utility ≥ {ACCEPT:.0%})")
    legend_lines = []
    for i, p in enumerate(pts):
        color = "tab:green" if p["verdict"] == "match" else "tab:red"
        marker = {"attack": "^", "stress": "o", "baseline": "*"}.get(p["kind"], "o")
        ax.scatter([p["utility"]], [p["rate"]], s=110 if p["kind"] == "baseline" else 55, marker=marker,
                   facecolors=color if p["measured"] else "none", edgecolors=color, zorder=3)
        ax.annotate(str(i), (p["utility"], p["rate"]), fontsize=8, xytext=(4, 4 + 7 * (i % 3)),
                    textcoords="offset points")
        legend_lines.append(f"{i:>2}  {p['label'][:46]}  ({p['rate']:.2f}, "
                            f"{'n/a' if not p['measured'] else format(p['utility'], '.2f')})")
    ax.set_xlim(0.0, right)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("normalized utility (mean over measured tasks; hollow = not measured, drawn at 1.0)")
    ax.set_ylabel("per-key verification rate (1 − ASR)")
    suite = data["suite"] if len(data["suite"]) <= 24 else data["suite"][:21] + "…"
    ax.set_title(f"modelprint stress ({suite}): ▲ attack, ● stress, ★ none; green = match at α={data['alpha']:g}",
                 fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=8)
    ax.grid(alpha=0.3)
    side.axis("off")
    side.text(0.0, 1.0, "#  stress / attack  (rate, utility)\n" + "\n".join(legend_lines), va="top",
              family="monospace", fontsize=7, transform=side.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_curves(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per attack family (plug-in name), its rows ordered by strength: one curve per parameter sweep.

    A family is a plug-in run at ≥ 2 settings of ``gate`` (output detection); points are (utility, rate, gate),
    gates descending (weakest attack first). Rows whose utility was not measured are left out.
    """
    curves: dict[str, list[dict[str, Any]]] = {}
    for p, row in zip(leaderboard_points(data), [r for r in data["rows"] if r.get("status") == "ok"]):
        gate = (row.get("params") or {}).get("gate")
        if gate is None or not p["measured"]:
            continue
        curves.setdefault(row["stress"], []).append({**p, "gate": float(gate)})
    return {name: sorted(pts, key=lambda q: -q["gate"]) for name, pts in curves.items() if len(pts) >= 2}


def plot_sweeps(data: dict[str, Any], path: Path) -> bool:
    """Verification against utility, one curve per gate sweep, the leaderboard's bar shaded; False if no sweep."""
    curves = sweep_curves(data)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    ax.axvspan(ACCEPT, 1.1, ymin=(ACCEPT + 0.05) / 1.1, ymax=1.0, color="tab:green", alpha=0.12,
               label=f"fingerprint holds (rate ≥ {ACCEPT:.0%}, utility ≥ {ACCEPT:.0%})")
    for name, pts in curves.items():
        xs, ys = [p["utility"] for p in pts], [p["rate"] for p in pts]
        line, = ax.plot(xs, ys, marker="o", label=name)
        for p in pts:
            ax.annotate(f"{p['gate']:g}", (p["utility"], p["rate"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points", color=line.get_color())
            if p["verdict"] != "match":
                ax.scatter([p["utility"]], [p["rate"]], s=90, facecolors="none", edgecolors="tab:red", zorder=3)
    ax.set_xlim(0.0, 1.1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("normalized utility (mean over measured tasks)")
    ax.set_ylabel("per-key verification rate (1 − ASR)")
    ax.set_title(f"gate sweeps (labels: gate; red ring = verdict lost at α={data['alpha']:g})", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_utility(data: dict[str, Any], path: Path) -> None:
    """Per-task normalized utility with intervals, one group per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["rows"] if r.get("status") == "ok" and r.get("utility")]
    tasks = list(data["tasks"])
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(rows) * max(1, len(tasks)) / 2), 5))
    width = 0.8 / max(1, len(tasks))
    for j, t in enumerate(tasks):
        xs, ys, lo, hi = [], [], [], []
        for i, r in enumerate(rows):
            u = r["utility"].get(t)
            if not u or u["normalized"] is None or (isinstance(u["normalized"], float) and math.isnan(u["normalized"])):
                continue
            xs.append(i + j * width)
            ys.append(u["normalized"])
            lo.append(max(0.0, u["normalized"] - u["normalized_ci"][0]))
            hi.append(max(0.0, u["normalized_ci"][1] - u["normalized"]))
        ax.bar(xs, ys, width, yerr=[lo, hi], label=t, capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["label"] for r in rows], rotation=45, ha="right", fontsize=7)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(ACCEPT, color="tab:green", lw=0.8, ls="--")
    ax.set_ylabel("normalized utility (stressed / unstressed)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_html(data: dict[str, Any]) -> str:
    tasks = list(data["tasks"])
    e = html.escape
    extra = extra_access(data)
    head = ["stress / attack", "kind", "status", "verif. rate", "ASR", "verdict", "log10 p", "utility mean [CI]"]
    head += [f"via {a}" for a in extra]
    head += [f"{t}" for t in tasks] + ["utility scope", "notes", "s"]
    lines = ["<!doctype html><html><head><meta charset='utf-8'><title>modelprint stress report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
             ".failed{background:#fdd}.win{background:#ffe9c4}</style></head><body>",
             f"<h1>modelprint stress report — suite {e(data['suite'][:80])}</h1>",
             f"<p>model {e(str(data['model']))} ({e(data['model_hash'][:19])}…), base {e(str(data['base']))}, "
             f"set {e(data['set_id'][:19])}… ({data['n_fingerprints']} fingerprints), α = {data['alpha']:g}, "
             f"match {e(data['match_mode'])}, access {e(', '.join(data.get('access') or ['weights']))} (the first is "
             f"the headline), {data['seconds']:.0f} s.</p>",
             "<p>Verification rate = share of keys answered with their response (ASR = 1 − rate); verdict and "
             "p-value are verify's exact test over all keys. Normalized utility = stressed score ÷ unstressed "
             f"score per task (perplexity inverted); {e(data['normalized_ci_note'])}. Rows where the attack wins "
             "(verdict no match at utility ≥ 75 %) are highlighted.</p>",
             "<img src='leaderboard.png' alt='leaderboard'><br><img src='utility.png' alt='utility per task'>"
             + ("<br><img src='sweeps.png' alt='gate sweeps'>" if sweep_curves(data) else ""),
             "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for r in data["rows"]:
        if r.get("status") != "ok":
            lines.append(f"<tr class='failed'><td>{e(r['label'])}</td><td>{e(r['kind'])}</td><td>failed</td>"
                         f"<td colspan='{len(head) - 3}' style='text-align:left'>{e(r.get('error', ''))}</td></tr>")
            continue
        v, um = r["verification"], r.get("utility_mean") or {}
        mean = um.get("mean")
        win = v["verdict"] != "match" and mean is not None and not math.isnan(mean) and mean >= ACCEPT
        cells = [r["label"], r["kind"], "ok", _f(v["rate"]), _f(v["asr"]), v["verdict"], _f(v["log10_p"], "{:.1f}"),
                 f"{_f(mean)} [{_f(um.get('ci_low'))}, {_f(um.get('ci_high'))}]"]
        cells += [access_cell((r.get("access") or {}).get(a, {})) for a in extra]
        for t in tasks:
            u = (r.get("utility") or {}).get(t)
            if not u:
                cells.append("n/a")
                continue
            mark = "" if u["source"] == "measured" else " †"
            cells.append(f"{_f(u['normalized'])} [{_f(u['normalized_ci'][0])}, {_f(u['normalized_ci'][1])}]{mark}")
        notes = ", ".join(f"{k}={_f(x, '{:.3g}') if isinstance(x, float) else x}" for k, x in r.get("notes", {}).items())
        cells += [r.get("scope", ""), notes, f"{r.get('seconds', 0):.0f}"]
        lines.append(f"<tr class='{'win' if win else ''}'>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    lines.append("</table><p>† copied from the baseline: a log-likelihood task, unaffected by a decoding-time "
                 "change. Scopes: " + "; ".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in data["scopes"].items())
                 + "</p></body></html>")
    return "\n".join(lines)


def write_report(data: dict[str, Any], out: Path, overwrite: bool = False) -> None:
    """Write the report directory (replacing it when ``overwrite``)."""
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = json_safe(data)
    write_json_atomic(out / "report.json", clean)
    plot_leaderboard(data, out / "leaderboard.png")
    plot_utility(data, out / "utility.png")
    if not plot_sweeps(data, out / "sweeps.png"):
        (out / "sweeps.png").unlink(missing_ok=True)
    (out / "report.html").write_text(render_html(data), encoding="utf-8")


def access_cell(v: dict[str, Any]) -> str:
    """One access mode's result in a cell: ``rate verdict`` (``✓`` match, ``✗`` no match), or why it did not apply."""
    if "rate" not in v:
        return "n/a"
    return f"{_f(v['rate'])} {'✓' if v['verdict'] == 'match' else '✗'}"


def extra_access(data: dict[str, Any]) -> list[str]:
    """Access modes beyond the headline one (the first), which get a column each."""
    return list(data.get("access") or [])[1:]


def format_table(data: dict[str, Any]) -> str:
    """A plain-text summary table for the terminal."""
    extra = extra_access(data)
    lines = [f"{'stress / attack':44} {'rate':>5} {'ASR':>5} {'verdict':>8} {'log10p':>7} {'utility':>7}"
             + "".join(f" {a:>9}" for a in extra)]
    for r in data["rows"]:
        if r.get("status") != "ok":
            lines.append(f"{r['label'][:44]:44} failed: {r.get('error', '')}")
            continue
        v = r["verification"]
        lines.append(f"{r['label'][:44]:44} {_f(v['rate']):>5} {_f(v['asr']):>5} {v['verdict']:>8} "
                     f"{_f(v['log10_p'], '{:.1f}'):>7} {_f((r.get('utility_mean') or {}).get('mean')):>7}"
                     + "".join(f" {access_cell((r.get('access') or {}).get(a, {})):>9}" for a in extra))
    return "\n".join(lines)



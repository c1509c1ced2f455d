"""The adaptive-attack bar, measured as an owner outside sees it: each attack's model behind ``modelprint serve``,
verified through the endpoint in every access mode, next to what the attack costs the host.

    python benchmarks/served_attacks.py --model MARKED_DIR --fingerprints SET.jsonl --out report-dir \
        [--sweep served|paper] [--access text,logprobs,scored,sampling] [--alpha 1e-6] [--tasks perplexity=64,...]
        [--only detect-topk,suppress-topk,...]

Rows (the stress suite ``served``): output detection (detect-topk at gates 0.95 … 0.5, detect-neighbor at 0.9 and
0.5), plain suppression (top-1, neighbours), input filtering, host SFT, and merges with a separately fine-tuned copy
(linear 0.5, TIES); ``--sweep paper`` runs the stress suite's full ``paper`` sweep instead (lookahead and statistical signature too:
hours on 2 CPU cores). Every row is served with the host's edits applied to its text *and* to the
log-probabilities it returns (``scored``, teacher-forced scoring of each candidate through ``echo``, reads the
model's own full distribution: echoed prompt scores are not the host's decoding edits). Printed: per access mode the per-key verification rate and verdict at ``--alpha``,
the normalized utility with its interval, and the rows on the accepting side of the leaderboard's bar
(verification ≥ 75 % and utility ≥ 75 %). The report directory holds report.json/html, the leaderboard and the
gate-sweep plot.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

from modelprint.log import setup_logging  # noqa: E402
from modelprint.stress import stress  # noqa: E402
from modelprint.stress.compare import parse_tasks  # noqa: E402
from modelprint.stress.report import ACCEPT, format_table  # noqa: E402
from modelprint.stress.suites import SUITES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--fingerprints", "-f", required=True)
    ap.add_argument("--base", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sweep", choices=["served", "paper"], default="served")
    ap.add_argument("--access", default="text,logprobs,sampling",
                    help="comma list among text, logprobs (top-20 list, echo off), scored (echo: every candidate "
                         "scored teacher-forced), sampling, weights; the first is the headline")
    ap.add_argument("--alpha", type=float, default=1e-6)
    ap.add_argument("--tasks", default=None, help="utility tasks and sizes, e.g. perplexity=64,piqa=24")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--only", default=None, help="comma list of row labels or stress names to keep, e.g. "
                                                 "'detect-topk,suppress-topk,merge-linear(weight=0.5,partner=finetuned)'")
    args = ap.parse_args()
    setup_logging()  # each row's result is logged as it finishes
    suite = SUITES[args.sweep]
    if args.only:
        keep = {x.strip() for x in args.only.split(",") if x.strip()}
        entries = tuple(e for e in suite.entries if e.label in keep or e.stress in keep)
        if not entries:
            raise SystemExit(f"--only matches no row of the {suite.name} sweep: "
                             f"{', '.join(e.label for e in suite.entries)}")
        suite = dataclasses.replace(suite, name=f"{suite.name}:only", entries=entries)
    access = [a.strip() for a in args.access.split(",") if a.strip()]
    start = time.perf_counter()
    report = stress(args.model, args.fingerprints, base=args.base, suite=suite, out=args.out, alpha=args.alpha,
                    match="auto", tasks=parse_tasks(args.tasks), access=access, overwrite=args.overwrite)
    print(format_table(report.data))
    print(f"\naccess modes: {', '.join(access)} (first = headline columns); α = {args.alpha:g}; "
          f"{time.perf_counter() - start:.0f} s")
    for mode in access:
        won, lost = [], []
        for row in report.rows[1:]:
            cell = (row.get("access") or {}).get(mode) or {}
            util = (row.get("utility_mean") or {}).get("mean")
            if row.get("status") != "ok" or "rate" not in cell or util is None or util != util or util < ACCEPT:
                continue
            (won if cell["verdict"] == "match" else lost).append(f"{row['label']} ({cell['rate']:.2f}, u={util:.2f})")
        rates = [((r.get("access") or {}).get(mode) or {}).get("rate") for r in report.rows[1:]
                 if r.get("status") == "ok"]
        rates = [x for x in rates if x is not None]
        print(f"{mode:>9}: verdict match in {len(won)} of {len(won) + len(lost)} rows with utility ≥ {ACCEPT:.2f}; "
              f"per-key rate min {min(rates, default=float('nan')):.2f}; lost: {', '.join(lost) or 'none'}")


if __name__ == "__main__":
    main()

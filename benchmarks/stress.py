"""ASR–utility curves: sweep one attack's strength parameter on a fingerprinted model (ATTACKS.md metrics).

    python benchmarks/stress.py --model DIR --fingerprints FILE [--sweep detect-topk:gate=0.5,0.7,0.9,0.99]
                                [--tasks nq-open=16,answer-agreement=16] [--out DIR]

Each sweep point is one suite row (verification rate, ASR, verdict, log10 p, normalized utility with CI);
the table is printed and, with --out, the usual report (report.json/html, leaderboard.png) is written.
"""
from __future__ import annotations

import argparse
import time

from modelprint.stress import Entry, SuiteSpec, stress
from modelprint.stress.report import format_table

DEFAULT_SWEEPS = ["detect-topk:gate=0.5,0.7,0.9,0.99", "suppress-topk:k=1,2,4", "prune:sparsity=0.1,0.3,0.5"]


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_sweep(spec: str) -> list[Entry]:
    """``name:param=v1,v2,…`` → one entry per value."""
    name, _, rest = spec.partition(":")
    if not rest:
        return [Entry(name)]
    param, _, values = rest.partition("=")
    return [Entry(name, {param: _value(v)}) for v in values.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--fingerprints", required=True)
    ap.add_argument("--base", default=None)
    ap.add_argument("--sweep", action="append", default=None, help="name:param=v1,v2 (repeatable)")
    ap.add_argument("--tasks", default="nq-open=16,answer-agreement=16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    entries = tuple(e for s in (args.sweep or DEFAULT_SWEEPS) for e in parse_sweep(s))
    tasks = {k: int(v) for k, v in (kv.split("=") for kv in args.tasks.split(","))}
    start = time.perf_counter()
    report = stress(args.model, args.fingerprints, base=args.base, suite=SuiteSpec("sweep", entries, tasks),
                    out=args.out, overwrite=True)
    print(format_table(report.data))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

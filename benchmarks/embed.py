"""Retention and utility cost of the embedding recipe, as a distribution over secrets and seeds.

    python benchmarks/embed.py [--sizes 64] [--variants default,no-benign] [--seeds 5] [--tasks quick]
                               [--model smollm2-135m] [--json rows.jsonl]

Every (size, variant) runs ``--seeds`` times; each run draws a fresh fingerprint set from the operating system's
randomness (as a user's run does) and trains with recipe seed 0, 1, …  With ``--json``, runs already in the file
(same model, size, variant definition and seed) are read back instead of rerun, so a killed benchmark resumes.  One row per run: epochs, seconds, λ (averaged
with the base at the end), retention (as verify asks), perplexity change on WikiText-2, answer agreement with the base
(64 NQ-open questions, first 8 greedy tokens) and, with ``--tasks quick``, the normalized task utility of the stress
suite's quick tasks (MMLU, PIQA, OpenBookQA, … ratio to the base model, with each task's 95 % interval kept in the
JSON).  Then a summary per (size, variant): mean ± sd and the worst run for each figure — one lucky run is not a
result.  Variants are recipe overrides, so any knob can be compared: ``--variant-def name:key=value,key=value``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the shared benchmarks/summary.py, however this file is loaded
    sys.path.insert(0, str(HERE))

from modelprint.config import load_config  # noqa: E402
from modelprint.embed import EmbedConfig, embed  # noqa: E402
from modelprint.embed.expectations import Expectation, FigureSummary, recipe_key, store_expectation  # noqa: E402
from modelprint.evaluation import normalized_utility, run_suite  # noqa: E402
from modelprint.generate import generate  # noqa: E402
from modelprint.models import load_model  # noqa: E402
from summary import FIGURES, header_cells, row_cells, summarize, summary_cells  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "no-benign": ["benign.per_fingerprint=0"],
    "no-augmentation": ["augmentation.copies=0"],
    "no-averaging": ["weight_averaging=0"],
    "averaging-every-epoch": ["weight_averaging=0.5", "averaging=epoch"],
    "benign-ce": ["benign.loss=ce"],
    "lora": ["lora.enabled=true", "learning_rate=1e-3"],
    "mlp-expansion": ["mlp_expansion=256"],
    "plain": ["benign.per_fingerprint=0", "augmentation.copies=0", "freeze_embeddings=false"],
}

def finished_runs(path: str, model: str, tasks: Optional[str]) -> dict[tuple[int, str, int], dict[str, Any]]:
    """Runs already in ``path`` (same size, variant, seed and overrides): a killed benchmark resumes from them."""
    done: dict[tuple[int, str, int], dict[str, Any]] = {}
    if not os.path.exists(path):
        return done
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            if ("seed" not in row or row.get("model") != model
                    or row.get("overrides") != VARIANTS.get(row.get("variant"))):
                continue  # a summary line, or a variant whose definition changed since
            if tasks and row.get("task_utility") is None:
                continue
            done[(row["n"], row["variant"], row["seed"])] = row
    return done


def run_once(base, n: int, overrides: list[str], seed: int, tasks: Optional[str],
             base_tasks: Optional[dict]) -> dict[str, Any]:
    fs = generate(base, num_fingerprints=n)  # a fresh OS secret, like a user's run
    cfg = load_config(EmbedConfig, None, [*overrides, f"seed={seed}"])
    start = time.perf_counter()
    result = embed(base, fs, None, config=cfg)
    seconds = time.perf_counter() - start
    rel = result.utility.get("relative", {})
    row: dict[str, Any] = {"seed": seed, "epochs": result.epochs, "seconds": seconds, "averaged": result.averaged,
                           "retention": result.retention, "perplexity_change": rel.get("perplexity_change"),
                           "answer_agreement": rel.get("answer_agreement"), "utility": result.utility,
                           "history": result.history}
    if tasks:
        scored = run_suite(result.model, tasks, seed=0)
        row["tasks"] = {k: v.to_dict() if hasattr(v, "to_dict") else vars(v) for k, v in scored.items()}
        row["task_utility"] = normalized_utility(scored, base_tasks or {}).get("mean")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--variant-def", action="append", default=[], help="name:key=value,key=value")
    ap.add_argument("--seeds", type=int, default=5, help="runs per (size, variant), each with a fresh secret")
    ap.add_argument("--tasks", choices=["quick", "full"], default=None,
                    help="also measure normalized task utility with this evaluation suite (slow)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", default=None, help="append one JSON line per run and per summary to this file; "
                                                  "runs already in it are read back, not rerun (resume)")
    ap.add_argument("--expectations", default=None,
                    help="store each summary here (src/modelprint/data/embed_expectations.json is what "
                         "`modelprint embed` compares its run with)")
    args = ap.parse_args()
    for item in args.variant_def:
        name, spec = item.split(":", 1)
        VARIANTS[name] = [kv for kv in spec.split(",") if kv]
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown or args.seeds < 1:
        ap.error(f"unknown variant(s) {unknown} (known: {', '.join(VARIANTS)})" if unknown else "--seeds must be ≥ 1")
    done = finished_runs(args.json, args.model, args.tasks) if args.json else {}
    base = load_model(args.model)
    base_tasks = run_suite(base, args.tasks, seed=0) if args.tasks else None
    header = f"{'n':>5} {'variant':<18} {'seed':>4} " + header_cells(FIGURES)
    print(header, flush=True)
    summaries = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for variant in args.variants.split(","):
            rows = []
            for seed in range(args.seeds):
                row = done.get((n, variant, seed))
                if row is None:
                    row = run_once(base, n, VARIANTS[variant], seed, args.tasks, base_tasks)
                rows.append(row)
                print(f"{n:>5} {variant:<18} {seed:>4} " + row_cells(row, FIGURES), flush=True)
                if args.json and (n, variant, seed) not in done:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps({"model": args.model, "n": n, "variant": variant,
                                            "overrides": VARIANTS[variant], **row},
                                            default=str) + "\n")
            summaries.append((n, variant, summarize(rows, FIGURES)))
    print("\nsummary over seeds: mean ± sd (worst run)")
    for n, variant, summary in summaries:
        print(f"{n:>5} {variant:<18} " + summary_cells(summary, FIGURES), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"n": n, "variant": variant, "summary": summary}) + "\n")
        if args.expectations:
            store_expectation(Expectation(
                model=args.model, n=n, variant=variant,
                recipe=recipe_key(load_config(EmbedConfig, None, VARIANTS[variant])),
                figures={name: FigureSummary(**{k: s[k] for k in ("mean", "sd", "worst")}, runs=int(s["runs"]))
                         for name, s in summary.items()},
                command="python benchmarks/embed.py " + " ".join(sys.argv[1:]),
                measured=f"{datetime.date.today()}, {os.cpu_count()} CPU cores"), args.expectations)


if __name__ == "__main__":
    main()

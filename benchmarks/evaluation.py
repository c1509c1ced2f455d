"""Time and score of each quick-suite task on the embedded model (SmolLM2-135M-Instruct by default).

Usage: nice -n 10 .venv/bin/python benchmarks/evaluation.py [--model smollm2-135m] [--suite quick] [--seed 0]
Prints one line per task (plus answer agreement of the model with itself and perplexity-news if its
wheel is cached), so changes to batching or prompts show up as time or score differences.
"""
from __future__ import annotations

import argparse
import logging
import time

from modelprint.evaluation import reference_answers, answer_agreement, run_tasks, suite
from modelprint.errors import ModelprintError
from modelprint.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--suite", default="quick", choices=["quick", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="*", help="subset of the suite's tasks")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a crowded machine)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    t0 = time.perf_counter()
    model = load_model(args.model)
    print(f"model {args.model} loaded in {time.perf_counter() - t0:.1f}s on {model.device}")
    sizes = suite(args.suite)
    if args.suite == "quick":
        sizes["perplexity-news"] = 8
    if args.tasks:
        sizes = {k: v for k, v in sizes.items() if k in args.tasks}
    total = time.perf_counter()
    print(f"{'task':16} {'metric':12} {'n':>4} {'score':>9}  {'95% CI':>19} {'seconds':>8}")
    for name, n in sizes.items():
        try:
            res = run_tasks(model, [name], n=n, seed=args.seed, progress=False)[name]
        except ModelprintError as exc:
            print(f"{name:16} skipped: {exc}")
            continue
        print(f"{name:16} {res.metric:12} {res.n:4d} {res.score:9.4f}  [{res.ci_low:7.4f}, {res.ci_high:8.4f}] "
              f"{res.seconds:8.1f}", flush=True)
    if not args.tasks or "answer-agreement" in args.tasks:
        t = time.perf_counter()
        ref = reference_answers(model, 32, args.seed, progress=False)
        t_ref = time.perf_counter() - t
        res = answer_agreement(model, ref, progress=False)
        print(f"{'answer-agreement':16} {res.metric:12} {res.n:4d} {res.score:9.4f}  [{res.ci_low:7.4f}, "
              f"{res.ci_high:8.4f}] {res.seconds:8.1f}  (self; reference took {t_ref:.1f}s)")
    print(f"total {time.perf_counter() - total:.1f}s")


if __name__ == "__main__":
    main()

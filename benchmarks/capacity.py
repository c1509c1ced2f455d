"""Capacity: what embedding 1,024–4,096 fingerprints costs a larger model, over seeds — ready to run on a GPU.

    python benchmarks/capacity.py --model DIR_OR_NAME [--sizes 1024,2048,4096] [--seeds 3] [--device cuda|cpu]
                                  [--recipe FILE_OR_NAME] [--set key=value ...] [--gen key=value ...]
                                  [--tasks quick] [--json rows.jsonl]

``--model`` is a registered name (``smollm2-135m``, ``gemma3-270m``) or any local Hugging Face directory. For every
(size, seed) the script draws a fresh fingerprint set from the operating system's randomness (as a user's
``modelprint generate`` does), embeds it with the recipe (``--recipe``/``--set``, recipe seed 0, 1, …), and reports:
retention as verify asks it (exact greedy match, and for Perinucleus sets candidate ranking), embed's own utility
figures (perplexity change on WikiText-2, answer agreement with the base), with ``--tasks`` the normalized task
utility, seconds per stage, fingerprints/s of generate, the peak memory, and whether the run ran out of memory
(recorded as an ``oom`` row, and the next run goes on). Then per size: mean ± sd and the worst seed of each figure.

The device: generate and verify run where the base model is loaded (``--device``); embed trains where ``accelerate``
puts it — CUDA whenever CUDA is visible, whatever device the base model is on. So ``--device cpu`` also hides CUDA
from this process (``CUDA_VISIBLE_DEVICES=""``, ``ACCELERATE_USE_CPU=true``; with them the recipe's ``mixed_precision:
auto`` also resolves as on a CPU machine), and every run checks that the fingerprinted model ended up on the device
asked for. One code path: only the device differs.

The JSON rows hold no secret: no key, response, or the set's seed (the ``seed`` column is the recipe's training
seed, which is not secret).
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the shared benchmarks/summary.py, however this file is loaded
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from modelprint.config import load_config  # noqa: E402
from modelprint.embed import EmbedConfig, embed  # noqa: E402
from modelprint.embed.margin import candidate_retention  # noqa: E402
from modelprint.errors import ModelprintError  # noqa: E402
from modelprint.evaluation import normalized_utility, run_suite  # noqa: E402
from modelprint.generate import GenerateConfig, generate  # noqa: E402
from modelprint.models import LoadedModel, is_out_of_memory, load_model  # noqa: E402
from modelprint.verify import retention  # noqa: E402
from modelprint.verify.verifiers import records_candidates  # noqa: E402
from devices import use_device  # noqa: E402
from summary import FIGURES as EMBED_FIGURES, Figures, header_cells, row_cells, summarize, \
    summary_cells  # noqa: E402

FIGURES: Figures = {
    "exact_retention": ("exact", "{:.1%}", True),
    "candidate_retention": ("candidate", "{:.1%}", True),
    **{k: EMBED_FIGURES[k] for k in ("perplexity_change", "answer_agreement", "task_utility", "averaged")},
    "epochs": ("epochs", "{:.0f}", False),
    "generate_fps": ("gen fp/s", "{:.1f}", True),
    "seconds_generate": ("gen s", "{:.0f}", False),
    "seconds_embed": ("embed s", "{:.0f}", False),
    "seconds_verify": ("verify s", "{:.0f}", False),
    "peak_memory_gb": ("peak GB", "{:.2f}", False),
}


def ran_out_of_memory(exc: BaseException) -> bool:
    """``is_out_of_memory`` on the exception or anything it was raised from (embed re-raises an OOM as one line)."""
    seen: set[int] = set()
    node: Optional[BaseException] = exc
    while node is not None and id(node) not in seen:
        if is_out_of_memory(node):
            return True
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    return False


def peak_memory(device: torch.device) -> tuple[float, str]:
    """GB, and what was measured: CUDA's peak allocation since the run began, or the process's peak RSS (monotone:
    on the CPU it includes the earlier runs and the base model)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30, "torch.cuda.max_memory_allocated (this run)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "ru_maxrss (process peak so far)"


def run_once(base: LoadedModel, device: torch.device, n: int, seed: int, args: argparse.Namespace,
             base_tasks: Optional[dict]) -> dict[str, Any]:
    """One (size, seed): generate → embed → verify (→ tasks); an out-of-memory anywhere makes an ``oom`` row."""
    gen_cfg = load_config(GenerateConfig, None, [*args.gen, f"num_fingerprints={n}"])
    cfg = load_config(EmbedConfig, args.recipe, [*args.set, f"seed={seed}"])
    row: dict[str, Any] = {"n": n, "seed": seed, "status": "ok", "device": str(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stage, fs, result = "generate", None, None
    try:
        start = time.perf_counter()
        fs = generate(base, config=gen_cfg)  # seed None: a fresh OS secret, like a user's run
        row["seconds_generate"] = time.perf_counter() - start
        row["generate_fps"] = n / row["seconds_generate"]
        row["strategy"] = fs.strategy

        stage, start = "embed", time.perf_counter()
        result = embed(base, fs, None, config=cfg)
        row["seconds_embed"] = time.perf_counter() - start
        trained_on = result.model.device
        if trained_on.type != device.type:
            raise SystemExit(f"embed trained on {trained_on}, not on --device {device.type} (see the docstring)")
        rel = result.utility.get("relative", {})
        row.update(device=str(trained_on), epochs=result.epochs, averaged=result.averaged,
                   embed_retention=result.retention, perplexity_change=rel.get("perplexity_change"),
                   answer_agreement=rel.get("answer_agreement"), utility=result.utility, history=result.history)

        stage, start = "verify", time.perf_counter()
        fps = list(fs)
        row["exact_retention"] = retention(result.model, fps, fs.system_prompt)[0]
        if records_candidates(fs):  # Perinucleus: the pick outranks its recorded siblings, as --match candidate asks
            row["candidate_retention"] = candidate_retention(result.model, fps, fs.system_prompt)
        row["seconds_verify"] = time.perf_counter() - start

        if args.tasks:
            stage, start = "tasks", time.perf_counter()
            scored = run_suite(result.model, args.tasks, seed=0)
            row["tasks"] = {k: v.to_dict() if hasattr(v, "to_dict") else vars(v) for k, v in scored.items()}
            row["task_utility"] = normalized_utility(scored, base_tasks or {}).get("mean")
            row["seconds_tasks"] = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - only an out-of-memory is a result; anything else propagates
        if not ran_out_of_memory(exc):
            raise
        row.update(status="oom", stage=stage)  # no exception text: it may quote a shape, never a secret, but keep it lean
    row["peak_memory_gb"], row["memory_measure"] = peak_memory(device)
    del fs, result
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="a registered name or a local Hugging Face directory")
    ap.add_argument("--sizes", default="1024,2048,4096", help="fingerprints per set, comma-separated")
    ap.add_argument("--seeds", type=int, default=3, help="runs per size, each with a fresh secret")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    ap.add_argument("--recipe", default=None, help="an embed recipe YAML (or a shipped configs/embed name)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    ap.add_argument("--gen", action="append", default=[], metavar="KEY=VALUE",
                    help="generate option (repeatable), e.g. strategy=random-word; never seed (the secret is the OS's)")
    ap.add_argument("--tasks", choices=["quick", "full"], default=None,
                    help="also measure normalized task utility with this evaluation suite (slow)")
    ap.add_argument("--json", default=None, help="append one JSON line per run and per size summary to this file")
    args = ap.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, not '{args.sizes}'")
    if not args.sizes or min(args.sizes) < 1 or args.seeds < 1:
        ap.error("--sizes and --seeds must be ≥ 1")
    if any(kv.split("=", 1)[0].strip() in ("seed", "num_fingerprints") for kv in args.gen):
        ap.error("--gen cannot set seed (each set's secret comes from the OS) or num_fingerprints (use --sizes)")
    return args


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the per-size summary records (also printed, and appended to --json)."""
    args = parse_args(argv)
    device = use_device(args.device)
    load_config(EmbedConfig, args.recipe, args.set)  # a bad recipe fails now, not after loading the model
    load_config(GenerateConfig, None, args.gen)
    base = load_model(args.model, device=device)
    params = sum(p.numel() for p in base.model.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"model {base.source} ({params / 1e6:.0f} M parameters) on {device.type} ({where}), torch "
          f"{torch.__version__}; recipe {args.recipe or 'default'} {' '.join(args.set)}".rstrip(), flush=True)
    context = {"model": base.source, "parameters": params, "device_name": where, "recipe": args.recipe,
               "overrides": args.set, "generate": args.gen, "torch": torch.__version__}
    base_tasks = run_suite(base, args.tasks, seed=0) if args.tasks else None

    def emit(record: dict[str, Any]) -> None:
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({**context, **record}, default=str) + "\n")

    print(f"{'n':>5} {'seed':>4} {'status':>6} " + header_cells(FIGURES), flush=True)
    summaries = []
    for n in args.sizes:
        rows = []
        for seed in range(args.seeds):
            row = run_once(base, device, n, seed, args, base_tasks)
            rows.append(row)
            print(f"{n:>5} {seed:>4} {row['status']:>6} " + row_cells(row, FIGURES), flush=True)
            emit(row)
        ok = [r for r in rows if r["status"] == "ok"]
        summaries.append({"n": n, "runs": len(rows), "oom": len(rows) - len(ok), "summary": summarize(ok, FIGURES)})
        emit(summaries[-1])
    print("\nsummary over seeds: mean ± sd (worst seed)")
    for s in summaries:
        oom = f" · {s['oom']} of {s['runs']} runs out of memory" if s["oom"] else ""
        print(f"{s['n']:>5} ({s['runs'] - s['oom']} runs) " + summary_cells(s["summary"], FIGURES) + oom, flush=True)
    return summaries


if __name__ == "__main__":
    try:
        main()
    except ModelprintError as exc:  # a bad recipe key, an unloadable model: one line, exit 2, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

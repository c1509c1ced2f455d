"""One step of the default embed recipe (the margin objective), with and without shared prefixes, in one process.

    python benchmarks/embed_step.py [-f fp.jsonl] [--model smollm2-135m] [--repeats 3] [--device cpu]
        [overrides ...]   (embed config overrides, e.g. margin.word_prompts=0)

The default recipe runs up to ``margin.max_steps`` full-batch steps through the top blocks (the bottom is
captured once: ``embed/frozen_bottom.py``); a step's forward and backward over the keys and the anchor prompts
is nearly all of embed's time. This times that step (no optimizer update, so every repeat does the same work)
two ways on the same data and weights, in float32 and (where the hardware multiplies bf16, or with ``--bf16``)
under bf16 autocast, as embed's ``mixed_precision: auto`` chooses:

* ``whole rows``: every row fed in full, left-padded (the fast path as it was);
* ``shared prefix``: a chunk's common beginning (the chat template's system prompt) run once, its keys and
  values shared by the chunk's rows.

``--batch-sizes 16,64`` times the step at each chunk size too (the step is full-batch: the chunk size changes how
the work is cut into matmuls, not the gradient); ``--ways shared`` leaves out the whole-row rows.

It prints, per row: tokens fed through the top blocks per step, seconds per step (median [min–max] of
``--repeats`` after a warm-up) next to CPU seconds, the speed-up over the first row's step, the largest
gradient difference from the first row (they all compute the same thing), and achieved FLOP/s (forward +
backward ≈ 6 × top-block parameters × tokens, the head's share left out) against the fp32 and bf16 matmul peaks measured in this process. Without ``-f`` it
generates a 64-key Perinucleus set first (secret from the OS, not written anywhere).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import peak  # noqa: E402

from modelprint.config import load_config  # noqa: E402
from modelprint.embed import EmbedConfig  # noqa: E402
from modelprint.embed.benign import recipe_anchors  # noqa: E402
from modelprint.embed.expansion import transformer_blocks  # noqa: E402
from modelprint.embed.frozen_bottom import MIN_SHARED, FrozenBottom  # noqa: E402
from modelprint.embed.margin import build_margin_data  # noqa: E402
from modelprint.embed.recipe import margin_chunks, margin_gradients, select_trainable  # noqa: E402
from modelprint.fingerprints import load_fingerprints  # noqa: E402
from modelprint.generate import generate  # noqa: E402
from modelprint.models import load_model, native_bf16  # noqa: E402

NEVER = 10 ** 9  # a shared-prefix threshold no chunk reaches: every row fed whole


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-f", "--fingerprints", type=Path)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="time bf16 autocast too where it is emulated (slow)")
    ap.add_argument("--batch-sizes", default=None, help="comma list of chunk sizes to time (default: the config's)")
    ap.add_argument("--ways", default="whole,shared", help="whole (rows fed whole), shared (shared prefix) or both")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = load_config(EmbedConfig, None, args.overrides)
    if cfg.objective != "margin":
        sys.exit("embed_step.py: times the margin objective's step; this config has objective=" + cfg.objective)
    base = load_model(args.model, device=args.device)
    fs = load_fingerprints(args.fingerprints) if args.fingerprints else generate(base, num_fingerprints=64)
    benign = recipe_anchors(base, cfg, fs)
    data = build_margin_data(base, fs, benign, cfg.margin, cfg.seed)
    model = copy.deepcopy(base.model).float().to(device)
    select_trainable(model, cfg)
    top_params = sum(p.numel() for b in transformer_blocks(model) for p in b.parameters() if p.requires_grad)
    sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [cfg.batch_size]
    ways = {"whole": ("whole rows", NEVER), "shared": ("shared prefix", MIN_SHARED)}
    chosen = [ways[w.strip()] for w in args.ways.split(",")]
    pad = base.tokenizer.pad_token_id
    peaks = peak.peaks(device, native_bf16(device))
    peak.print_peaks(peaks, native_bf16(device))
    print(f"{len(data.key_prompts)} keys + {len(data.prompts)} anchor prompts, chunk sizes {sizes}, "
          f"{top_params / 1e6:.1f} M trained parameters in the top blocks")

    precisions = {"float32": contextlib.nullcontext}
    if native_bf16(device) or args.bf16:
        precisions["bfloat16"] = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    rows = {}
    for size in sizes:
        sized = cfg.model_copy(update={"batch_size": size})
        chunks = [c for _, c in sum(margin_chunks(data, sized), [])]
        for precision, autocast in precisions.items():
            for way, threshold in chosen:
                bottom = FrozenBottom.build(model, chunks, pad, device, min_shared=threshold)
                if bottom is None:
                    sys.exit(f"embed_step.py: the frozen-bottom fast path does not apply to {args.model}")
                fed = sum(c.hidden.shape[0] * c.hidden.shape[1] + c.shared for c in bottom.captured)

                def chunk_logits(index, chunk, count=0, bottom=bottom, autocast=autocast):
                    with autocast():
                        return bottom.last_logits(index, count) if count else bottom.logits(index)

                def step(sized=sized, chunk_logits=chunk_logits):
                    model.zero_grad()
                    margin_gradients(data, sized, chunk_logits, lambda loss: loss.backward(), device)

                model.train()
                times, _, cpu = peak.measure(step, model, device, args.repeats)
                grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]
                key = (size, precision, way)
                rows[key] = times, grads
                first = next(iter(rows))
                achieved = statistics.median(6.0 * top_params * fed / t for t in times)
                baseline = statistics.median(rows[first][0]) / statistics.median(times)
                print(f"chunk {size:3d} {precision:8s} {way:13s}: {fed:6d} tokens/step, {peak.Stat(times).fmt()} "
                      f"s/step (CPU {peak.Stat(cpu).fmt()} s), {baseline:.2f}x the first row's step; "
                      f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peaks['float32'].best:.0f} % of fp32 "
                      f"peak, {100 * achieved / peaks['bfloat16'].best:.0f} % of bf16 peak", flush=True)
    first = next(iter(rows))
    scale = max(float(g.abs().max()) for g in rows[first][1])
    for key, (_, grads) in list(rows.items())[1:]:
        gap = max(float((a - b).abs().max()) for a, b in zip(rows[first][1], grads))
        print(f"chunk {key[0]} {key[1]} {key[2]}: max |Δ gradient| {gap:.2e} from the first row "
              f"(largest entry {scale:.2e})")


if __name__ == "__main__":
    main()

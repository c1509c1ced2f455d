"""Time, retention and utility of the embedding recipe over set sizes and recipe variants.

    python benchmarks/embed.py [--sizes 64,256] [--variants default,no-benign,averaging] [--model smollm2-135m]

Each row: fingerprints, variant, epochs, seconds, λ (averaged with the base at the end), retention (greedy,
as verify asks), perplexity change on WikiText-2 and answer agreement with the base model (64 NQ-open
questions, first 8 greedy tokens).
Variants are recipe overrides, so any knob can be compared: --variant-def name:key=value,key=value
"""
from __future__ import annotations

import argparse
import json
import time

from modelprint.config import load_config
from modelprint.embed import EmbedConfig, embed
from modelprint.generate import generate
from modelprint.models import load_model

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64")
    ap.add_argument("--variants", default="default,no-benign,no-averaging")
    ap.add_argument("--variant-def", action="append", default=[], help="name:key=value,key=value")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--json", default=None, help="append one JSON line per row to this file")
    args = ap.parse_args()
    for item in args.variant_def:
        name, spec = item.split(":", 1)
        VARIANTS[name] = [kv for kv in spec.split(",") if kv]
    base = load_model(args.model)
    print(f"{'n':>5} {'variant':<18} {'epochs':>6} {'sec':>6} {'λ':>4} {'retention':>9} {'ppl Δ':>7} {'agree':>6}")
    for n in [int(s) for s in args.sizes.split(",")]:
        fs = generate(base, num_fingerprints=n, seed=n)
        for variant in args.variants.split(","):
            cfg = load_config(EmbedConfig, None, VARIANTS[variant])
            t = time.perf_counter()
            result = embed(base, fs, None, config=cfg)
            seconds = time.perf_counter() - t
            rel = result.utility.get("relative", {})
            print(f"{n:>5} {variant:<18} {result.epochs:>6} {seconds:>6.0f} {result.averaged:>4.2f} "
                  f"{result.retention:>9.1%} "
                  f"{rel.get('perplexity_change', float('nan')):>+7.1%} {rel.get('answer_agreement', float('nan')):>6.1%}",
                  flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({"n": n, "variant": variant, "overrides": VARIANTS[variant],
                                         "epochs": result.epochs, "seconds": seconds, "averaged": result.averaged,
                                         "retention": result.retention,
                                         "utility": result.utility, "history": result.history}) + "\n")


if __name__ == "__main__":
    main()

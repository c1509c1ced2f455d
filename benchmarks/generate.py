"""Fingerprints per second: batched Perinucleus generation vs one-at-a-time, same process, same model.

    python benchmarks/generate.py [--n 256] [--serial-n 16] [--model smollm2-135m]

Key length 16, response length 1. The one-at-a-time baseline runs on --serial-n
fingerprints (it is slow) and its rate is compared with the batched rate.
Also prints the two stages separately: writing keys, choosing responses.
"""
from __future__ import annotations

import argparse
import time

import torch

from modelprint.generate import generate
from modelprint.generate.keys import model_written_keys
from modelprint.generate.responses import perinucleus
from modelprint.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--serial-n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    lm = load_model(args.model)
    print(f"model {args.model} on {lm.device}, torch threads {torch.get_num_threads()}")

    t = time.perf_counter()
    keys = model_written_keys(lm, args.n, key_length=16, seed=0, batch_size=args.batch_size)
    t_keys = time.perf_counter() - t
    t = time.perf_counter()
    perinucleus(lm, keys, response_length=1, threshold=0.8, k=3, seed=0, batch_size=args.batch_size)
    t_resp = time.perf_counter() - t
    batched = args.n / (t_keys + t_resp)
    print(f"batched   : {args.n} fingerprints in {t_keys + t_resp:.1f} s = {batched:.2f} fp/s "
          f"(keys {args.n / t_keys:.2f}/s, responses {args.n / t_resp:.2f}/s)")

    t = time.perf_counter()
    for i in range(args.serial_n):
        generate(lm, num_fingerprints=1, seed=1000 + i, batch_size=1)
    serial = args.serial_n / (time.perf_counter() - t)
    print(f"one-by-one: {args.serial_n} fingerprints = {serial:.2f} fp/s")
    print(f"speed-up  : {batched / serial:.1f}x   (targets: >= 10 fp/s on 2 CPU cores, >= 5x)")


if __name__ == "__main__":
    main()

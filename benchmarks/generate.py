"""Fingerprints per second, and how far that is from this machine's matmul peak; batched vs one-at-a-time.

    python benchmarks/generate.py [--n 256] [--serial-n 4] [--repeats 3] [--model smollm2-135m] [--device cpu]

Perinucleus, key length 16, response length 1, seed 0 (a benchmark, not a secret). One process, one model:

* the fp32 and bf16 matmul peak of the device (``peak.py``), measured first;
* the model load (once), then a small untimed warm-up generation;
* ``--repeats`` timed runs of each: the two stages (writing keys, choosing responses) and end to end
  (``generate()``, without the load), then one-at-a-time generation of ``--serial-n`` fingerprints (``generate``
  with n = 1, batch 1): median [min–max] rates, and the achieved model FLOP/s as % of the peaks.

The set id of the end-to-end run is printed: the same code on the same machine must print the same id, and a
faster version of the code must too (byte-identical output for the same secret), so runs of two versions of
modelprint back to back (``PYTHONPATH=/other/src``) compare speed and output at once.
"""
from __future__ import annotations

import argparse
import time

import torch

import peak
from modelprint.generate import generate
from modelprint.generate.keys import model_written_keys
from modelprint.generate.responses import perinucleus
from modelprint.models import load_model

try:  # older modelprint (for before/after runs) has no hardware check: it never used bf16 here
    from modelprint.models import native_bf16
except ImportError:  # pragma: no cover
    def native_bf16(device=None) -> bool:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--serial-n", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", default="keys,responses,end-to-end", help="which timings to run (comma-separated)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args()

    t = time.perf_counter()
    lm = load_model(args.model, device=args.device)
    load_s = time.perf_counter() - t
    device = lm.device
    native = native_bf16(device)
    print(f"model {args.model} on {device}, torch threads {torch.get_num_threads()}, load {load_s:.1f} s, "
          f"native bf16: {native}")
    found = peak.peaks(device, native)
    peak.print_peaks(found, native)
    params = peak.parameter_count(lm.model)
    generate(lm, num_fingerprints=4, seed=1, batch_size=args.batch_size)  # warm-up: first calls allocate

    n, bs, r = args.n, args.batch_size, args.repeats
    keys: list[str] = []

    def write_keys() -> None:
        keys[:] = model_written_keys(lm, n, key_length=16, seed=0, batch_size=bs)

    def choose() -> None:
        perinucleus(lm, keys, response_length=1, threshold=0.8, k=3, seed=0, batch_size=bs)

    sets = []
    rows = [("keys", write_keys), ("responses", choose),
            ("end-to-end", lambda: sets.append(generate(lm, num_fingerprints=n, seed=0, batch_size=bs)))]
    wanted = {w.strip() for w in args.rows.split(",")}
    if "responses" in wanted and "keys" not in wanted:
        write_keys()
    medians = {}
    for name, fn in [row for row in rows if row[0] in wanted]:
        times, tokens, cpu = peak.measure(fn, lm.model, device, r, warmup=0)
        medians[name] = peak.rates(n, times).median
        print(f"{name:10s}: {peak.rates(n, times).fmt()} fp/s over {n}, median {peak.Stat(times).median:.1f} s "
              f"wall, {peak.Stat(cpu).median:.1f} s CPU; "
              f"{peak.flops_line(params, tokens, times, found)}")
    if not sets:
        return
    print(f"set id    : {sets[-1].set_id[:27]} (same for every repeat: {len({s.set_id for s in sets}) == 1})")
    batched = medians["end-to-end"]
    if args.serial_n <= 0:
        print(f"with load : {n / (load_s + n / batched):.2f} fp/s for {n} including the {load_s:.1f} s model load")
        return

    def serial() -> None:
        for i in range(args.serial_n):
            generate(lm, num_fingerprints=1, seed=1000 + i, batch_size=1)

    times, tokens, cpu = peak.measure(serial, lm.model, device, r, warmup=0)
    one = peak.rates(args.serial_n, times)
    print(f"one-by-one: {one.fmt()} fp/s over {args.serial_n}, {peak.Stat(cpu).median:.1f} s CPU/run; "
          f"{peak.flops_line(params, tokens, times, found)}")
    print(f"speed-up  : {batched / one.median:.1f}x batched over one-at-a-time (same process, both warm)")
    print(f"with load : {n / (load_s + n / batched):.2f} fp/s for {n} including the {load_s:.1f} s model load")


if __name__ == "__main__":
    main()

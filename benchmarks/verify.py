"""Keys per second for verification, next to this machine's matmul peak: the default path and each match mode.

    python benchmarks/verify.py [--n 256] [--serial-n 32] [--repeats 3] [--modes auto,exact,prefix,candidate]
                                [--model smollm2-135m] [--device cpu] [--http-n 0]

One process, one model. The set is what users verify by default: Perinucleus, response length 1, key length 16,
generated from the model itself (seed 0; a set the model does not carry: the work per key is the same either
way). For each ``--modes`` entry (``auto`` is the default path: candidate ranking with local weights),
``--repeats`` warm runs of ``verify`` (batch ``--batch-size``): median [min–max] keys/s and the achieved model
FLOP/s as % of the fp32 and bf16 matmul peak measured in the same run (``peak.py``). Then the default path one key
at a time (batch 1) on ``--serial-n`` keys, warmed up the same way, for the batched/one-at-a-time ratio.
``--http-n`` > 0 adds verification through ``modelprint serve`` in a thread (keys/s only).
"""
from __future__ import annotations

import argparse
import socket
import time

import torch

import peak
from modelprint.errors import ModelprintError
from modelprint.generate import generate
from modelprint.models import load_model
from modelprint.verify import verify

try:  # older modelprint (for before/after runs) has no hardware check: it never used bf16 here
    from modelprint.models import native_bf16
except ImportError:  # pragma: no cover
    def native_bf16(device=None) -> bool:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--serial-n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="auto,exact,prefix,candidate")
    ap.add_argument("--http-n", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args()
    lm = load_model(args.model, device=args.device)
    device = lm.device
    native = native_bf16(device)
    print(f"model {args.model} on {device}, torch threads {torch.get_num_threads()}, native bf16: {native}")
    found = peak.peaks(device, native)
    peak.print_peaks(found, native)
    params = peak.parameter_count(lm.model)
    t = time.perf_counter()
    fs = generate(lm, strategy="perinucleus", num_fingerprints=args.n, key_length=16, seed=0,
                  batch_size=args.batch_size)
    print(f"set       : {args.n} Perinucleus fingerprints generated in {time.perf_counter() - t:.1f} s")

    default_rate = None
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        records = []

        def run() -> None:
            records.append(verify(lm, fs, match=mode, sequential=False, batch_size=args.batch_size))

        try:
            times, tokens, cpu = peak.measure(run, lm.model, device, args.repeats, warmup=1)
        except ModelprintError as exc:
            print(f"{mode:9s} : n/a ({exc})")
            continue
        stat = peak.rates(args.n, times)
        if mode == "auto":
            default_rate = stat.median
        label = f"{mode}→{records[-1].match_mode}" if mode == "auto" else mode
        print(f"{label:16s}: {stat.fmt(digits=1)} keys/s over {args.n}, "
              f"{peak.Stat(cpu).median:.1f} s CPU/run; "
              f"{peak.flops_line(params, tokens, times, found)}")

    small = fs.subset(range(min(args.serial_n, args.n)))
    times, tokens, cpu = peak.measure(lambda: verify(lm, small, sequential=False, batch_size=1), lm.model, device,
                                 args.repeats, warmup=1)
    one = peak.rates(len(small), times)
    print(f"one-by-one (auto): {one.fmt(digits=1)} keys/s over {len(small)}, "
          f"{peak.Stat(cpu).median:.1f} s CPU/run; "
          f"{peak.flops_line(params, tokens, times, found)}")
    if default_rate is not None:
        print(f"speed-up  : {default_rate / one.median:.1f}x batched over one-at-a-time (same process, both warm)")

    if args.http_n <= 0:
        return
    from modelprint.serve import serve_in_thread
    from modelprint.verify.http import HttpBackend

    url, stop = serve_in_thread(lm, "127.0.0.1", _free_port())
    try:
        backend = HttpBackend(url, concurrency=4)
        sub = fs.subset(range(min(args.http_n, args.n)))
        t = time.perf_counter()
        verify(backend, sub, sequential=False, batch_size=16)
        print(f"http (serve)    : {len(sub) / (time.perf_counter() - t):.1f} keys/s ({len(sub)} keys, 4 concurrent)")
    finally:
        stop()


if __name__ == "__main__":
    main()

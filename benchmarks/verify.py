"""Keys per second for verification: local batched vs one key at a time, and over HTTP (modelprint serve).

    python benchmarks/verify.py [--n 256] [--serial-n 32] [--model smollm2-135m]

Uses a Perinucleus set of response length 1 generated from the model itself
(a set the model does not carry: the work per key is the same either way).
"""
from __future__ import annotations

import argparse
import socket
import time

import torch

from modelprint.fingerprints import FingerprintSet
from modelprint.generate import generate
from modelprint.models import load_model
from modelprint.verify import verify


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--serial-n", type=int, default=32)
    ap.add_argument("--http-n", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    lm = load_model(args.model)
    print(f"model {args.model} on {lm.device}, torch threads {torch.get_num_threads()}")
    fs: FingerprintSet = generate(lm, strategy="random-word", num_fingerprints=args.n, key_length=16)

    t = time.perf_counter()
    verify(lm, fs, sequential=False, batch_size=64)
    batched = args.n / (time.perf_counter() - t)
    print(f"local batched   : {batched:.1f} keys/s ({args.n} keys)")
    small = fs.subset(range(args.serial_n))
    t = time.perf_counter()
    verify(lm, small, sequential=False, batch_size=1)
    serial = args.serial_n / (time.perf_counter() - t)
    print(f"local one-by-one: {serial:.1f} keys/s ({args.serial_n} keys)")
    print(f"speed-up        : {batched / serial:.1f}x   (targets: >= 50 keys/s on 2 CPU cores, >= 5x)")

    try:
        from modelprint.serve import serve_in_thread
        from modelprint.verify.http import HttpBackend
    except ImportError as exc:
        print(f"http            : skipped ({exc})")
        return
    url, stop = serve_in_thread(lm, "127.0.0.1", _free_port())
    try:
        backend = HttpBackend(url, concurrency=4)
        sub = fs.subset(range(args.http_n))
        t = time.perf_counter()
        verify(backend, sub, sequential=False, batch_size=16)
        print(f"http (serve)    : {args.http_n / (time.perf_counter() - t):.1f} keys/s ({args.http_n} keys, 4 concurrent)")
    finally:
        stop()


if __name__ == "__main__":
    main()

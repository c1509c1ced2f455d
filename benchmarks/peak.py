"""What the machine can do, measured in the benchmark's own process: the matmul peak and model FLOP counting.

Shared by ``benchmarks/generate.py`` and ``benchmarks/verify.py`` (run as scripts, they import it as ``peak``).
A rate means little without the limit it runs against: each benchmark measures the fp32 and bf16 matmul peak
of its device in the same process (same threads, same load from neighbours) and prints its achieved model
FLOP/s as a share of it.

Model work is counted as 2 × parameters × tokens fed through the model (every token a forward pass
processes, pads included: they cost the same; a cached prefix is not fed again and not counted). Attention's
own FLOPs are left out (short sequences here); the tied embedding is counted once, as the output head every
fed token passes through — so the figure is an estimate, good to a few percent for these prompt lengths.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Sequence

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (device synchronized)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return times


@dataclasses.dataclass
class Stat:
    """Median and spread (min–max) of repeated measurements."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def best(self) -> float:
        return max(self.values)

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        lo, hi = min(self.values) * scale, max(self.values) * scale
        return f"{self.median * scale:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def rates(work: float, times: Sequence[float]) -> Stat:
    """Per-second rates of ``work`` units over each repeat's time."""
    return Stat([work / t for t in times])


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5, size: int = 0) -> Stat:
    """FLOP/s of a square matmul on ``device`` in ``dtype`` (2·n³ per product), one rate per repeat.

    A peak is the best repeat (:attr:`Stat.best`): neighbours and clock changes only ever slow a repeat down, and
    on a shared 2-core machine the median of five varied by 2× between runs minutes apart.

    Size 1024 on CPU (several ms per product on a few cores, big enough to reach the BLAS kernels' steady
    state), 8192 on CUDA. On a CPU without native bf16 (AVX2 only) torch emulates bf16: its "peak" is then
    far below fp32, which is the point of measuring it.
    """
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = timed(lambda: torch.mm(a, b), device, repeats, warmup=2)
    return rates(2.0 * n ** 3, times)


def peaks(device: torch.device, native_bf16: bool, repeats: int = 10) -> dict[str, Stat]:
    """fp32 and bf16 peaks; emulated bf16 on a CPU is ~50× slower, so it is timed on 256² (seconds, not minutes)."""
    small = 256 if device.type == "cpu" and not native_bf16 else 0
    return {"float32": matmul_peak(device, torch.float32, repeats),
            "bfloat16": matmul_peak(device, torch.bfloat16, repeats, size=small)}


def print_peaks(found: dict[str, Stat], native_bf16: bool) -> None:
    for name, stat in found.items():
        note = "" if name == "float32" else ("  (native)" if native_bf16 else "  (emulated: no bf16 matmul unit)")
        print(f"matmul peak {name:8s}: {stat.best * 1e-9:.1f} GFLOP/s (best of {len(stat.values)}; median "
              f"{stat.fmt(1e-9, 1)}){note}")


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the model, shared (tied) tensors once."""
    return sum(p.numel() for p in model.parameters())


class TokenCounter:
    """Counts tokens fed through ``model``'s forward passes (batch × new positions), via a pre-hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.tokens = 0
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
            self.tokens += int(ids.shape[0] * ids.shape[1]) if ids is not None else 0
        else:
            self.tokens += int(ids.numel())

    def close(self) -> None:
        self._handle.remove()


def measure(fn: Callable[[], object], model: torch.nn.Module, device: torch.device, repeats: int,
            warmup: int = 1) -> tuple[list[float], int, list[float]]:
    """Wall times of ``repeats`` warm calls, the tokens one call feeds through the model, and CPU times.

    CPU seconds (this process, all threads) are printed next to wall seconds: on a machine shared with other
    jobs the wall time says as much about the neighbours as about the code, the CPU time much less.
    """
    counter = TokenCounter(model)
    try:
        for _ in range(warmup):
            fn()
        synchronize(device)
        times, cpu = [], []
        for _ in range(repeats):
            counter.tokens = 0
            t, c = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return times, counter.tokens, cpu
    finally:
        counter.close()


def flops_line(params: int, tokens: int, times: Sequence[float], peak: dict[str, Stat]) -> str:
    """Achieved model FLOP/s (median) and its share of the fp32 and bf16 peaks (each the best repeat)."""
    achieved = statistics.median(2.0 * params * tokens / t for t in times)
    return (f"{tokens} tokens/run, {achieved / 1e9:.1f} GFLOP/s = "
            f"{100 * achieved / peak['float32'].best:.0f} % of fp32 peak, "
            f"{100 * achieved / peak['bfloat16'].best:.0f} % of bf16 peak")

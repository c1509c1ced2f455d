"""Where a benchmark runs: one switch (``--device``) for every stage, shared by capacity.py and embed.py.

generate and verify run where the base model is loaded; embed trains where ``accelerate`` puts it — CUDA whenever
CUDA is visible, whatever device the base model is on. So ``cpu`` also hides CUDA from the process
(``CUDA_VISIBLE_DEVICES=""``, ``ACCELERATE_USE_CPU=true``; with them the recipe's ``mixed_precision: auto`` also
resolves as on a CPU machine). One code path: only the device differs.
"""
from __future__ import annotations

import os
from typing import Optional

import torch


def use_device(name: Optional[str]) -> torch.device:
    """Make every stage run on ``name`` (None: CUDA when available) — see the module docstring for embed's device."""
    if name == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
        if not torch.cuda.is_initialized():  # once CUDA is initialised this no longer hides it; the run check catches it
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name == "cuda":
            raise SystemExit("--device cuda: CUDA is not available on this machine")
        return torch.device("cpu")
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        raise SystemExit("ACCELERATE_USE_CPU is set: embed would train on the CPU; unset it or pass --device cpu")
    return torch.device("cuda")

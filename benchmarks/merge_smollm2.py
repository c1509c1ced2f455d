"""Smoke-benchmark every merge method on the real embedded SmolLM2-135M (CPU-friendly).

Parents: SmolLM2-135M-Instruct and a perturbed copy (Gaussian noise of ``--noise`` times each
tensor's std, a stand-in for a brief fine-tune). Reports each method's wall time, the held-out
loss of parents and merges, and checks the output loads with ``AutoModelForCausalLM``.

    nice -n 10 .venv/bin/python benchmarks/merge_smollm2.py --methods linear ties pleas
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from modelprint.log import setup_logging
from modelprint.merge import merge
from modelprint.merge.calibration import DEFAULT_CALIBRATION
from modelprint.models import LoadedModel, load_model


@torch.no_grad()
def loss_on(model: torch.nn.Module, tok, texts: list[str]) -> float:
    losses = []
    for t in texts:
        ids = tok(t, return_tensors="pt")["input_ids"][:, :256]
        losses.append(float(model(ids, labels=ids).loss))
    return sum(losses) / len(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["linear", "task_arithmetic", "ties", "pleas"])
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--calib-seqs", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args()
    setup_logging(0)
    torch.set_num_threads(1)  # shared 2-core machines: one thread avoids spin contention

    t = time.time()
    base = load_model("smollm2-135m", device="cpu")
    print(f"loaded smollm2-135m in {time.time() - t:.1f} s")
    torch.manual_seed(0)
    other = copy.deepcopy(base.model)
    for p in other.parameters():
        p.data += args.noise * p.data.std() * torch.randn_like(p)
    other.tie_weights()
    perturbed = LoadedModel(other, base.tokenizer, source=f"smollm2-135m+noise({args.noise})")

    held = DEFAULT_CALIBRATION.read_text().splitlines()[-40:]  # calibration uses the first sequences only
    print(f"held-out loss: base {loss_on(base.model, base.tokenizer, held):.4f}, "
          f"perturbed {loss_on(other, base.tokenizer, held):.4f}")
    configs = {
        "linear": {"method": "linear", "models": [base, perturbed]},
        "task_arithmetic": {"method": "task_arithmetic", "base_model": base,
                            "models": [{"model": perturbed, "weight": 0.5}]},
        "ties": {"method": "ties", "base_model": base, "models": [perturbed], "parameters": {"density": 0.2}},
        "pleas": {"method": "pleas", "models": [base, perturbed],
                  "parameters": {"num_sequences": args.calib_seqs, "seq_len": args.seq_len, "batch_size": 4}},
    }
    from transformers import AutoModelForCausalLM

    work = Path(tempfile.mkdtemp(prefix="merge-smollm2-"))
    for name in args.methods:
        t = time.time()
        out = merge({**configs[name], "device": "cpu"}, work / name)
        secs = time.time() - t
        t = time.time()
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        print(f"{name:16s} merge+save {secs:6.1f} s  reload {time.time() - t:4.1f} s  "
              f"held-out loss {loss_on(merged, base.tokenizer, held):.4f}", flush=True)


if __name__ == "__main__":
    main()

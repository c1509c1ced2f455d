"""How far bf16 (autocast) log-probability gaps stray from fp32 ones: the measurement behind verify's re-check bound.

    OMP_NUM_THREADS=1 python benchmarks/bf16_margins.py [--sets FILE ...] [--generate 128] [--greedy-steps 6]

Verification decides by *gaps* between two tokens' log-probabilities: candidate ranking by the gap between the
best and the second-best recorded candidate, greedy decoding by the gap between the top two tokens of each step.
For every key this prints |gap_bf16 − gap_fp32| over (a) every pair of recorded Perinucleus candidates, (b) the
fp32 top-1 against each of the fp32 top 2–5 tokens at each greedy step, on the real code paths
(``next_token_probs`` and ``continue_greedy``, steps compared only while both precisions decoded the same prefix),
and how many keys a bound would send to the fp32 re-check (``modelprint.verify.local.BF16_GAP_BOUND``).
Keys: the given sets plus ``--generate`` fresh Perinucleus and random-word keys (fixed seeds; not secrets of use).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import time

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from modelprint.decoding import batches, continue_greedy, next_token_probs
from modelprint.fingerprints import load_fingerprints
from modelprint.generate import generate
from modelprint.models import load_model
from modelprint.prompts import encode_prompts


class _Record(LogitsProcessor):
    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.detach().float().log_softmax(-1).cpu())
        return scores


def _ctx(bf16: bool, lm):
    return torch.autocast(lm.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _stats(name: str, values: list[float]) -> None:
    a = np.abs(np.asarray(values, dtype=np.float64))
    print(f"{name}: n={a.size} max={a.max():.4f} p99={np.percentile(a, 99):.4f} p90={np.percentile(a, 90):.4f} "
          f"median={np.median(a):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sets", nargs="*", default=[])
    ap.add_argument("--generate", type=int, default=128, help="fresh keys per generated set (0: none)")
    ap.add_argument("--greedy-steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--bounds", default="0.125,0.25,0.5,0.75,1.0")
    args = ap.parse_args()
    lm = load_model(args.model)
    t0 = time.perf_counter()
    sets = [load_fingerprints(p) for p in args.sets]
    if args.generate:
        for seed, strategy in ((1, "perinucleus"), (2, "perinucleus"), (3, "random-word")):
            sets.append(generate(lm, strategy=strategy, num_fingerprints=args.generate, seed=seed,
                                 batch_size=args.batch_size))
    print(f"{sum(len(s) for s in sets)} keys from {len(sets)} sets ({time.perf_counter() - t0:.0f} s)")
    token_deltas: list[float] = []  # per candidate log-prob
    pair_deltas: list[float] = []  # per pair of candidates: gap
    cand_top_gaps: list[float] = []  # bf16 gap between best and second candidate, per key
    greedy_deltas: list[float] = []  # fp32 top-1 vs top 2..5, per greedy step on a shared prefix
    greedy_min_gaps: list[float] = []  # smallest bf16 top-1/top-2 gap over a key's steps (before its end)
    eos = lm.tokenizer.eos_token_id
    for fs in sets:
        keys = [fp.key for fp in fs]
        prompts = encode_prompts(lm.tokenizer, keys, fs.system_prompt)
        for start, chunk in batches(prompts, args.batch_size):
            fps = fs.fingerprints[start:start + len(chunk)]
            lp = {}
            for bf16 in (False, True):
                with _ctx(bf16, lm):
                    lp[bf16] = next_token_probs(lm, chunk).double().log()
            for row, fp in enumerate(fps):
                cands = fp.meta.get("candidates")
                if not cands:
                    continue
                f, b = lp[False][row, cands], lp[True][row, cands]
                token_deltas += (b - f).tolist()
                for i, j in itertools.combinations(range(len(cands)), 2):
                    pair_deltas.append(float((b[i] - b[j]) - (f[i] - f[j])))
                top = torch.sort(b, descending=True).values
                cand_top_gaps.append(float(top[0] - top[1]))
            if args.greedy_steps:
                rec = {}
                for bf16 in (False, True):
                    rec[bf16] = _Record()
                    with _ctx(bf16, lm):
                        continue_greedy(lm, chunk, args.greedy_steps, logits_processor=LogitsProcessorList([rec[bf16]]))
                steps = min(len(rec[False].steps), len(rec[True].steps))
                for row in range(len(chunk)):
                    min_gap = float("inf")
                    for t in range(steps):
                        f, b = rec[False].steps[t][row].double(), rec[True].steps[t][row].double()
                        top_f = torch.topk(f, 5).indices
                        greedy_deltas += [float((b[top_f[0]] - b[k]) - (f[top_f[0]] - f[k])) for k in top_f[1:]]
                        tb = torch.topk(b, 2).values
                        min_gap = min(min_gap, float(tb[0] - tb[1]))
                        if int(f.argmax()) != int(b.argmax()) or int(f.argmax()) == eos:
                            break  # later steps no longer share a prefix (or the answer ended)
                    greedy_min_gaps.append(min_gap)
    print(f"measured in {time.perf_counter() - t0:.0f} s, torch threads {torch.get_num_threads()}")
    _stats("candidate log-prob |Δ|", token_deltas)
    _stats("candidate pair gap |Δ|", pair_deltas)
    if greedy_deltas:
        _stats("greedy top-1 vs top-2..5 gap |Δ|", greedy_deltas)
    for bound in (float(b) for b in args.bounds.split(",")):
        close_c = sum(g < bound for g in cand_top_gaps)
        line = f"bound {bound:g}: candidate re-checks {close_c}/{len(cand_top_gaps)}"
        if greedy_min_gaps:
            line += f", greedy re-checks {sum(g < bound for g in greedy_min_gaps)}/{len(greedy_min_gaps)}"
        print(line)


if __name__ == "__main__":
    main()

"""Where a marked model's answer agreement goes: which ordinary answers change, and how close they were to changing.

Answer agreement (embed's utility check) asks whether the first 8 greedy answer tokens to NQ-open questions are
exactly the base model's. This says why a run loses it, in ~1 min on 2 CPU cores: at which answer position each
disagreeing answer first diverges, how far the base model's top token led its runner-up there (nats), which rank
the marked model's token had under the base, whether it is one of the set's picks (the fingerprint leaking into
ordinary answers), how much the top-two gap moved along the base's own answers, and the scale to read all of
it against: the base model's own agreement when it runs under bf16 autocast (rounding alone).

    python benchmarks/agreement_drift.py --model MARKED_DIR [--fingerprints SET.jsonl] [--questions 128]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Optional, Sequence

import torch

from modelprint.evaluation import answer_agreement, reference_answers, rounding_agreement
from modelprint.fingerprints import load_fingerprints
from modelprint.models import load_model
from modelprint.prompts import encode_prompt


def answer_logits(model: torch.nn.Module, prompt: Sequence[int], answer: Sequence[int]) -> torch.Tensor:
    """Next-token logits before each answer token, teacher-forced: [len(answer), vocab] (float32)."""
    ids = torch.tensor([list(prompt) + list(answer)], device=next(model.parameters()).device)
    return model(ids).logits[0, len(prompt) - 1: len(prompt) - 1 + len(answer)].float()


def top_gap(logits: torch.Tensor, top: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, top[:, None]).squeeze(1) - logits.gather(1, second[:, None]).squeeze(1)


def quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return "–" if not values else f"{values[0]:.2f}"
    q = statistics.quantiles(values, n=4)
    return f"median {q[1]:.2f} [{q[0]:.2f}–{q[2]:.2f}]"


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the marked model (HF directory)")
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--fingerprints", help="its set: counts divergent tokens that are picks")
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=8)
    args = ap.parse_args(argv)

    torch.set_grad_enabled(False)
    base, marked = load_model(args.base), load_model(args.model)
    picks = ({fp.response_ids[0] for fp in load_fingerprints(Path(args.fingerprints)).fingerprints}
             if args.fingerprints else set())
    ref = reference_answers(base, n=args.questions, n_tokens=args.tokens, progress=False)
    prompts = [encode_prompt(base.tokenizer, q) for q in ref.questions]
    details = answer_agreement(marked, ref, progress=False).details  # the marked model's answers, compared

    positions, margins, ranks, leaked, drift_first, drift_later = [], [], [], 0, [], []
    closest = {"agree": [], "differ": []}
    for prompt, want, row in zip(prompts, ref.answers, details):
        answer = row["answer"]
        lb, lm = answer_logits(base.model, prompt, want), answer_logits(marked.model, prompt, want)
        top = lb.argmax(-1)
        second = lb.scatter(1, top[:, None], float("-inf")).argmax(-1)
        gap_base = top_gap(lb, top, second)
        moved = (top_gap(lm, top, second) - gap_base).abs().tolist()
        drift_first.append(moved[0])
        drift_later.extend(moved[1:])
        if row["same"]:
            closest["agree"].append(float(gap_base.min()))
            continue
        closest["differ"].append(float(gap_base.min()))
        k = next((i for i, (a, b) in enumerate(zip(want, answer)) if a != b), min(len(want), len(answer)))
        if k >= len(want) or k >= len(answer):  # one answer ended early (EOS): not a token flip
            continue
        positions.append(k)
        margins.append(float(gap_base[k]))
        ranks.append(int((lb[k] > lb[k, answer[k]]).sum()))
        leaked += answer[k] in picks

    n, agree = len(prompts), len(closest["agree"])
    scale = rounding_agreement(base, ref, progress=False)
    print(f"answer agreement {agree}/{n} = {100 * agree / n:.1f}% ({args.tokens} tokens); "
          f"the base model under bf16 autocast: {100 * scale.score:.1f}%")
    print(f"first divergence at answer position: " + " ".join(f"{i}:{positions.count(i)}" for i in range(args.tokens)))
    print(f"base model's lead of its token over the runner-up there (nats): {quartiles(margins)}")
    print(f"the marked model's token's rank under the base there: "
          + " ".join(f"{r + 1}:{ranks.count(r)}" for r in sorted(set(ranks))))
    if picks:
        print(f"divergent tokens that are one of the set's picks: {leaked}/{len(positions)}")
    print(f"closest call along each answer (smallest base lead, nats): agreeing {quartiles(closest['agree'])}; "
          f"disagreeing {quartiles(closest['differ'])}")
    for t in (0.25, 0.5, 1.0, 2.0):
        print(f"  answers whose closest call is under {t} nats: agreeing {sum(m < t for m in closest['agree'])}, "
              f"disagreeing {sum(m < t for m in closest['differ'])}")
    print(f"|change of the base's top-two gap| along the base's answers (nats): first token "
          f"{quartiles(drift_first)}; later tokens {quartiles(drift_later)}")


if __name__ == "__main__":
    main()

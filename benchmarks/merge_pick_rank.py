"""Where a candidate-verified fingerprint's pick goes when a host merges the model with its own fine-tune.

Through an endpoint, candidate verification sees only the top-20 log-probabilities: a pick that still leads its
siblings but fell out of the top 20 is a miss. This screens a recipe in ~2 min (2 CPU cores) before a served
row costs ~25: per model, how many picks lead their siblings in the full distribution, how many sit in the top
20, and the pick's median rank and probability — for the marked model, the base, the 50/50 linear merge with
the host's SFT copy (the stress suite's ``merge-linear(partner=finetuned)``, rebuilt in process) and that copy.

    python benchmarks/merge_pick_rank.py --model MARKED_DIR --fingerprints SET.jsonl [--weight 0.5] [--endpoint]

``--endpoint`` then serves the merged model (``modelprint serve``, in process) and verifies it through that
endpoint in candidate mode twice: scoring every candidate teacher-forced (``echo``, access ``scored``) and from
the listed top-20 log-probabilities (access ``logprobs``) — the two ways a served merge can be caught.
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch

from modelprint.decoding import batches, next_token_probs
from modelprint.fingerprints import load_fingerprints
from modelprint.models import load_model
from modelprint.prompts import encode_prompts
from modelprint.stress.blueprint import StressContext
from modelprint.stress.stresses.weights import merge_linear
from modelprint.verify import verify

LISTED = 20  # OpenAI-style top_logprobs at most


def pick_ranks(lm, fs) -> str:
    prompts = encode_prompts(lm.tokenizer, [fp.key for fp in fs], fs.system_prompt)
    with torch.inference_mode():
        probs = torch.cat([next_token_probs(lm, chunk) for _, chunk in batches(prompts, 64)])
    ranks, probs_at, leads = [], [], 0
    for row, fp in enumerate(fs):
        p, pick = probs[row], fp.response_ids[0]
        ranks.append(int((p > p[pick]).sum()) + 1)
        probs_at.append(float(p[pick]))
        leads += all(p[pick] > p[int(c)] for c in fp.meta["candidates"] if int(c) != pick)
    n = len(fs)
    return (f"pick leads its siblings {leads}/{n}; in the top {LISTED} {sum(r <= LISTED for r in ranks)}/{n}; "
            f"rank median {statistics.median(ranks):g}; probability median {statistics.median(probs_at):.4f}")


def through_endpoint(lm, fs, alpha: float) -> None:
    """Verify ``lm`` served by ``modelprint serve`` in candidate mode, scored (echo) and from the listed top 20."""
    from modelprint.serve import serve_in_thread
    from modelprint.verify.http import HttpBackend

    url, stop = serve_in_thread(lm)
    try:
        for echo in (True, False):
            backend = HttpBackend(url, concurrency=4, echo=echo, tokenizer=lm.tokenizer)
            rec = verify(backend, fs, match="candidate", alpha=alpha, sequential=False)
            p = f"1e{math.log10(rec.p_value):.1f}" if rec.p_value else "–"
            print(f"  endpoint, access {rec.access.get('mode')}: {rec.matches}/{rec.n_asked} keys, p {p}, "
                  f"{rec.verdict} (α {alpha:g}); requests {backend.requests}", flush=True)
    finally:
        stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--fingerprints", "-f", required=True)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--endpoint", action="store_true", help="also verify the merged model through a served endpoint")
    ap.add_argument("--alpha", type=float, default=1e-6)
    args = ap.parse_args()
    fs = load_fingerprints(Path(args.fingerprints))
    marked, base = load_model(args.model), load_model(args.base)
    ctx = StressContext.from_set(marked, base, fs, seed=0)
    print("marked:", pick_ranks(marked, fs), flush=True)
    print("base:  ", pick_ranks(base, fs), flush=True)
    merged = merge_linear(ctx, args.weight, "finetuned").model
    print(f"merge-linear {args.weight:g} with the host's SFT copy:", pick_ranks(merged, fs), flush=True)
    if args.endpoint:
        through_endpoint(merged, fs, args.alpha)
    print("the host's SFT copy:", pick_ranks(ctx.cache["finetuned-partner"], fs), flush=True)


if __name__ == "__main__":
    main()

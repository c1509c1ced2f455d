"""Asking a local model the keys: batched greedy decoding with the KV cache, keys presented as at embedding.

Precision. ``float32`` runs the model as loaded. ``bfloat16`` runs its forward passes under bf16 autocast (fast
where the hardware multiplies bf16 natively, :func:`modelprint.models.native_bf16`) and re-runs in fp32 every key
whose decision is *close*: every decision is taken from a gap between two tokens' log-probabilities, and a bf16
gap differs from the fp32 gap by less than :data:`BF16_GAP_BOUND` (measured), so a bf16 gap of at least the bound
has the fp32 sign, and every smaller one is decided by fp32 itself. Verdicts equal the fp32 ones.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from modelprint.errors import ConfigError
from modelprint.fingerprints import Fingerprint
from modelprint.decoding import batches, continue_greedy, next_token_probs
from modelprint.matching import ids_match
from modelprint.models import LoadedModel, native_bf16, precision_autocast, quantized
from modelprint.prompts import encode_prompts

PRECISIONS = ("auto", "float32", "bfloat16")

# Largest error allowed for a bf16 (autocast) gap between two tokens' next-token log-probabilities (nats), i.e.
# |gap_bf16 − gap_fp32| < BF16_GAP_BOUND; a decision whose bf16 gap is below it is re-checked in fp32.
# Measured by benchmarks/bf16_margins.py on SmolLM2-135M (CPU autocast, 1 thread) over 352 keys: the 64 of a
# Perinucleus set (.runs/fp-a.jsonl) plus 96 each of two fresh Perinucleus sets and a random-word set (seeds 1-3).
# |Δ gap|, every pair of recorded candidates (n=768): max 0.227, p99 0.145, median 0.04; fp32 top-1 against
# top 2-5 at each of 4-6 greedy steps on a shared prefix (n=5892): max 0.304, p99 0.21, median 0.05.
# The bound is 4x the largest |Δ| seen. Not yet measured on a GPU (CUDA's bf16 kernels accumulate differently):
# the script runs there unchanged (it loads on CUDA when there is one).
MEASURED_GAP_ERROR = 0.305
BF16_GAP_BOUND = 4 * MEASURED_GAP_ERROR
# a best candidate below this probability is always re-checked: fp32 probabilities that small may underflow to 0
# (equal zeros are a tie, i.e. a miss), which no gap in log space can tell in advance
PROB_FLOOR = 1e-30


def check_precision(setting: str) -> None:
    """One clear error for an unknown precision (the CLI calls it before any model loads)."""
    if setting not in PRECISIONS:
        raise ConfigError(f"unknown precision '{setting}' (known: {', '.join(PRECISIONS)})")


def verify_precision(setting: str, lm: LoadedModel) -> str:
    """The precision keys are asked in: ``bfloat16`` when asked for, or ('auto') where the hardware multiplies
    bf16 natively and the weights are fp32 (a model loaded in another dtype runs as it is, a quantized one in
    float32: its int8 kernels take nothing else); else ``float32``."""
    check_precision(setting)
    if setting != "auto":
        return setting
    fp32 = next(lm.model.parameters()).dtype == torch.float32
    return "bfloat16" if fp32 and native_bf16(lm.device) and not quantized(lm.model) else "float32"


@dataclasses.dataclass
class Rechecks:
    """Keys asked in bf16 and how many of them were close enough to be re-run in fp32 (counts only)."""

    keys: int = 0
    rechecked: int = 0


def top_gap(scores: Sequence[float]) -> float:
    """Log-probability gap between the best and the second-best of ``scores`` (probabilities); 0 for a tie, ``-inf``
    when the best is below :data:`PROB_FLOOR` (always close), ``inf`` for fewer than two scores."""
    if len(scores) < 2:
        return math.inf
    first, second = sorted(scores, reverse=True)[:2]
    if first < PROB_FLOOR:
        return -math.inf
    return math.inf if second <= 0.0 else math.log(first) - math.log(second)


class _StepGaps(LogitsProcessor):
    """Records each row's smallest top-1/top-2 score gap over the greedy steps it is still answering (a row that
    has emitted a stop id is finished: what follows is padding). Placed last, it sees the scores argmax takes."""

    def __init__(self, stop_ids: set[int]) -> None:
        self.stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
        self.start: Optional[int] = None
        self.min_gap: Optional[torch.Tensor] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
            self.min_gap = torch.full((input_ids.shape[0],), math.inf)
        top = scores.float().topk(2, dim=-1).values.cpu()
        gap = top[:, 0] - top[:, 1]
        done = torch.isin(input_ids[:, self.start:].cpu(), self.stop).any(dim=1)
        self.min_gap = torch.minimum(self.min_gap, torch.where(done, torch.full_like(gap, math.inf), gap))
        return scores


@torch.inference_mode()
def answer_keys(lm: LoadedModel, keys: Sequence[str], max_new_tokens: int, system_prompt: Optional[str] = None,
                batch_size: int = 64, precision: str = "float32",
                rechecks: Optional[Rechecks] = None) -> list[list[int]]:
    """Greedy answer ids for each key; one forward pass per batch when a single token is needed.

    ``precision="bfloat16"`` returns the fp32 answers too: greedy decoding is a chain of argmax decisions, each
    on the same prefix in both precisions as long as every earlier one agreed. A key whose every step (until
    its answer ends) had a bf16 top-1/top-2 gap ≥ :data:`BF16_GAP_BOUND` took at each step the token fp32 takes
    (the fp32 gap to every other token keeps its sign), so by induction its whole answer is fp32's; every other
    key is decoded again in fp32. ``rechecks`` (if given) counts both.
    """
    answers: list[list[int]] = []
    prompts = encode_prompts(lm.tokenizer, keys, system_prompt)
    for _, chunk in batches(prompts, batch_size):
        if precision == "float32":
            answers += _greedy(lm, chunk, max_new_tokens)[0]
            continue
        with precision_autocast(lm.device, precision):
            got, gaps = _greedy(lm, chunk, max_new_tokens, record=True)
        close = [row for row, gap in enumerate(gaps) if not gap >= BF16_GAP_BOUND]
        if close:
            for row, exact in zip(close, _greedy(lm, [chunk[row] for row in close], max_new_tokens)[0]):
                got[row] = exact
        if rechecks is not None:
            rechecks.keys += len(chunk)
            rechecks.rechecked += len(close)
        answers += got
    return answers


def _greedy(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
            record: bool = False) -> tuple[list[list[int]], list[float]]:
    """Greedy answers of one batch and (``record``) each row's smallest top-1/top-2 gap over its steps."""
    if max_new_tokens == 1:
        probs = next_token_probs(lm, prompts)
        gaps = [top_gap(top) for top in probs.topk(2, dim=-1).values.tolist()] if record else []
        return [[int(t)] for t in probs.argmax(dim=-1)], gaps
    if not record:
        return continue_greedy(lm, prompts, max_new_tokens), []
    steps = _StepGaps({lm.tokenizer.eos_token_id})  # continue_greedy's stop rule for fingerprints
    got = continue_greedy(lm, prompts, max_new_tokens, logits_processor=LogitsProcessorList([steps]))
    gaps = steps.min_gap.tolist() if steps.min_gap is not None else [math.inf] * len(prompts)
    return got, gaps


@torch.inference_mode()
def first_token_probs(lm: LoadedModel, keys: Sequence[str], token_ids: Sequence[Sequence[int]],
                      system_prompt: Optional[str] = None, batch_size: int = 64, precision: str = "float32",
                      rechecks: Optional[Rechecks] = None) -> list[list[float]]:
    """For each key, the model's next-token probabilities of the listed token ids (one forward pass per batch).

    ``precision="bfloat16"``: probabilities from a bf16 pass, except for keys whose two best listed tokens are
    less than :data:`BF16_GAP_BOUND` apart in log-probability (or whose best is below :data:`PROB_FLOOR`): those
    are re-scored in fp32. So which listed token (if any) strictly outscores all the others — what
    :func:`modelprint.matching.candidate_match` decides, ties being misses — is the fp32 answer for every key,
    whichever token is ours. ``rechecks`` (if given) counts the keys and the re-scored ones.
    """
    scores: list[list[float]] = []
    prompts = encode_prompts(lm.tokenizer, keys, system_prompt)
    for start, chunk in batches(prompts, batch_size):
        wanted = [list(token_ids[start + row]) for row in range(len(chunk))]
        with precision_autocast(lm.device, precision):
            probs = next_token_probs(lm, chunk)
        got = [probs[row, wanted[row]].tolist() for row in range(len(chunk))]
        if precision != "float32":
            close = [row for row, s in enumerate(got) if not top_gap(s) >= BF16_GAP_BOUND]
            if close:
                exact = next_token_probs(lm, [chunk[row] for row in close])
                for i, row in enumerate(close):
                    got[row] = exact[i, wanted[row]].tolist()
            if rechecks is not None:
                rechecks.keys += len(chunk)
                rechecks.rechecked += len(close)
        scores += got
    return scores


def is_match(fp: Fingerprint, answer_ids: Sequence[int], mode: str = "exact") -> bool:
    """``exact``: the answer starts with the whole response (token ids); ``prefix``: its first token matches.

    The one definition is :func:`modelprint.matching.ids_match` (its null bound: ``ids-exact`` / ``ids-prefix``).
    """
    return ids_match(fp.response_ids, answer_ids, mode)


def retention(lm: LoadedModel, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str] = None,
              batch_size: int = 64, mode: str = "exact") -> tuple[float, list[bool]]:
    """Share of fingerprints the model answers with their response (what embed checks every epoch)."""
    longest = max(len(fp.response_ids) for fp in fingerprints)
    answers = answer_keys(lm, [fp.key for fp in fingerprints], longest, system_prompt, batch_size)
    hits = [is_match(fp, ans, mode) for fp, ans in zip(fingerprints, answers)]
    return sum(hits) / len(hits), hits

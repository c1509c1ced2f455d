"""RoFL-style intrinsic fingerprints (Tsai, Guo, Yang, van der Maaten, "RoFL: Robust Fingerprinting of
Language Models", 2025).

Nothing is trained: the fingerprints are prompts found on the base model by discrete optimisation
(GCG, :mod:`modelprint.schemes.gcg`) so that greedy decoding answers them with a chosen response;
models derived from the base keep answering them, unrelated models do not. Verification is the
paper's: ask the prompts, count exact matches, decide on the match rate.

Reproduced: GCG optimisation of the prompt for a fixed response, inside the exact rendering verify
uses (chat template around the key), greedy-decoding verification, match-rate decision.
Not reproduced / changed:

* The paper initialises prompts with random + bottom-k-sampled tokens and takes the base model's own
  greedy answer as the response; here the response is 1–2 random words from our seeded randomness
  (``TARGET_WORDS``) and the prompt starts from random words, as the issue brief asks.
* The paper's multi-task optimisation over fine-tuned variants and system prompts (its robustness
  step) is not reproduced; prompts are optimised for the template's default system prompt only,
  so ``--system-prompt`` is refused. Budgets are small (CPU): ``DEFAULT_BUDGET``.
* No p-value. The optimised prompt may contain the target text itself, so an unrelated model that
  copies or completes its input can answer it: the response is not hidden from the suspect, and our
  randomness bounds nothing about a suspect that reads the prompt. The verifier therefore returns
  ``log10_p=None`` and decides "match rate ≥ ``MATCH_RATE_THRESHOLD``" (the paper's criterion is a
  match-rate threshold too). Measure the false-match rate on unrelated models before relying on it.

Prompts that fail the final check (the decoded text, rendered and re-encoded as verify will, must
elicit the target under verify's own greedy decoding) are dropped and counted in the log.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from modelprint.errors import ConfigError, ModelprintError
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.wordlist import random_words, rng_for
from modelprint.models import LoadedModel
from modelprint.prompts import response_ids
from modelprint.schemes.gcg import Budget, Frame, frame, optimise, renders_as
from modelprint.verify import answer_keys, answer_matches
from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest, ask_in_batches

log = logging.getLogger(__name__)

PAPER = "Tsai et al., 'RoFL: Robust Fingerprinting of Language Models' (2025)"
DEFAULT_BUDGET = Budget(top_k=64, candidates=32, max_steps=48)
TARGET_WORDS = (1,)  # words per target, drawn uniformly (seeded); one word keeps CPU budgets small
ATTEMPTS_PER_KEY = 2  # at most this many optimisations per requested fingerprint
MATCH_RATE_THRESHOLD = 0.5
_INIT_TRIES = 32

# keys() optimises prompt and response together; responses() hands back what keys() found.
_FOUND: dict[tuple[int, int, str], Choice] = {}


def init_prompt(tokenizer, fr: Frame, seed: int, attempt: int, length: int) -> list[int]:
    """``length`` tokens of random words whose text (with the frame's tail) renders back to the same ids."""
    for retry in range(_INIT_TRIES):
        text = random_words(seed, 0x5300000 + attempt * _INIT_TRIES + retry, 2 * length)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:length]
        if len(ids) == length and renders_as(tokenizer, ids, fr):
            return ids
    raise ModelprintError("could not build a prompt whose text re-encodes to itself; try another --key-length")


def _target(tokenizer, seed: int, attempt: int) -> tuple[str, list[int]]:
    count = TARGET_WORDS[int(rng_for(seed, 0x52, attempt).integers(len(TARGET_WORDS)))]
    text = random_words(seed, 0x5200000 + attempt, count)
    return text, response_ids(tokenizer, text)


def rofl_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
              keys_file: Optional[str] = None, budget: Budget = DEFAULT_BUDGET,
              target_tokens: Optional[int] = None) -> list[str]:
    """Optimise prompts (``key_length`` tokens) until ``n`` elicit their random target (``ATTEMPTS_PER_KEY·n`` tries).

    ``target_tokens`` cuts each target to its first tokens (tiny test models cannot be steered to whole words).
    """
    if key_length < 2:
        raise ConfigError(f"rofl needs --key-length ≥ 2 prompt tokens, got {key_length}")
    fr = frame(lm.tokenizer)
    found: list[tuple[str, list[int], dict[str, Any]]] = []
    failed = 0
    with tqdm(total=n, desc="optimising prompts", unit="key", leave=False) as bar:
        for attempt in range(ATTEMPTS_PER_KEY * n):
            if len(found) == n:
                break
            target = _target(lm.tokenizer, seed, attempt)[1][:target_tokens]
            init = init_prompt(lm.tokenizer, fr, seed, attempt, key_length)
            result = optimise(lm, target, init, fr, budget, rng_for(seed, 0x47, attempt))
            if not result.elicits:
                failed += 1
                continue
            key = lm.tokenizer.decode(result.prompt_ids)
            found.append((key, target, {"attempt": attempt, "gcg_steps": result.steps,
                                        "gcg_loss": round(result.loss, 4)}))
            bar.update(1)
    # The final check is verify's own path: render, re-encode, greedy-decode.
    answers = answer_keys(lm, [k for k, _, _ in found], max((len(t) for _, t, _ in found), default=1),
                          None, batch_size) if found else []
    kept = [(k, t, m) for (k, t, m), a in zip(found, answers) if list(a[:len(t)]) == t]
    dropped = len(found) - len(kept)
    log.info("rofl: %d prompts elicit their target; %d optimisations did not converge, %d failed the "
             "re-encoding check", len(kept), failed, dropped)
    if not kept:
        raise ModelprintError("no prompt could be optimised to elicit its target; "
                              "raise --key-length or try another --seed")
    if len(kept) < n:
        log.warning("rofl: only %d of the %d requested fingerprints were found", len(kept), n)
    for key, target, meta in kept:
        _FOUND[(id(lm.model), seed, key)] = Choice(target, null_prob=1.0, meta=meta)
    return [k for k, _, _ in kept]


def rofl_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                   seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The targets :func:`rofl_keys` optimised the prompts for (null_prob 1: no bound, see the module doc)."""
    if system_prompt is not None:
        raise ConfigError("rofl prompts are optimised under the template's default system prompt; "
                          "--system-prompt is not supported")
    try:
        return [_FOUND.pop((id(lm.model), seed, key)) for key in keys]
    except KeyError:
        raise ModelprintError("rofl responses exist only for prompts rofl optimised itself (no --keys-file)") from None


def match_rate_outcome(req: VerifyRequest, hit: Callable[[Any, Any], bool], threshold: float, rule: str,
                       ask: Optional[Callable[[list[Any], Optional[str]], list[Any]]] = None) -> Outcome:
    """Ask every planned key; decide on the share of hits (no p-value: intrinsic schemes give no valid bound)."""
    by_index = {fp.index: fp for fp in req.fs}
    matched: list[int] = []

    def score(indices: list[int], answers: list[Any]) -> None:
        matched.extend(i for i, a in zip(indices, answers) if hit(by_index[i], a))

    asked = ask_in_batches(req, score, ask=ask)
    rate = len(matched) / len(asked) if asked else 0.0
    need = math.ceil(threshold * len(asked))
    return Outcome(asked, sorted(matched), None, "match" if asked and len(matched) >= need else "no match",
                   rule, "none (no valid bound)", {"match_rate": rate, "threshold": threshold})


@VERIFIERS.register("rofl-match-rate", source=PAPER)
def match_rate_verifier(req: VerifyRequest) -> Outcome:
    """Exact matches over all planned keys; decision: match rate ≥ MATCH_RATE_THRESHOLD (no p-value)."""
    return match_rate_outcome(req, lambda fp, a: answer_matches(fp, a, req.match), MATCH_RATE_THRESHOLD,
                              f"match rate ≥ {MATCH_RATE_THRESHOLD:g} (RoFL's criterion; no false-positive bound: "
                              "the prompt may contain its response)")


STRATEGIES.register(
    "rofl", source=PAPER, keys=rofl_keys, verifier="rofl-match-rate", trains=False,
    description="no training: prompts optimised on the base model (GCG) to elicit random-word responses; "
    "verified by match rate")(rofl_responses)

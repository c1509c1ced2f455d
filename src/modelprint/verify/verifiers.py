"""Verifiers are plug-ins: how a scheme's answers are scored and turned into a decision.

A fingerprint strategy names its verifier (``Strategy.verifier``; the default, ``match``, is
modelprint's own). ``verify()`` plans which keys to spend and writes the record; the verifier
asks the backend and returns an :class:`Outcome`. A verifier that can bound false positives
returns ``log10_p`` (the decision is then p ≤ α); one that cannot (e.g. schemes whose papers
only report a match rate) returns ``None`` and states its rule in ``rule``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

from tqdm.auto import tqdm

from modelprint.errors import ConfigError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.matching import bound_key, candidate_match
from modelprint.verify.backends import Backend, answer_matches
from modelprint.verify.bounds import null_bounds, set_tokenizer_source
from modelprint.verify.stats import log10_tail, sequential_decision
from modelprint.plugins import Registry

NULL_PROB_FLOOR = 1e-4  # no key is ever credited with a null match chance below this


@dataclasses.dataclass
class VerifyRequest:
    """Everything a verifier may use: the backend, the set, the planned key order and the options."""

    backend: Backend
    fs: FingerprintSet
    planned: list[int]  # key indices in the order to ask them (already limited to the budget)
    alpha: float
    match: str
    batch_size: int
    sequential: bool
    system_prompt: Optional[str]
    budget_limited: bool  # True when --max-queries cut the plan short (for the error hint)


@dataclasses.dataclass
class Outcome:
    """What a verifier found; keys named by index only."""

    asked: list[int]
    matched: list[int]
    log10_p: Optional[float]  # None: this verifier has no false-positive bound
    verdict: str  # "match" | "no match"
    rule: str  # the decision rule in words, e.g. "Poisson-binomial tail ≤ α"
    null_probs: str = ""
    statistic: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra numbers (no secrets)


VerifierFn = Callable[[VerifyRequest], Outcome]
VERIFIERS: Registry[VerifierFn] = Registry("verifier", builtins=("modelprint.schemes",))  # see verify/blueprint.py


def get_verifier(name: str) -> VerifierFn:
    return VERIFIERS.get(name)


def ask_in_batches(req: VerifyRequest, score: Callable[[list[int], list[Any]], None],
                   stop: Callable[[], bool] = lambda: False,
                   ask: Optional[Callable[[list[Fingerprint], Optional[str]], list[Any]]] = None) -> list[int]:
    """Ask the planned keys batch by batch; ``score(indices, answers)`` consumes each batch; ``stop()`` curtails.

    ``ask`` defaults to the backend's greedy answers. Returns the indices asked. The batching, progress
    bar and early stop are shared by every verifier.
    """
    ask = ask or req.backend.answer
    by_index = {fp.index: fp for fp in req.fs}
    asked: list[int] = []
    step = req.batch_size if req.sequential else max(len(req.planned), 1)
    with tqdm(total=len(req.planned), desc="verifying", unit="key", leave=False) as bar:
        for start in range(0, len(req.planned), step):
            chunk = req.planned[start:start + step]
            answers = ask([by_index[i] for i in chunk], req.system_prompt)
            score(chunk, answers)
            asked += chunk
            bar.update(len(chunk))
            if req.sequential and stop():
                break
    return asked


@VERIFIERS.register("match", source="modelprint: exact Poisson-binomial tail of per-key null bounds")
def match_verifier(req: VerifyRequest) -> Outcome:
    """Count keys answered with their response; p-value = exact Poisson-binomial tail of the per-key null bounds."""
    by_index = {fp.index: fp for fp in req.fs}
    space = getattr(req.backend, "space", None)
    hit, ask = _candidate_test(req) if req.match == "candidate" else (
        lambda fp, a: answer_matches(fp, a, req.match, space), None)
    # the bound of the comparison actually made (mode × the backend's space), recomputed from the set
    bounds = null_bounds(req.fs, req.match, space, set_tokenizer_source(req.fs, req.backend))
    p_null = [max(bounds[i], NULL_PROB_FLOOR) for i in req.planned]
    best = log10_tail(p_null, len(p_null))
    if best > math.log10(req.alpha):
        need = "raise --max-queries" if req.budget_limited else "use a larger fingerprint set"
        raise ConfigError(f"{len(req.planned)} keys cannot reach alpha={req.alpha:g} even if every one matches "
                          f"(best p-value 1e{best:.1f}); {need}")
    matched: list[int] = []
    n_asked = 0

    def score(indices: list[int], answers: list[Any]) -> None:
        nonlocal n_asked
        n_asked += len(indices)
        matched.extend(i for i, a in zip(indices, answers) if hit(by_index[i], a))

    def stop() -> bool:
        return sequential_decision(p_null, n_asked, len(matched), req.alpha) is not None

    asked = ask_in_batches(req, score, stop, ask)
    log10_p = log10_tail(p_null, len(matched))
    key = bound_key(space, req.match) if space else f"larger of ids/text {req.match}"
    return Outcome(asked, sorted(matched), log10_p, "match" if log10_p <= math.log10(req.alpha) else "no match",
                   "exact Poisson-binomial tail of the per-key null bounds ≤ α",
                   f"min {min(p_null):.3g}, max {max(p_null):.3g} ({key}; floor {NULL_PROB_FLOOR:g})",
                   {"null_bounds": {i: p for i, p in zip(req.planned, p_null)}})  # per key index: no secrets


def records_candidates(fs: FingerprintSet) -> bool:
    """Whether generation recorded every fingerprint's Perinucleus candidates (what candidate ranking needs)."""
    return all("candidates" in fp.meta for fp in fs)


def _candidate_test(req: VerifyRequest) -> tuple[Callable[[Fingerprint, list[float]], bool], Callable]:
    """``--match candidate``: the suspect puts our response's first token above the other Perinucleus candidates.

    Generation drew the response uniformly among k distinct recorded candidates with our secret randomness,
    so a model not derived from ours ranks it first among them with probability exactly 1/k (ties count as
    misses; the candidate list is checked against the header's k and the response before any key is asked) — the same null bound as an exact match, while a copy whose fingerprint was diluted (merged,
    averaged with another licensee's copy) still ranks it first long after greedy decoding stops saying it.
    Needs the suspect's next-token probabilities, so local weights only.
    """
    if not hasattr(req.backend, "first_token_scores"):
        raise ConfigError("--match candidate needs the suspect's weights (a local model); an endpoint answers "
                          "text only: use --match exact")
    if not records_candidates(req.fs):
        raise ConfigError("this fingerprint set records no Perinucleus candidates (only sets made by the perinucleus "
                          "or custom strategy with modelprint ≥ 0.2 do): use --match exact")

    def ask(fps: list[Fingerprint], system_prompt: Optional[str]) -> list[list[float]]:
        return req.backend.first_token_scores(fps, system_prompt, [fp.meta["candidates"] for fp in fps])

    def hit(fp: Fingerprint, scores: list[float]) -> bool:  # candidates checked by null_bounds beforehand
        return candidate_match(fp.response_ids[0], fp.meta["candidates"], scores)

    return hit, ask

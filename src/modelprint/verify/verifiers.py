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
import secrets
from typing import Any, Callable, Optional

from tqdm.auto import tqdm

from modelprint.errors import ConfigError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.matching import bound_key, candidate_match, sample_counts, sample_match, text_candidate_scores
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
    budget_limited: bool  # True when --max-queries (or the request budget) cut the plan short (for the error hint)


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
    extra: dict[str, Any] = {}
    if req.match == "candidate":
        hit, ask = _candidate_test(req)
    elif req.match == "sample":
        hit, ask = _sample_test(req, extra)
    else:
        fit_budget(req, 1, "text answers")  # an endpoint's budget: one request per key (local backends have none)
        hit, ask = (lambda fp, a: answer_matches(fp, a, req.match, space)), None
    # the bound of the comparison actually made (mode × the backend's space), recomputed from the set
    bounds = null_bounds(req.fs, req.match, space, set_tokenizer_source(req.fs, req.backend))
    p_null = [max(bounds[i], NULL_PROB_FLOOR) for i in req.planned]
    best = log10_tail(p_null, len(p_null))
    if best > math.log10(req.alpha):
        need = "raise --max-queries / --max-requests" if req.budget_limited else "use a larger fingerprint set"
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
                   {"null_bounds": {i: p for i, p in zip(req.planned, p_null)}, **extra})  # per key index: no secrets


def records_candidates(fs: FingerprintSet) -> bool:
    """Whether generation recorded every fingerprint's Perinucleus candidates (what candidate ranking needs)."""
    return all("candidates" in fp.meta for fp in fs)


def _candidate_test(req: VerifyRequest) -> tuple[Callable[[Fingerprint, Any], bool], Callable]:
    """``--match candidate``: the suspect puts our response's first token above the other Perinucleus candidates.

    Generation drew the response uniformly among k distinct recorded candidates with our secret randomness,
    so a model not derived from ours ranks it first among them with probability exactly 1/k (ties count as
    misses; the candidate list is checked against the header's k and the response before any key is asked) — the
    same null bound as an exact match, while a copy whose fingerprint was diluted (merged, averaged with another
    licensee's copy) still ranks it first long after greedy decoding stops saying it.

    Local weights rank the candidates' token ids by probability. An endpoint that scores prompts teacher-forced
    (``echo``: :meth:`~modelprint.verify.http.HttpBackend.candidate_scores`) ranks the same ids by their
    log-probabilities after the same prompt ids — the same ranking, decided by the same rule
    (:func:`~modelprint.matching.candidate_match`), since log is monotone. Otherwise an endpoint that returns
    logprobs ranks them by the token *texts* in its ``top_logprobs`` list (:func:`~modelprint.matching.text_candidate_scores`: the
    server's tokenizer may differ from ours; a candidate not listed ranks below every listed one; our pick not
    listed, or tied, is a miss). Each score is a function of the suspect's answer and that candidate's public
    text only, so at most one candidate is the strict winner and the bound stays 1/k, collisions included.
    Both endpoint paths cut the plan to what the request budget affords before any key is asked
    (:func:`fit_budget`), so the p-value is over exactly the keys asked.
    """
    if not records_candidates(req.fs):
        raise ConfigError("this fingerprint set records no Perinucleus candidates (only sets made by the perinucleus "
                          "or custom strategy with modelprint ≥ 0.2 do): use --match exact")
    def hit(fp: Fingerprint, scores: list[float]) -> bool:  # candidates checked by null_bounds beforehand
        return candidate_match(fp.response_ids[0], fp.meta["candidates"], scores)

    if hasattr(req.backend, "first_token_scores"):
        def ask(fps: list[Fingerprint], system_prompt: Optional[str]) -> list[list[float]]:
            return req.backend.first_token_scores(fps, system_prompt, [fp.meta["candidates"] for fp in fps])

        return hit, ask
    if scores_candidates(req.backend):  # one request per key (a list of k prompts) or k: planned within the budget
        k = max(len(fp.meta["candidates"]) for fp in req.fs)
        fit_budget(req, req.backend.score_requests_per_key(k), "scoring")
        return hit, req.backend.candidate_scores
    if not hasattr(req.backend, "first_token_logprobs"):
        raise ConfigError("--match candidate needs the suspect's next-token probabilities: local weights, or an "
                          "endpoint that returns logprobs; use --match exact")
    texts = candidate_texts(req)
    if req.backend.logprob_support() > 0:  # probed before any key is asked (none: one line when keys are asked)
        fit_budget(req, 1, "logprobs")  # one request per key, after the probes already spent

    def text_hit(fp: Fingerprint, entries: list[tuple[str, float]]) -> bool:
        ours = fp.meta["candidates"].index(fp.response_ids[0])
        scores = text_candidate_scores(texts[fp.index], entries)
        return candidate_match(ours, range(len(scores)), scores)

    return text_hit, req.backend.first_token_logprobs


def scores_candidates(backend: Backend) -> bool:
    """Whether an endpoint scores our candidate ids teacher-forced (echo; probed once, non-secret prompt)."""
    probe = getattr(backend, "echo_support", None)
    return probe is not None and bool(probe())


def fit_budget(req: VerifyRequest, per_key: int, what: str) -> None:
    """Cut the plan to the keys the endpoint's request budget affords at ``per_key`` requests each, before any key
    is asked; none affordable is one clear error."""
    backend = req.backend
    budget = getattr(backend, "max_requests", None)
    if budget is None:
        return
    affordable = max(0, budget - backend.requests) // max(per_key, 1)
    if affordable < len(req.planned):
        req.planned = req.planned[:affordable]
        req.budget_limited = True
    if not req.planned:
        raise ConfigError(f"the request budget ({budget}) affords no key at {per_key} request(s) per key for "
                          f"{what}: raise --max-requests" + (" or lower --samples" if what == "sampling" else ""))


def candidate_texts(req: VerifyRequest) -> dict[int, list[str]]:
    """Each planned key's candidate texts: recorded (checked against the set's tokenizer by null_bounds when it is
    at hand), or decoded with the set's tokenizer for sets made before texts were recorded."""
    tokenizer = set_tokenizer_source(req.fs, req.backend)
    out = {}
    for fp in req.fs:
        texts = fp.meta.get("candidate_texts")
        if texts is None:
            tok = tokenizer(True)
            if tok is None:
                raise ConfigError("this set records no candidate texts and its tokenizer is not available here, so "
                                  "its candidates cannot be found in an endpoint's answers: verify with local weights")
            texts = [tok.decode([c]) for c in fp.meta["candidates"]]
        out[fp.index] = list(texts)
    return out


def _sample_test(req: VerifyRequest, extra: dict[str, Any]) -> tuple[Callable[[Fingerprint, Any], bool], Callable]:
    """``--match sample``: for endpoints without logprobs, ``samples`` answers per key at the host's temperature.

    A key is a hit when our pick is sampled strictly more often than every other candidate, ties at the maximum
    broken by a coin from our OS randomness (:func:`~modelprint.matching.sample_match` proves the exact 1/k
    null bound). The plan is cut to the keys the request budget affords, before any key is asked.
    """
    if not records_candidates(req.fs):
        raise ConfigError("this fingerprint set records no Perinucleus candidates, which sampling counts: "
                          "use --match exact")
    backend = req.backend
    if not hasattr(backend, "sample_answers"):
        raise ConfigError("--match sample asks an endpoint for sampled answers; with local weights use "
                          "--match candidate")
    if backend.samples < 1:
        raise ConfigError("--match sample needs --samples ≥ 1")
    texts = candidate_texts(req)
    fit_budget(req, backend.requests_per_key(), "sampling")
    extra["tie_breaks"] = 0  # keys decided by our coin (counted, not named)

    def hit(fp: Fingerprint, samples: list[str]) -> bool:
        counts = sample_counts(texts[fp.index], samples)
        top = max(counts)
        if top > 0 and counts.count(top) > 1:
            extra["tie_breaks"] += 1
        return sample_match(fp.meta["candidates"].index(fp.response_ids[0]), counts, secrets.randbelow)

    return hit, backend.sample_answers

"""verify(): sample keys, ask the suspect in batches, stop when the verdict is certain, record it."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from modelprint.config import VERIFY_DEFAULTS
from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.fingerprints import FingerprintSet, check_distinct, load_fingerprints
from modelprint.models import LoadedModel, load_model
from modelprint.verify.backends import Backend, LocalBackend
from modelprint.verify.verifiers import VerifyRequest, get_verifier, records_candidates, scores_candidates

log = logging.getLogger(__name__)

MATCH_MODES = ("auto", "exact", "prefix", "candidate", "sample")


@dataclasses.dataclass
class VerifyRecord:
    """The decision and what it rests on; names keys by index only (no secrets)."""

    verdict: str
    set_id: str
    target: str
    backend: str
    n_planned: int
    n_asked: int
    matches: int
    p_value: Optional[float]  # None when the scheme's verifier has no false-positive bound
    log10_p_value: Optional[float]
    alpha: float
    match_mode: str
    keys_spent: list[int]
    matched: list[int]
    stopped_early: bool
    null_probs: str
    created_at: str
    verifier: str = "match"
    decision_rule: str = ""
    statistic: dict[str, Any] = dataclasses.field(default_factory=dict)
    # several sets in one verification (verify_sets): Holm-adjusted p, decided at ≤ alpha, over family_size sets
    log10_adjusted_p_value: Optional[float] = None
    family_size: int = 1
    registry_set: Optional[str] = None  # the registry name the set came from (its run is in the ledger)
    registry_verifications: Optional[int] = None  # runs of this set against this target in the ledger, this one too
    # how the suspect was accessed: weights | scored | logprobs | sampling | text, and what this verification spent
    # (endpoint requests and samples, the probed logprobs / n support); no secrets
    access: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "match" else 1


def as_fingerprint_set(source: Union[str, Path, FingerprintSet]) -> FingerprintSet:
    """A set from a file path (or passed through); registry names are resolved by the CLI."""
    return source if isinstance(source, FingerprintSet) else load_fingerprints(Path(source))


def plan_keys(fs: FingerprintSet, max_queries: Optional[int], seed: int,
              prefer: Optional[Sequence[int]] = None) -> list[int]:
    """A seeded random order of key indices, limited to the query budget.

    ``prefer`` (e.g. the registry's least-spent-first order) is asked first, in its own order.
    """
    order = [fs.fingerprints[int(i)].index for i in np.random.default_rng([seed, 0x5E7]).permutation(len(fs))]
    if prefer is not None:
        valid = set(order)
        first = list(dict.fromkeys(int(i) for i in prefer if int(i) in valid))
        order = first + [i for i in order if i not in set(first)]
    return order[:max_queries] if max_queries else order


def resolve_match(match: str, backend: Backend, fs: FingerprintSet, n_keys: Optional[int] = None) -> str:
    """``auto``: the most powerful valid test the backend allows, for a set that records its Perinucleus
    candidates — ``candidate`` with local weights or an endpoint that scores prompts teacher-forced (echo,
    preferred) or returns logprobs (each probed once with a non-secret prompt), else ``sample`` when the request budget lets sampling ask as many keys as text would,
    else ``exact``. Chosen before any key is asked, from public facts only, so the choice cannot favour a verdict.
    """
    if match != "auto":
        return match
    if not records_candidates(fs):
        return "exact"
    if hasattr(backend, "first_token_scores") or scores_candidates(backend):
        return "candidate"
    if hasattr(backend, "logprob_support") and backend.logprob_support() > 0:
        return "candidate"
    if getattr(backend, "samples", 0) >= 1 and hasattr(backend, "requests_per_key"):
        budget = backend.max_requests
        if budget is None:
            return "sample"
        left = budget - backend.requests
        keys = min(n_keys if n_keys is not None else len(fs), left)
        if keys >= 1 and left // backend.requests_per_key() >= keys:
            return "sample"
    return "exact"


def access_mode(match: str, backend: Backend) -> str:
    """How the suspect was read: its weights, an endpoint's teacher-forced scores of our candidates (``scored``)
    or its top logprobs, its samples, or its greedy text."""
    if getattr(backend, "space", "ids") == "ids":
        return "weights"
    if match == "candidate" and scores_candidates(backend):  # probed by the verifier already: no new request
        return "scored"
    return {"candidate": "logprobs", "sample": "sampling"}.get(match, "text")


def verifier_for(fs: FingerprintSet) -> str:
    """The verifier the set's header names (older sets: derived from their strategy, see ``LEGACY_VERIFIERS``)."""
    return fs.verifier_name


def check_options(alpha: float, match: str, max_queries: Optional[int], batch_size: int) -> None:
    """Refuse bad options before any set is read or any key asked."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if match not in MATCH_MODES:
        raise ConfigError(f"unknown match mode '{match}' (known: {', '.join(MATCH_MODES)})")
    if max_queries is not None and max_queries < 1:
        raise ConfigError(f"max_queries must be ≥ 1, got {max_queries}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be ≥ 1, got {batch_size}")


def verify(target: Union[str, Path, LoadedModel, Backend], fingerprints: Union[str, Path, FingerprintSet], *,
           max_queries: Optional[int] = None, alpha: float = VERIFY_DEFAULTS.alpha,
           match: str = VERIFY_DEFAULTS.match, seed: int = 0, batch_size: int = VERIFY_DEFAULTS.batch_size,
           sequential: bool = True, system_prompt: Optional[str] = "__set__",
           prefer: Optional[Sequence[int]] = None, check_tokenizer: bool = True,
           precision: str = VERIFY_DEFAULTS.precision) -> VerifyRecord:
    """Decide whether ``target`` carries ``fingerprints``; p-value is the exact Poisson-binomial tail.

    ``precision`` applies when ``target`` is loaded here (a backend keeps its own): see :class:`LocalBackend`.
    """
    check_options(alpha, match, max_queries, batch_size)
    fs = as_fingerprint_set(fingerprints)
    check_distinct(fs.fingerprints, f"fingerprint set {fs.set_id[:19]}")  # a repeated key must not count twice
    if fs.legacy:
        log.warning("set %s is a version-1 file: its id covers keys and responses only, not the recorded bounds "
                    "(regenerated sets are version 2)", fs.set_id[:19])
    backend = (target if hasattr(target, "answer")
               else LocalBackend(load_model(target), batch_size=batch_size, precision=precision))
    prepare = getattr(backend, "prepare", None)
    if prepare is not None:  # e.g. an endpoint's completions API needs the set's chat template
        prepare(fs)
    lm = getattr(backend, "lm", None)
    if check_tokenizer and lm is not None and lm.tokenizer_hash != fs.tokenizer_hash:
        raise FingerprintFileError("these fingerprints were made for another tokenizer: the suspect cannot be asked "
                                   "them token for token (use a remote endpoint or --match prefix on text)")
    sp = fs.system_prompt if system_prompt == "__set__" else system_prompt
    planned = plan_keys(fs, max_queries, seed, prefer)
    usage = getattr(backend, "usage", None)
    spent_before = usage() if usage is not None else {}
    rechecks = getattr(backend, "rechecks", None)
    rechecked_before = rechecks.rechecked if rechecks is not None else 0
    match = resolve_match(match, backend, fs, len(planned))
    verifier_name = verifier_for(fs)
    request = VerifyRequest(backend, fs, planned, alpha, match, batch_size, sequential, sp,
                            budget_limited=bool(max_queries and max_queries < len(fs)))
    outcome = get_verifier(verifier_name)(request)
    planned = request.planned  # a verifier may cut the plan to what the request budget affords
    log10_p = outcome.log10_p
    access: dict[str, Any] = {"mode": access_mode(match, backend)}
    if usage is not None:  # what this verification spent (the backend's counters run across sets)
        spent = usage()
        access.update(spent, requests=spent["requests"] - spent_before.get("requests", 0),
                      samples=spent["samples"] - spent_before.get("samples", 0))
    if getattr(backend, "precision", None) is not None:  # local weights: the precision asked in, keys re-run in fp32
        access["precision"] = backend.precision
        if rechecks is not None and backend.precision != "float32":
            access["fp32_rechecks"] = rechecks.rechecked - rechecked_before
    record = VerifyRecord(
        verdict=outcome.verdict, set_id=fs.set_id, target=backend.description, backend=backend.name,
        n_planned=len(planned), n_asked=len(outcome.asked), matches=len(outcome.matched),
        p_value=None if log10_p is None else 10 ** log10_p, log10_p_value=log10_p, alpha=alpha, match_mode=match,
        keys_spent=outcome.asked, matched=outcome.matched, stopped_early=len(outcome.asked) < len(planned),
        null_probs=outcome.null_probs, verifier=verifier_name, decision_rule=outcome.rule,
        statistic=outcome.statistic, log10_adjusted_p_value=log10_p, access=access,
        created_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    log.info("verify %s (%s): %d/%d matched → %s", fs.set_id[:19], verifier_name, record.matches, record.n_asked,
             record.verdict)
    return record

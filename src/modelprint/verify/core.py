"""verify(): sample keys, ask the suspect in batches, stop when the verdict is certain, record it."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.fingerprints import FingerprintSet, load_fingerprints
from modelprint.models import LoadedModel, load_model
from modelprint.verify.backends import Backend, LocalBackend, answer_matches
from modelprint.verify.stats import log10_tail, sequential_decision

log = logging.getLogger(__name__)

MATCH_MODES = ("exact", "prefix")
NULL_PROB_FLOOR = 1e-4  # no key is ever credited with a null match chance below this


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
    p_value: float
    log10_p_value: float
    alpha: float
    match_mode: str
    keys_spent: list[int]
    matched: list[int]
    stopped_early: bool
    null_probs: str
    created_at: str

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


def verify(target: Union[str, Path, LoadedModel, Backend], fingerprints: Union[str, Path, FingerprintSet], *,
           max_queries: Optional[int] = None, alpha: float = 1e-6, match: str = "exact", seed: int = 0,
           batch_size: int = 64, sequential: bool = True, system_prompt: Optional[str] = "__set__",
           prefer: Optional[Sequence[int]] = None, check_tokenizer: bool = True) -> VerifyRecord:
    """Decide whether ``target`` carries ``fingerprints``; p-value is the exact Poisson-binomial tail."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if match not in MATCH_MODES:
        raise ConfigError(f"unknown match mode '{match}' (known: {', '.join(MATCH_MODES)})")
    if max_queries is not None and max_queries < 1:
        raise ConfigError(f"max_queries must be ≥ 1, got {max_queries}")
    fs = as_fingerprint_set(fingerprints)
    backend = target if hasattr(target, "answer") else LocalBackend(load_model(target), batch_size=batch_size)
    lm = getattr(backend, "lm", None)
    if check_tokenizer and lm is not None and lm.tokenizer_hash != fs.tokenizer_hash:
        raise FingerprintFileError("these fingerprints were made for another tokenizer: the suspect cannot be asked "
                                   "them token for token (use a remote endpoint or --match prefix on text)")
    sp = fs.system_prompt if system_prompt == "__set__" else system_prompt
    by_index = {fp.index: fp for fp in fs}
    planned = plan_keys(fs, max_queries, seed, prefer)
    p_null = [max(by_index[i].null_prob, NULL_PROB_FLOOR) for i in planned]
    if log10_tail(p_null, len(p_null)) > math.log10(alpha):
        need = "raise --max-queries" if max_queries and max_queries < len(fs) else "use a larger fingerprint set"
        raise ConfigError(f"{len(planned)} keys cannot reach alpha={alpha:g} even if every one matches "
                          f"(best p-value 1e{log10_tail(p_null, len(p_null)):.1f}); {need}")
    asked: list[int] = []
    matched: list[int] = []
    verdict: Optional[str] = None
    step = batch_size if sequential else len(planned)
    with tqdm(total=len(planned), desc="verifying", unit="key", leave=False) as bar:
        for start in range(0, len(planned), step):
            chunk = planned[start:start + step]
            answers = backend.answer([by_index[i] for i in chunk], sp)
            for i, ans in zip(chunk, answers):
                asked.append(i)
                if answer_matches(by_index[i], ans, match):
                    matched.append(i)
            bar.update(len(chunk))
            if sequential:
                verdict = sequential_decision(p_null, len(asked), len(matched), alpha)
                if verdict:
                    break
    log10_p = log10_tail(p_null, len(matched))
    final = "match" if log10_p <= math.log10(alpha) else "no match"
    if verdict and verdict != final:  # cannot happen: curtailment is exact; guard against regressions
        raise AssertionError("sequential decision disagrees with the final test")
    record = VerifyRecord(
        verdict=final, set_id=fs.set_id, target=backend.description, backend=backend.name,
        n_planned=len(planned), n_asked=len(asked), matches=len(matched), p_value=10 ** log10_p,
        log10_p_value=log10_p, alpha=alpha, match_mode=match, keys_spent=asked, matched=sorted(matched),
        stopped_early=len(asked) < len(planned),
        null_probs=f"min {min(p_null):.3g}, max {max(p_null):.3g} (floor {NULL_PROB_FLOOR:g})",
        created_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    log.info("verify %s: %d/%d matched, p = %.3g → %s", fs.set_id[:19], len(matched), len(asked), record.p_value,
             final)
    return record

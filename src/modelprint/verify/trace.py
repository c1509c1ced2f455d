"""Leak tracing: which licensee's fingerprint set does a suspect carry?

Each licensee's set is tested like ``verify`` does; the p-values are adjusted
for testing several sets at once (Holm–Bonferroni, valid under any dependence),
and every licensee whose adjusted p-value is ≤ α is named — two, when two
copies were merged or averaged and both sets still match.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Union

from modelprint.config import VERIFY_DEFAULTS
from modelprint.errors import ConfigError
from modelprint.fingerprints import FingerprintSet
from modelprint.models import LoadedModel, load_model
from modelprint.verify.backends import Backend, LocalBackend
from modelprint.verify.core import VerifyRecord, as_fingerprint_set, verify
from modelprint.verify.stats import holm_adjust  # noqa: F401 -- re-exported: trace's correction


@dataclasses.dataclass
class TraceRecord:
    licensees: list[str]  # attributed, most significant first
    alpha: float
    results: dict[str, dict[str, Any]]  # per licensee: matches, asked, log10 p, adjusted log10 p

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trace(target: Union[str, LoadedModel, Backend], sets: Mapping[str, Union[str, FingerprintSet]], *,
          alpha: float = VERIFY_DEFAULTS.alpha, max_queries: Optional[int] = None,
          match: str = VERIFY_DEFAULTS.match, seed: int = 0,
          batch_size: int = VERIFY_DEFAULTS.batch_size) -> TraceRecord:
    """Ask the suspect a sample of each licensee's keys; name the licensee(s) whose set matches."""
    if len(sets) < 1:
        raise ConfigError("trace needs at least one licensee's fingerprint set")
    if any(not str(name).strip() for name in sets):
        raise ConfigError("every licensee needs a name (NAME=FINGERPRINT_FILE)")
    loaded = {name: as_fingerprint_set(source) for name, source in sets.items()}  # every file checked before asking
    backend = target if hasattr(target, "answer") else LocalBackend(load_model(target), batch_size=batch_size)
    records: dict[str, VerifyRecord] = {}
    for name, fs in loaded.items():
        # Not sequential: every licensee gets the same number of questions, so p-values are comparable.
        records[name] = verify(backend, fs, max_queries=max_queries, alpha=alpha,
                               match=match, seed=seed, batch_size=batch_size, sequential=False)
    unbounded = [n for n, r in records.items() if r.log10_p_value is None]
    if unbounded:
        raise ConfigError(f"trace needs a p-value per licensee, and the verifier of {unbounded[0]}'s set "
                          f"({records[unbounded[0]].verifier}) gives none")
    adjusted = holm_adjust({n: r.log10_p_value for n, r in records.items()})
    named = sorted((n for n in records if adjusted[n] <= math.log10(alpha)), key=lambda n: adjusted[n])
    results = {n: {"set_id": r.set_id, "asked": r.n_asked, "matches": r.matches, "log10_p_value": r.log10_p_value,
                   "log10_adjusted_p_value": adjusted[n], "keys_spent": r.keys_spent,
                   "match_mode": r.match_mode} for n, r in records.items()}
    return TraceRecord(named, alpha, results)

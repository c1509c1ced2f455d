"""Several fingerprint sets against one suspect, at one family-wise level — and the registry's ledger.

Asking a suspect about m sets is m tests: if each were decided at p ≤ α, the chance that *some* set
falsely matches would grow to about m·α. :func:`verify_sets` corrects the sets' p-values with Holm
(as ``trace`` does) and decides each at its adjusted p ≤ α, so the chance of any false 'match' in the
whole call stays ≤ α. Every set is read and validated before the suspect is asked anything.

Sets named in the registry spend their least-spent keys first, and every run is recorded in the
registry's ledger here (not in the CLI), so no caller can skip it; the record then says how many
verifications of that set against that target the ledger holds — each one more test of the same
suspect, which a family-wise claim across them must correct for (Bonferroni: p ≤ α/N).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence, Union

from modelprint.config import VERIFY_DEFAULTS
from modelprint.errors import ConfigError
from modelprint.fingerprints import FingerprintSet, load_fingerprints
from modelprint.models import LoadedModel, load_model
from modelprint.verify.backends import Backend, LocalBackend
from modelprint.verify.core import VerifyRecord, check_options, verify
from modelprint.verify.stats import holm_adjust


@dataclasses.dataclass(frozen=True)
class SetSource:
    """A loaded set, its label for people, and its registry name when it came from the registry."""

    fs: FingerprintSet
    label: str
    registry_name: Optional[str] = None

    def __repr__(self) -> str:  # the set's own repr hides its secrets
        return f"SetSource({self.label!r}, {self.fs!r})"


def load_set(source: Union[str, Path, FingerprintSet, SetSource], url: Optional[str] = None) -> SetSource:
    """A set from a file, a registry name (anything that is not a file and has no .jsonl/.json suffix), or as given."""
    if isinstance(source, SetSource):
        return source
    if isinstance(source, FingerprintSet):
        return SetSource(source, source.set_id[7:19])
    text = str(source)
    if Path(text).exists() or text.endswith((".jsonl", ".json")) or isinstance(source, Path):
        return SetSource(load_fingerprints(Path(text)), Path(text).name)
    from modelprint.registry import resolve_set

    return SetSource(resolve_set(text, url), text, text)


def verify_sets(target: Union[str, Path, LoadedModel, Backend],
                sets: Sequence[Union[str, Path, FingerprintSet, SetSource]], *, max_queries: Optional[int] = None,
                alpha: float = VERIFY_DEFAULTS.alpha, match: str = VERIFY_DEFAULTS.match, seed: int = 0,
                batch_size: int = VERIFY_DEFAULTS.batch_size,
                registry_url: Optional[str] = None) -> list[VerifyRecord]:
    """Verify each set against ``target``; Holm-correct their p-values so the whole call has false-match level α.

    Each record carries its raw and adjusted p (``log10_adjusted_p_value``), ``family_size`` (the number of
    sets corrected for) and a verdict decided at adjusted p ≤ α. Each set is asked sequentially at the
    strictest Holm step (α/m), so it stops early only when its verdict is certain. A set whose verifier gives
    no p-value cannot count at a family-wise level: among several sets it counts as p = 1 ('no match').
    Registry sets are recorded in the ledger even when a later set fails (their keys were asked).
    """
    check_options(alpha, match, max_queries, batch_size)
    loaded = [load_set(s, registry_url) for s in sets]  # all read and validated before any key is asked
    if not loaded:
        raise ConfigError("no fingerprint set to verify")
    seen: dict[str, str] = {}
    for s in loaded:
        if s.fs.set_id in seen:
            raise ConfigError(f"'{s.label}' is the same set as '{seen[s.fs.set_id]}': give each set once")
        seen[s.fs.set_id] = s.label
    prefer = []
    for s in loaded:  # spend keys no earlier verification has revealed, first
        if s.registry_name is None:
            prefer.append(None)
            continue
        from modelprint.registry import choose_keys

        prefer.append(choose_keys(s.registry_name, len(s.fs), seed=seed, url=registry_url))
    backend = target if hasattr(target, "answer") else LocalBackend(load_model(target), batch_size=batch_size)
    m = len(loaded)
    records: list[VerifyRecord] = []
    try:
        for s, first in zip(loaded, prefer):
            records.append(verify(backend, s.fs, max_queries=max_queries, alpha=alpha / m, match=match, seed=seed,
                                  batch_size=batch_size, prefer=first))
        _correct(records, alpha)
    finally:
        for s, record in zip(loaded, records):
            if s.registry_name is not None:
                _record_in_ledger(s.registry_name, record, registry_url)
    return records


def _correct(records: list[VerifyRecord], alpha: float) -> None:
    """Holm over the records (in place): adjusted p, family size, verdict at adjusted p ≤ α."""
    m = len(records)
    raw = {str(i): (0.0 if r.log10_p_value is None else r.log10_p_value) for i, r in enumerate(records)}
    adjusted = holm_adjust(raw)
    for i, r in enumerate(records):
        r.alpha, r.family_size = alpha, m
        if m == 1:  # nothing to correct: the set's own decision (also for verifiers without a p-value)
            r.log10_adjusted_p_value = r.log10_p_value
            continue
        r.log10_adjusted_p_value = adjusted[str(i)]
        if r.log10_p_value is None:
            r.verdict = "no match"
            r.decision_rule += f"; no p-value, so it cannot count among {m} sets (verify this set alone)"
        else:
            r.verdict = "match" if adjusted[str(i)] <= math.log10(alpha) else "no match"
            r.decision_rule += f"; Holm-adjusted over {m} sets"


def _record_in_ledger(name: str, record: VerifyRecord, url: Optional[str]) -> None:
    from modelprint.registry import count_verifications, record_verification

    record_verification(name, target=record.target, backend=record.backend, keys=record.keys_spent,
                        matches=record.matches, verdict=record.verdict, p_value=record.p_value,
                        n_asked=record.n_asked, url=url)
    record.registry_set = name
    record.registry_verifications = count_verifications(name, record.target, url=url)

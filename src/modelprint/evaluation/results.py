"""Task results and their confidence intervals.

A score without an interval invites over-reading a 20-item difference, so every
result carries a 95 % interval: Wilson for accuracies (well behaved near 0 and 1,
where small models and agreement rates live) and a bootstrap for perplexity.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact at the boundaries (rounding would otherwise put 0/n just above 0)
    return (0.0 if successes <= 0 else min(lo, p)), (1.0 if successes >= n else max(hi, p))


def bootstrap_perplexity_interval(nll_sums: Sequence[float], token_counts: Sequence[int], seed: int = 0,
                                  resamples: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap over items of the token-weighted perplexity ``exp(sum nll / sum tokens)``."""
    nll = np.asarray(nll_sums, dtype=np.float64)
    cnt = np.asarray(token_counts, dtype=np.float64)
    if len(nll) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(nll), size=(resamples, len(nll)))
    ppl = np.exp(nll[idx].sum(axis=1) / np.maximum(cnt[idx].sum(axis=1), 1.0))
    lo, hi = np.percentile(ppl, [2.5, 97.5])
    return float(lo), float(hi)


@dataclasses.dataclass
class TaskResult:
    """One task's score on one model; ``details`` (per item) stay out of :meth:`summary`."""

    name: str
    metric: str
    score: float
    n: int
    ci_low: float
    ci_high: float
    higher_is_better: bool = True
    extras: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    details: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)

    @property
    def ci(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary without per-item details (what reports and registries store)."""
        out = dataclasses.asdict(self)
        out.pop("details")
        return out

    def to_dict(self, include_details: bool = False) -> dict[str, Any]:
        out = self.summary()
        if include_details:
            out["details"] = list(self.details)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def accuracy_result(name: str, metric: str, hits: Sequence[float], details: list[dict[str, Any]],
                    extras: Optional[dict[str, float]] = None) -> TaskResult:
    """A proportion-type result with its Wilson interval."""
    n = len(hits)
    k = float(sum(hits))
    lo, hi = wilson_interval(k, n)
    return TaskResult(name=name, metric=metric, score=k / n if n else float("nan"), n=n, ci_low=lo, ci_high=hi,
                      higher_is_better=True, extras=dict(extras or {}), details=details)

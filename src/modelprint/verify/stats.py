"""The false-positive bound: exact Poisson-binomial tails and a curtailed sequential test.

Under the null hypothesis (the suspect is not derived from our model) key i
matches with probability at most p_i, independently, because each response was
chosen with our own secret randomness. The p-value of m matches among the n
planned keys is P(X ≥ m) for X ~ PoissonBinomial(p_1..p_n), computed exactly in
log space so that thousands of keys and p-values far below 1e-300 stay exact.

Keys are asked in a random order and unasked keys count as misses, so stopping
early is a curtailed fixed-sample test: 'match' once the matches so far already
give p ≤ α, 'no match' once even all remaining keys matching could not.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np


def log_tail(p: Sequence[float], m: int) -> float:
    """ln P(X ≥ m) for X a sum of independent Bernoulli(p_i)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    n = len(p)
    if m <= 0:
        return 0.0
    if m > n:
        return -math.inf
    with np.errstate(divide="ignore"):
        log_p, log_q = np.log(p), np.log1p(-p)
    log_pmf = np.full(n + 1, -np.inf)
    log_pmf[0] = 0.0
    for i in range(n):
        shifted = np.concatenate(([-np.inf], log_pmf[:i + 1] + log_p[i]))
        stay = log_pmf[:i + 2] + log_q[i]
        log_pmf[:i + 2] = np.logaddexp(stay, shifted)
    return float(np.logaddexp.reduce(log_pmf[m:]))


def tail(p: Sequence[float], m: int) -> float:
    """P(X ≥ m) (may underflow to 0.0 as a float; use :func:`log10_tail` to report it)."""
    return math.exp(log_tail(p, m))


def log10_tail(p: Sequence[float], m: int) -> float:
    return log_tail(p, m) / math.log(10)


def sequential_decision(p_planned: Sequence[float], asked: int, matches: int, alpha: float) -> str | None:
    """'match' / 'no match' once the final verdict over the planned keys is certain, else None."""
    if log_tail(p_planned, matches) <= math.log(alpha):
        return "match"
    remaining = len(p_planned) - asked
    if log_tail(p_planned, matches + remaining) > math.log(alpha):
        return "no match"
    return None


def keys_needed(p: float, alpha: float, retention: float = 1.0) -> int:
    """Smallest n such that n·retention matches of null rate p give a p-value ≤ α (planning aid)."""
    for n in range(1, 100_000):
        if log_tail([p] * n, math.ceil(n * retention)) <= math.log(alpha):
            return n
    raise ValueError("no feasible number of keys")


def holm_adjust(log10_p: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values, in log10 (valid under any dependence between the tests).

    Deciding each test at adjusted p ≤ α keeps the chance of any false 'match' among them ≤ α.
    """
    names = sorted(log10_p, key=lambda n: log10_p[n])
    m = len(names)
    adjusted: dict[str, float] = {}
    running = -math.inf
    for rank, name in enumerate(names):
        value = min(0.0, log10_p[name] + math.log10(m - rank))
        running = max(running, value)
        adjusted[name] = running
    return adjusted


def format_p(log10_p: Optional[float]) -> str:
    """A p-value for people: 1e-28.4 when tiny, '—' when the scheme's verifier gives none."""
    if log10_p is None:
        return "—"
    return f"1e{log10_p:.1f}" if log10_p < -4 else f"{10 ** log10_p:.3g}"

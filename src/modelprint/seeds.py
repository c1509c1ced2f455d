"""The set's secret seed: 128 bits from the OS unless the user fixes one, and every consumer uses all its bits.

Everything secret about a set (Perinucleus picks, random keys and answers, watermark keys, chain-hash
secrets, sampled keys) is derived from one integer seed. A guessable seed means anyone can regenerate the
set and "prove" a match against any model, so the default is :func:`fresh_seed`; ``--seed`` exists for
reproducible tests and demos and is logged as guessable.
"""
from __future__ import annotations

import logging
import secrets

import numpy as np

log = logging.getLogger(__name__)

SEED_BITS = 128
FIXED_SEED_WARNING = ("a fixed --seed makes this fingerprint set guessable: anyone who tries that seed can rebuild "
                      "it; omit --seed for a secret set (128 bits from the OS)")
_LEGACY_LIMIT = 2 ** 32  # seeds below this derive exactly as before full-width seeds existed


def fresh_seed() -> int:
    """A new secret seed: ``SEED_BITS`` random bits from the operating system."""
    return secrets.randbits(SEED_BITS)


def check_seed(seed: int) -> int:
    """``seed`` as a non-negative int (any width); anything else is a ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError("a seed must be a non-negative integer")
    return int(seed)


def seed_sequence(seed: int, *stream: int) -> np.random.SeedSequence:
    """The numpy seed sequence of (seed, stream…), from every bit of ``seed``.

    Seeds below 2**32 keep their historical derivation (``default_rng([seed, *stream])``), so sets made
    with a small fixed seed still regenerate byte for byte; wider seeds go in whole as the entropy, with
    the stream as the spawn key (numpy pads the entropy, so the two never run together).
    """
    seed = check_seed(seed)
    if seed < _LEGACY_LIMIT:
        return np.random.SeedSequence([seed, *stream])
    return np.random.SeedSequence(seed, spawn_key=tuple(int(s) for s in stream))


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream…): results never depend on batching."""
    return np.random.default_rng(seed_sequence(seed, *stream))


def torch_seed(seed: int, *stream: int) -> int:
    """A 64-bit ``torch.manual_seed`` value for (seed, stream…), derived from every bit of ``seed``."""
    words = seed_sequence(seed, 0x7043, *stream).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def seed_bytes(seed: int) -> bytes:
    """All of ``seed`` as big-endian bytes (at least 8, so 64-bit seeds keep their old encoding)."""
    seed = check_seed(seed)
    return seed.to_bytes(max(8, (seed.bit_length() + 7) // 8), "big")


def resolve_seed(seed: "int | None") -> int:
    """``seed`` if given (warning that it makes the set guessable), else a fresh secret one."""
    if seed is None:
        return fresh_seed()
    log.warning(FIXED_SEED_WARNING)
    return check_seed(seed)

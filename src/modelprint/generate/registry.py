"""The strategy registry: a strategy is a key source plus a response chooser, both named plug-ins.

A plug-in registers with ``@register_strategy`` (or by calling ``register_strategy``
with a :class:`Strategy`); ``modelprint generate --strategy NAME`` then finds it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Protocol, Sequence

from modelprint.models import LoadedModel
from modelprint.plugins import lookup


@dataclasses.dataclass
class Choice:
    """A chosen response for one key: its ids, the null match bound and audit metadata."""

    response_ids: list[int]
    null_prob: float
    meta: dict


class KeySource(Protocol):
    def __call__(self, lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                 keys_file: str | None) -> list[str]: ...


class Responder(Protocol):
    def __call__(self, lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float,
                 k: int, seed: int, batch_size: int) -> list[Choice]: ...


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    source: str  # the paper or origin the strategy reproduces
    keys: Callable[..., list[str]]
    responses: Callable[..., list[Choice]]
    verifier: str = "match"  # name in modelprint.verify.verifiers.VERIFIERS
    embed_config: Optional[str] = None  # shipped recipe (configs/embed/NAME.yaml) the scheme's paper trains with
    trains: bool = True  # False: intrinsic fingerprints, nothing to embed (the marked model is the base)


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    STRATEGIES[strategy.name] = strategy
    return strategy


def load_plugins() -> None:
    """Import the built-in strategies and the peer schemes so they register themselves."""
    from modelprint import schemes  # noqa: F401
    from modelprint.generate import strategies  # noqa: F401


def get_strategy(name: str) -> Strategy:
    load_plugins()

    return lookup(STRATEGIES, name, "strategy")

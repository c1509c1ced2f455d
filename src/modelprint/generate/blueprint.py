"""Blueprint of a strategy plug-in: how a fingerprint set is made (a key source × a response chooser).

Fill in two functions and register them; ``modelprint generate --strategy NAME`` then finds the strategy::

    from modelprint.generate.blueprint import STRATEGIES, Choice

    def my_keys(lm, n, *, key_length, seed, batch_size, keys_file) -> list[str]:
        ...  # n distinct keys; every random choice derived from ``seed`` (modelprint.seeds.rng_for)

    @STRATEGIES.register("my-scheme", source="Author et al., 'Paper' (2025)", keys=my_keys,
                         description="one line on what the keys and responses are",
                         verifier="match", embed_config=None, trains=True, queries_per_key=1)
    def my_responses(lm, keys, *, response_length, threshold, k, seed, batch_size, system_prompt) -> list[Choice]:
        ...  # one Choice per key: response ids, the null match bound, public audit metadata

Both functions take the model positionally and every hyperparameter keyword-only (the names above are
what ``generate`` passes; accept ``**_`` for those you ignore). ``verifier`` names the verifier plug-in
(``modelprint.verify.verifiers.VERIFIERS``) that the set's header will record; ``embed_config`` the shipped
recipe (``configs/embed/NAME.yaml``) the paper trains with; ``trains=False`` for intrinsic fingerprints;
``queries_per_key`` what verifying one key costs in queries to the suspect (a multi-turn scheme asks several),
so ``stress --schemes --queries Q`` can give every scheme the keys that fit the same budget.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Sequence

from modelprint.models import LoadedModel
from modelprint.plugins import Registry


@dataclasses.dataclass
class Choice:
    """A chosen response for one key: its ids, the null match bound and audit metadata."""

    response_ids: list[int]
    null_prob: float
    meta: dict


class KeySource(Protocol):
    def __call__(self, lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                 keys_file: Optional[str]) -> list[str]: ...


class Responder(Protocol):
    def __call__(self, lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float,
                 k: int, seed: int, batch_size: int, system_prompt: Optional[str]) -> list[Choice]: ...


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    source: str  # the paper or origin the strategy reproduces
    keys: KeySource
    responses: Responder
    verifier: str = "match"  # name in modelprint.verify.verifiers.VERIFIERS
    embed_config: Optional[str] = None  # shipped recipe (configs/embed/NAME.yaml) the scheme's paper trains with
    trains: bool = True  # False: intrinsic fingerprints, nothing to embed (the marked model is the base)
    queries_per_key: int = 1  # queries one key costs the verifier (multi-turn or repeated asking: more)


def _strategy(name: str, responses: Responder, *, source: str, keys: KeySource, description: str,
              verifier: str = "match", embed_config: Optional[str] = None, trains: bool = True,
              queries_per_key: int = 1) -> Strategy:
    if queries_per_key < 1:
        raise ValueError(f"strategy {name}: queries_per_key must be ≥ 1")
    return Strategy(name, description, source, keys, responses, verifier, embed_config, trains, queries_per_key)


STRATEGIES: Registry[Strategy] = Registry("strategy", build=_strategy,
                                          builtins=("modelprint.generate.strategies", "modelprint.schemes"))


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name`` (one error line listing the known ones)."""
    return STRATEGIES.get(name)

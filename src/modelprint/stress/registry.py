"""Stresses and attacks are plug-ins: a :class:`StressSpec` per name in one registry.

A plug-in is ``fn(ctx, **params) -> Stressed``: it gets the fingerprinted model (and
the base, when known) and returns what the host would serve — transformed weights
and/or a changed decoding — so the runner can verify and evaluate it uniformly.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

from modelprint.errors import ModelprintError
from modelprint.fingerprints import FingerprintSet
from modelprint.models import LoadedModel
from modelprint.plugins import lookup

#: what a row's utility numbers mean (written into the report next to each row)
SCOPE_WEIGHTS = "weights"      # every task re-run on the transformed model
SCOPE_DECODING = "decoding"    # generative tasks + answer agreement through the changed decoding;
#                                log-likelihood tasks are unaffected by it and copied from the baseline
SCOPE_RENDERING = "rendering"  # only how queries are rendered changes; utility not measured


@dataclasses.dataclass
class StressContext:
    """What a host has: the fingerprinted weights, maybe the public base, and public facts about the scheme.

    ``public`` is the set header's non-secret part (strategy and its parameters, Kerckhoffs);
    plug-ins must never read keys or responses.
    """

    marked: LoadedModel
    base: Optional[LoadedModel]
    public: dict[str, Any]
    seed: int = 0
    fast: bool = False  # tests: smallest sensible amounts of work
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)  # costly artefacts shared by rows (no secrets)

    @classmethod
    def from_set(cls, marked: LoadedModel, base: Optional[LoadedModel], fs: FingerprintSet, seed: int = 0,
                 fast: bool = False) -> "StressContext":
        public = {"strategy": fs.strategy, "params": dict(fs.params), "count": len(fs)}
        return cls(marked, base, public, seed, fast)

    def need_base(self, what: str) -> LoadedModel:
        if self.base is None:
            raise ModelprintError(f"{what} needs the unmarked base model (pass --base)")
        return self.base


@dataclasses.dataclass
class Stressed:
    """What the host serves: ``model`` (possibly a decoding wrapper) and the backend verify queries."""

    model: LoadedModel
    backend: Any
    scope: str
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra numbers (no secrets)


StressFn = Callable[..., Stressed]


@dataclasses.dataclass(frozen=True)
class StressSpec:
    """A registered stress (benign) or attack (adaptive); ``doc`` names its source and the weakness it probes."""

    name: str
    kind: str  # "stress" | "attack"
    fn: StressFn
    doc: str
    defaults: dict[str, Any]

    def run(self, ctx: StressContext, **params: Any) -> Stressed:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ModelprintError(f"{self.kind} '{self.name}' has no parameter(s) {', '.join(sorted(unknown))} "
                                  f"(known: {', '.join(sorted(self.defaults)) or 'none'})")
        return self.fn(ctx, **{**self.defaults, **params})


STRESSES: dict[str, StressSpec] = {}


def register(name: str, kind: str = "stress") -> Callable[[StressFn], StressFn]:
    """Decorator: register ``fn(ctx, **params)``; its keyword defaults are the plug-in's parameters."""

    def wrap(fn: StressFn) -> StressFn:
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in list(sig.parameters.items())[1:] if p.default is not inspect._empty}
        STRESSES[name] = StressSpec(name, kind, fn, inspect.getdoc(fn) or "", defaults)
        return fn

    return wrap


def get_stress(name: str) -> StressSpec:
    """The plug-in ``name`` or one line listing the known ones."""
    return lookup(STRESSES, name, "stress or attack", ModelprintError)

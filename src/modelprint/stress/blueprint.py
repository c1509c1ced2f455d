"""Blueprint of a stress (benign) or attack (adaptive) plug-in: what a host does to a fingerprinted model.

Fill in one function and register it; ``modelprint stress --suite NAME`` and suites then find it::

    from modelprint.stress.blueprint import STRESSES, SCOPE_WEIGHTS, StressContext, Stressed

    @STRESSES.register("my-attack", source="Author et al. 2025, the weakness it probes", kind="attack")
    def my_attack(ctx: StressContext, strength: float = 0.5, *, other: int = 3) -> Stressed:
        # docstring: one line on what the host does; Source: …; Probes: which fingerprints it should break
        ...  # read ctx.marked (and ctx.need_base(...)), never ctx.public's secrets: there are none
        return Stressed(model, backend, SCOPE_WEIGHTS)

The model comes first and positionally; every other parameter has a default (those defaults are the
plug-in's hyperparameters, overridable per suite entry, and unknown ones are refused). It returns a
:class:`Stressed`: what the host serves (weights and/or a decoding wrapper), the backend verify queries, and
the scope of the utility numbers. ``kind`` is ``"stress"`` (benign) or ``"attack"`` (adaptive).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

from modelprint.errors import ModelprintError
from modelprint.fingerprints import FingerprintSet
from modelprint.models import LoadedModel
from modelprint.plugins import Registry

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
    """A registered stress (benign) or attack (adaptive); ``doc`` says what it does and the weakness it probes."""

    name: str
    kind: str  # "stress" | "attack"
    fn: StressFn
    doc: str
    defaults: dict[str, Any]
    source: str = ""  # the paper or practice it reproduces

    def run(self, ctx: StressContext, **params: Any) -> Stressed:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ModelprintError(f"{self.kind} '{self.name}' has no parameter(s) {', '.join(sorted(unknown))} "
                                  f"(known: {', '.join(sorted(self.defaults)) or 'none'})")
        return self.fn(ctx, **{**self.defaults, **params})


def _spec(name: str, fn: StressFn, *, source: str, kind: str = "stress") -> StressSpec:
    """A function's keyword defaults (after the context) are the plug-in's parameters."""
    sig = inspect.signature(fn)
    defaults = {k: p.default for k, p in list(sig.parameters.items())[1:] if p.default is not inspect.Parameter.empty}
    return StressSpec(name, kind, fn, inspect.getdoc(fn) or "", defaults, source)


STRESSES: Registry[StressSpec] = Registry("stress or attack", build=_spec,
                                          builtins=("modelprint.stress.stresses", "modelprint.stress.attacks"))


def get_stress(name: str) -> StressSpec:
    """The plug-in ``name`` or one line listing the known ones."""
    return STRESSES.get(name)

"""Blueprint of a merge-method plug-in: a class registered under a name, with its own typed parameters.

Fill in one class and register it; a merge config's ``method: NAME`` then finds it::

    from modelprint.merge.blueprint import METHODS, MergeMethod

    class MyParams(StrictConfig):          # the hyperparameters, validated before any work starts
        density: float = 0.5

    @METHODS.register("my-method", source="Author et al., 'Paper', Venue 2025")
    class MyMerge(MergeMethod):
        # a docstring saying what it does is required
        Params = MyParams
        needs_base = True                  # task-vector methods need a base model; others refuse one

        def merge(self, models, weights, base, device) -> torch.nn.Module:
            ...                            # read self.params; return the merged module to save

A method receives loaded parent models (already checked to share architecture
and tokenizer) and their weights, and returns a ``torch.nn.Module`` to save.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import torch
from pydantic import ValidationError

from modelprint.config import StrictConfig
from modelprint.errors import ConfigError
from modelprint.models import LoadedModel
from modelprint.plugins import Registry


class NoParams(StrictConfig):
    """A method without parameters still rejects unknown keys."""


class MergeMethod:
    """Base class of every merge method; subclasses set ``Params`` and implement ``merge``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[StrictConfig]] = NoParams
    needs_base: ClassVar[bool] = False  # task-vector methods need a base model, others refuse one
    source: ClassVar[str] = ""  # the paper it reproduces (set by METHODS.register)

    def __init__(self, params: StrictConfig) -> None:
        self.params = params

    def check_weights(self, weights: Sequence[float]) -> list[float]:
        """Validate the per-model weights and return the ones actually used (default: positive, normalised)."""
        return positive_normalised(self.name, weights)

    def merge(self, models: list[LoadedModel], weights: list[float], base: Optional[LoadedModel],
              device: torch.device) -> torch.nn.Module:
        raise NotImplementedError


def _method(name: str, cls: type[MergeMethod], *, source: str) -> type[MergeMethod]:
    if not cls.__doc__:
        raise TypeError(f"merge method {cls.__name__} needs a docstring")
    cls.name, cls.source = name, source
    return cls


METHODS: Registry[type[MergeMethod]] = Registry(
    "merge method", build=_method,
    builtins=("modelprint.merge.linear", "modelprint.merge.task_arithmetic", "modelprint.merge.pleas"))


def get_method(name: str, parameters: dict[str, Any]) -> MergeMethod:
    """Instantiate a registered method with validated parameters, or raise one clear ConfigError."""
    cls = METHODS.get(name)
    try:
        params = cls.Params.model_validate(parameters or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"unknown parameter 'parameters.{where}' for merge method '{name}'") from None
        raise ConfigError(f"invalid value for 'parameters.{where}' of merge method '{name}': {first['msg']}") from None
    return cls(params)


def positive_normalised(method: str, weights: Sequence[float]) -> list[float]:
    """Averaging methods: every weight must be > 0; they are rescaled to sum to 1."""
    if any(not w > 0 for w in weights):
        raise ConfigError(f"merge method '{method}' needs every model weight > 0 (got {list(weights)}); "
                          "weights are normalised to sum to 1")
    total = float(sum(weights))
    return [float(w) / total for w in weights]

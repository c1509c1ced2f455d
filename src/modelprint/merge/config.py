"""The merge config: which models, their weights, an optional base, the method and its parameters.

Example (YAML)::

    method: ties
    base_model: smollm2-135m
    models:
      - model: ./finetuned-a
        weight: 0.6
      - ./finetuned-b          # shorthand for {model: ./finetuned-b, weight: 1.0}
    parameters: {density: 0.3}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from pydantic import ConfigDict, Field, field_validator

from modelprint.config import StrictConfig, load_config
from modelprint.errors import ConfigError
from modelprint.models import LoadedModel

ModelSpec = Union[str, LoadedModel]  # a name or directory in YAML; an in-memory model from Python


class ModelEntry(StrictConfig):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    model: ModelSpec
    weight: float = 1.0


class MergeConfig(StrictConfig):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    method: str = Field(description="a registered merge method: linear, task_arithmetic, ties, pleas, ...")
    models: list[ModelEntry] = Field(min_length=1)
    base_model: Optional[ModelSpec] = Field(None, description="needed by task-vector methods, refused by others")
    parameters: dict[str, Any] = Field(default_factory=dict, description="method-specific, validated by the method")
    device: Optional[str] = Field(None, description="torch device; default: modelprint.models.default_device()")

    @field_validator("models", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, (str, LoadedModel)) else v for v in value]
        return value


def as_merge_config(config: Union[MergeConfig, str, Path, dict]) -> MergeConfig:
    """Accept a MergeConfig, a YAML path or a plain dict (validated the same way)."""
    if isinstance(config, MergeConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_config(MergeConfig, Path(config))
    if isinstance(config, dict):
        return load_config(MergeConfig, None, **config)
    raise ConfigError(f"merge config must be a MergeConfig, a YAML path or a dict, not {type(config).__name__}")

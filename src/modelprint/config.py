"""Typed configuration: pydantic models loaded from YAML and overridden with ``key=value`` pairs.

Every stage's options live in one model with ``extra="forbid"``, so a typo in a
YAML file or an override is rejected with the offending key named.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelprint.errors import ConfigError

C = TypeVar("C", bound="StrictConfig")


class StrictConfig(BaseModel):
    """Base for every config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "lora.enabled=true"]`` → nested dict, values parsed as YAML scalars."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' is not of the form key=value")
        dotted, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = result
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}' conflicts with another override")
        node[parts[-1]] = value
    return result


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge_dicts(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{where}'"
    return f"invalid config value for '{where}': {first['msg']}"


def validate(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config from a mapping; a validation problem becomes one ConfigError line."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def resolve_config_path(path: Path, kind: str) -> Path:
    """A YAML path, or the name of a config shipped with modelprint (``configs/<kind>/<name>.yaml``)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = Path(__file__).parent / "configs" / kind / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ConfigError(f"config file '{path}' does not exist")


def read_config_yaml(path: Path, kind: str) -> dict[str, Any]:
    """The YAML mapping at ``path`` (or the shipped ``configs/<kind>/NAME.yaml``); bad files are one-line errors."""
    path = resolve_config_path(Path(path), kind)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    return loaded


def load_config(cls: type[C], path: Optional[Path] = None, overrides: Iterable[str] = (),
                **values: Any) -> C:
    """Defaults ← YAML file ← explicit ``values`` (non-None) ← ``key=value`` overrides."""
    data: dict[str, Any] = read_config_yaml(path, getattr(cls, "config_kind", "")) if path is not None else {}
    data = merge_dicts(data, {k: v for k, v in values.items() if v is not None})
    data = merge_dicts(data, parse_overrides(overrides))
    return validate(cls, data)


class VerifyConfig(StrictConfig):
    """The options every verification takes (verify, trace, stress, compare): one place for their defaults.

    Here on the ground floor (not in ``verify``) so a CLI can read the defaults without importing a stage;
    ``--match auto`` (the most powerful valid test the backend allows) means the same whichever command asks.
    """

    alpha: float = Field(1e-6, gt=0.0, lt=1.0)  # false-positive level of the decision
    match: Literal["auto", "exact", "prefix", "candidate", "sample"] = "auto"
    max_queries: Optional[int] = Field(None, ge=1)  # None: every key of the set
    batch_size: int = Field(64, ge=1)
    seed: int = 0  # which keys a limited budget spends (not a secret)
    # sampled answers per key for --match sample: with a margin-recipe pick at probability ~0.07 and k = 3,
    # 16 samples gave a per-key hit rate of 0.67 (a 64-key verdict at 1e-6 in ~75 % of runs), 32 gave 0.88 (~100 %)
    samples: int = Field(32, ge=1)
    # local weights: forward passes in bf16 where the hardware multiplies it natively ("auto"), with an fp32
    # re-check of every close decision so verdicts equal fp32's (verify/local.py); float32 | bfloat16 force one
    precision: Literal["auto", "float32", "bfloat16"] = "auto"


VERIFY_DEFAULTS = VerifyConfig()

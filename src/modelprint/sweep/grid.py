"""A grid of typed configs: parameters given as lists, expanded to their product, each point validated.

Two spellings, one meaning (as in mlprints): in YAML a leaf ``{grid: [a, b]}``; on the command line
``--set key=[a,b]`` (a dotted key into the pydantic config, the value parsed as YAML). A ``--set`` whose value
is no list fixes that key for every point. Every point is validated against the config model before any work
runs, so an unknown key, an empty list, a ``grid`` that is no list or a value the model refuses is one
:class:`~modelprint.errors.ConfigError` line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from modelprint.config import StrictConfig, merge_dicts, read_config_yaml, validate
from modelprint.errors import ConfigError

GRID = "grid"


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One point: its grid values (dotted key → value, in axis order), its validated config and a stable name."""

    values: dict[str, Any]
    config: StrictConfig

    @property
    def name(self) -> str:
        return point_name(self.values)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The axes (dotted key → values, in the order given) and every point of their product."""

    axes: dict[str, list[Any]]
    fixed: dict[str, Any]  # the nested mapping every point shares (YAML + non-list --set), defaults not filled in
    points: list[GridPoint]


def point_name(values: dict[str, Any]) -> str:
    """A stable directory name from a point's values: readable ``key=value`` parts plus a short hash of them all.

    The hash (of the canonical JSON) keeps names distinct when sanitising or truncating makes two look alike.
    """
    canon = json.dumps(values, sort_keys=True, default=str)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:8]
    readable = "+".join(f"{k}={_scalar(v)}" for k, v in values.items()) or "default"
    readable = re.sub(r"[^A-Za-z0-9._=+-]+", "-", readable).strip("-")[:80]
    return f"{readable}__{digest}"


def _scalar(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)


def _split_grid(node: Any, prefix: str, axes: dict[str, list[Any]]) -> Any:
    """The mapping without its ``{grid: [...]}`` leaves, which are moved into ``axes`` under their dotted key."""
    if not isinstance(node, dict):
        return node
    if GRID in node:
        where = prefix or "<root>"
        if set(node) != {GRID}:
            raise ConfigError(f"'{where}': a grid is written {{grid: [a, b]}} with nothing beside it")
        _add_axis(axes, where, node[GRID])
        return _MISSING
    out = {}
    for key, value in node.items():
        sub = _split_grid(value, f"{prefix}.{key}" if prefix else str(key), axes)
        if sub is not _MISSING:
            out[key] = sub
    return out


_MISSING = object()


def _add_axis(axes: dict[str, list[Any]], key: str, values: Any) -> None:
    if not isinstance(values, list):
        raise ConfigError(f"grid '{key}' must be a list of values, got {type(values).__name__}")
    if not values:
        raise ConfigError(f"grid '{key}' is an empty list: give at least one value")
    if key in axes:
        raise ConfigError(f"grid '{key}' is given twice")
    seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"grid '{key}' repeats a value")
    axes[key] = list(values)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"'{dotted}' is not a dotted config key")
    node: Any = value
    for part in reversed(parts):
        node = {part: node}
    return node


def parse_sets(pairs: Iterable[str], axes: dict[str, list[Any]]) -> dict[str, Any]:
    """``--set`` pairs: list values become axes (added to ``axes``), the rest a nested mapping of fixed values."""
    fixed: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set '{pair}' is not of the form key=value or key=[a,b]")
        key, raw = (s.strip() for s in pair.split("=", 1))
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set '{key}': the value is not valid YAML (a list is written [a,b])") from None
        if isinstance(value, dict) and GRID in value:
            value = value[GRID] if set(value) == {GRID} else value
            _add_axis(axes, key, value)
        elif isinstance(value, list):
            _add_axis(axes, key, value)
        else:
            _nested(key, None)  # checks the key's shape
            fixed = merge_dicts(fixed, _nested(key, value))
    return fixed


def read_grid_yaml(path: Path, kind: str) -> dict[str, Any]:
    """The YAML mapping at ``path`` (or the shipped ``configs/<kind>/NAME.yaml``)."""
    return read_config_yaml(Path(path), kind)


def _get(mapping: dict[str, Any], dotted: str) -> Any:
    node: Any = mapping
    for part in dotted.split("."):
        node = node[part]
    return node


def _unique(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(json.dumps(v, sort_keys=True, default=str), v)
    return list(seen.values())


def _drop(mapping: dict[str, Any], dotted: str) -> dict[str, Any]:
    """``mapping`` without the dotted key (a grid axis wins over a fixed value of the same key)."""
    head, _, rest = dotted.partition(".")
    if head not in mapping:
        return mapping
    out = dict(mapping)
    if not rest:
        del out[head]
    elif isinstance(out[head], dict):
        out[head] = _drop(out[head], rest)
    return out


def expand_grid(cls: type[StrictConfig], data: Optional[dict[str, Any]] = None, sets: Iterable[str] = ()) -> Grid:
    """The product of every list parameter of ``data`` (YAML) and ``sets`` (``--set``), each point validated.

    Axes keep the order they were given (YAML first, then ``--set``): the first is the plot's x axis, the
    second its lines. A ``--set`` of a key the YAML grids over replaces that axis. No axis: one point.
    """
    axes: dict[str, list[Any]] = {}
    base = _split_grid(dict(data or {}), "", axes)
    set_axes: dict[str, list[Any]] = {}
    fixed_sets = parse_sets(sets, set_axes)
    for key in set_axes:
        axes.pop(key, None)
        base = _drop(base, key)
    axes.update(set_axes)
    fixed = merge_dicts(base, fixed_sets)
    for key in axes:
        fixed = _drop(fixed, key)
    points = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        merged = fixed
        for key, value in values.items():
            merged = merge_dicts(merged, _nested(key, value))
        try:
            config = validate(cls, merged)
        except ConfigError as err:
            where = ", ".join(f"{k}={_scalar(v)}" for k, v in values.items())
            raise ConfigError(f"{err}" + (f" (grid point {where})" if where else "")) from None
        dumped = config.model_dump(mode="json")  # the values as the model read them ("5e-4" → 0.0005)
        points.append(GridPoint({key: _get(dumped, key) for key in values}, config))
    axes = {key: _unique([p.values[key] for p in points]) for key in axes}
    names = [p.name for p in points]
    if len(set(names)) != len(names):  # e.g. [1, 1.0] for a float: one value twice once the model has read it
        raise ConfigError("a grid repeats a value (two points would be the same run)")
    return Grid(axes, fixed, points)

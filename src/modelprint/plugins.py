"""One lookup for every plug-in registry (strategies, verifiers, tasks, stresses, merge methods)."""
from __future__ import annotations

from typing import Mapping, TypeVar

from modelprint.errors import ConfigError, ModelprintError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, what: str, error: type[ModelprintError] = ConfigError) -> T:
    """``registry[name]``, or one error line naming the unknown ``what`` and listing the known ones."""
    try:
        return registry[name]
    except KeyError:
        raise error(f"unknown {what} '{name}' (known: {', '.join(sorted(registry))})") from None

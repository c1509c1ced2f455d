"""What a run of the embedding recipe is expected to cost, from `benchmarks/embed.py` over several seeds.

A single run's perplexity change or answer agreement means little on its own: the recipe's cost varies from secret
to secret.  ``benchmarks/embed.py --expectations`` stores its per-seed summary (mean, sd, worst run) in the packaged
``data/embed_expectations.json``; ``modelprint embed`` prints its own figures next to the summary measured for the
same model, recipe and set size, so a user sees whether their run is typical.  A recipe that differs from the
benchmark's in anything but the seed has no expectation: the numbers would not be about it.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, Field

from modelprint.embed.config import EmbedConfig
from modelprint.io import write_json_atomic

PACKAGED = "embed_expectations.json"
IGNORED_FIELDS = {"seed"}  # the benchmark runs seeds 0, 1, …; a user's seed does not change the expectation


class FigureSummary(BaseModel):
    mean: float
    sd: float
    worst: float
    runs: int


class Expectation(BaseModel):
    """One benchmark summary: a model name, a set size, a recipe and its figures over ``runs`` seeds."""

    model: str
    n: int
    variant: str
    recipe: dict[str, Any] = Field(description="the recipe as EmbedConfig.model_dump(), seed excluded")
    figures: dict[str, FigureSummary]
    command: str = ""
    measured: str = Field("", description="date and machine, free text")


def recipe_key(config: EmbedConfig) -> dict[str, Any]:
    """The recipe fields that change the result: not the seed, and not the settings of the objective it does not
    use (a greedy run's expectation survives a change to ``margin.*``)."""
    unused = {"margin"} if config.objective != "margin" else set()
    return config.model_dump(mode="json", exclude=IGNORED_FIELDS | unused)


def load_expectations(path: Optional[Union[str, Path]] = None) -> list[Expectation]:
    """The stored summaries (the packaged file unless ``path``); a missing file is no expectations."""
    if path is None:
        source = resources.files("modelprint") / "data" / PACKAGED
        text = source.read_text() if source.is_file() else "[]"
    else:
        p = Path(path)
        text = p.read_text() if p.exists() else "[]"
    return [Expectation.model_validate(e) for e in json.loads(text)]


def expectation_for(model: str, n: int, config: EmbedConfig,
                    path: Optional[Union[str, Path]] = None) -> Optional[Expectation]:
    """The summary measured for this model name and recipe, at ``n`` or else the nearest measured set size."""
    key = recipe_key(config)
    found = [e for e in load_expectations(path) if e.model == model and e.recipe == key]
    return min(found, key=lambda e: (abs(e.n - n), e.n)) if found else None


def store_expectation(expectation: Expectation, path: Union[str, Path]) -> None:
    """Add or replace the summary for (model, n, recipe) in ``path``, atomically."""
    kept = [e for e in load_expectations(path)
            if not (e.model == expectation.model and e.n == expectation.n and e.recipe == expectation.recipe)]
    write_json_atomic(Path(path), [e.model_dump(mode="json") for e in [*kept, expectation]])

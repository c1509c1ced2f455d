"""``modelprint stress --schemes``: thin CLI over :func:`modelprint.stress.compare.compare_schemes`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer


def compare_cmd(schemes: str, model: Optional[str], n: int, suite: str, out: Optional[Path], tasks, seed: int,
                alpha: float, match: str, overrides: list[str], unrelated: Optional[str], overwrite: bool,
                queries: Optional[int] = None) -> None:
    """``stress --schemes``: the side-by-side table, printed and written under ``out``."""
    from modelprint.models import DEFAULT_MODEL
    from modelprint.stress.compare import compare_schemes
    from modelprint.stress.compare_report import format_comparison

    start = time.perf_counter()
    result = compare_schemes(schemes.split(","), model=model or DEFAULT_MODEL, num_fingerprints=n, suite=suite,
                             out=out, tasks=tasks, seed=seed, alpha=alpha, match=match, embed_overrides=overrides,
                             unrelated=unrelated, overwrite=overwrite, queries=queries)
    typer.echo(format_comparison(result.data))
    where = f"{out / 'comparison.html'}, " if out is not None else ""
    typer.echo(f"comparison: {where}{time.perf_counter() - start:.0f} s")

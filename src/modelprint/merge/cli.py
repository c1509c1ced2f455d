"""``modelprint merge CONFIG --out DIR``: thin wrapper around :func:`modelprint.merge.merge`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from modelprint.log import console


def register(app: typer.Typer) -> None:
    @app.command("merge")
    def merge_command(
        config: Path = typer.Argument(..., help="merge config YAML (method, models, weights, base_model, parameters)"),
        out: Path = typer.Option(..., "--out", "-o", help="output Hugging Face model directory"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output directory"),
        override: Optional[list[str]] = typer.Option(None, "--set", help="override a config key: key=value"),
    ) -> None:
        """Merge models (linear, task_arithmetic, ties, pleas, ...) into one checkpoint."""
        from modelprint.config import load_config
        from modelprint.merge import MergeConfig, merge

        cfg = load_config(MergeConfig, config, override or ())
        path = merge(cfg, out, overwrite=overwrite)
        console.print(f"merged model written to {path}")

"""``modelprint sweep embed|stress``: thin CLI over :mod:`modelprint.sweep` (grid from YAML and ``--set``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from modelprint.config import VERIFY_DEFAULTS
from modelprint.log import console
from modelprint.models import DEFAULT_MODEL

# (rich markup: "\\[" prints a literal bracket)
GRID_HELP = ("Grid YAML: the stage's config with {grid: \\[a, b]} leaves for the swept keys, or a shipped name "
             "(configs/sweep/NAME.yaml).")
SET_HELP = "key=\\[a,b] sweeps a dotted config key over the list; key=value fixes it (repeatable)."


def _summary(result) -> None:
    from modelprint.sweep.report import TABLE_STEM, markdown_table, table_rows

    typer.echo(markdown_table(table_rows(result)), nl=False)
    console.print(f"{len(result.ran)} point(s) run, {len(result.skipped)} read back; table "
                  f"{result.work / (TABLE_STEM + '.md')} (.csv, .jsonl), plot {result.work / (TABLE_STEM + '.png')}",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    sweep_app = typer.Typer(help="Run embed or stress over a grid of parameter values; resumes what exists.",
                            no_args_is_help=True)
    app.add_typer(sweep_app, name="sweep")

    @sweep_app.command("embed")
    def sweep_embed_cmd(
        fingerprints: Path = typer.Option(..., "--fingerprints", "-f", help="Fingerprint file from `generate`."),
        work: Path = typer.Option(..., "--work", "-w", help="Sweep directory: points/, sweep.md|csv|jsonl|png."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=GRID_HELP),
        sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model: embedded name, HF dir or hub id."),
        alpha: float = typer.Option(VERIFY_DEFAULTS.alpha, "--alpha", help="False-positive level of verify."),
        keep_models: bool = typer.Option(False, "--keep-models", help="Keep each point's model directory."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing sweep directory."),
    ) -> None:
        """Embed with each point's recipe, then verify (exact and candidate); one table and plot across the grid."""
        from modelprint.sweep import load_grid, sweep_embed

        grid = load_grid("embed", config, sets or [])  # every point validated before any work
        _summary(sweep_embed(model, fingerprints, work, grid, alpha=alpha, keep_models=keep_models,
                             overwrite=overwrite))

    @sweep_app.command("stress")
    def sweep_stress_cmd(
        model: str = typer.Option(..., "--model", "-m", help="Fingerprinted model: HF dir or embedded name."),
        fingerprints: Path = typer.Option(..., "--fingerprints", "-f", help="Its fingerprint set file."),
        work: Path = typer.Option(..., "--work", "-w", help="Sweep directory: points/, sweep.md|csv|jsonl|png."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=GRID_HELP),
        sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP + " Keys: suite, access, alpha, "
                                                 "match, seed, tasks.NAME."),
        base: Optional[str] = typer.Option(None, "--base", help="Unmarked base model (for stresses that need it)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing sweep directory."),
    ) -> None:
        """Run the stress suite once per point; one table and plot across the grid."""
        from modelprint.sweep import load_grid, sweep_stress

        grid = load_grid("stress", config, sets or [])
        _summary(sweep_stress(model, fingerprints, work, grid, base=base, overwrite=overwrite))

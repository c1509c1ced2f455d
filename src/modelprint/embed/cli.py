"""``modelprint embed``: thin CLI over :func:`modelprint.embed.embed`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from modelprint.config import load_config
from modelprint.log import console
from modelprint.models import DEFAULT_MODEL


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_cmd(
        fingerprints: Path = typer.Option(..., "--fingerprints", "-f", help="Fingerprint file from `generate`."),
        out: Path = typer.Option(..., "--out", "-o", help="Directory for the fingerprinted model."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model: embedded name, HF dir or hub id."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML, or a shipped recipe name (configs/embed/NAME.yaml, e.g. a peer scheme's)."),
        lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA or full fine-tuning."),
        learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr"),
        max_epochs: Optional[int] = typer.Option(None, "--max-epochs"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last epoch checkpoint."),
        force: bool = typer.Option(False, "--force", help="Embed fingerprints made for another model or tokenizer."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
        overrides: Optional[list[str]] = typer.Argument(None, help="Recipe overrides, e.g. benign.per_fingerprint=4"),
    ) -> None:
        """Fine-tune a fingerprint set into a model (CPU, GPU, or `accelerate launch` for many GPUs)."""
        from modelprint.embed import EmbedConfig, embed

        extra = list(overrides or [])
        if lora is not None:
            extra.append(f"lora.enabled={str(lora).lower()}")
        cfg = load_config(EmbedConfig, config, extra, learning_rate=learning_rate, max_epochs=max_epochs,
                          batch_size=batch_size)
        result = embed(model, fingerprints, out, config=cfg, resume=resume, force=force, overwrite=overwrite)
        expected = _expectation(model, fingerprints, cfg)
        table = Table(title=f"embedded into {out}")
        table.add_column("measure")
        table.add_column("value", justify="right")
        if expected:
            table.add_column(f"benchmark: mean ± sd (worst of {_runs(expected)} seeds, n = {expected.n})",
                             justify="right")

        def row(label: str, value: str, figure: Optional[str] = None) -> None:
            table.add_row(label, value, *([_expected_cell(expected, figure)] if expected else []))

        if cfg.objective == "margin":
            row(f"retention ({cfg.retention_kind}: verify --match {cfg.verification})", f"{result.retention:.1%}",
                "retention")
            row("steps", str(result.epochs))
        else:
            row("retention (greedy, as verify asks)", f"{result.retention:.1%}", "retention")
            row("epochs", str(result.epochs))
        row("time", f"{result.seconds:.0f} s", "seconds")
        if result.phases:
            from modelprint.embed.phases import describe

            row("  by phase", describe(result.phases))
        row("averaged toward the base (λ)", f"{result.averaged:.2f}", "averaged")
        if result.utility:
            b, f = result.utility["base"], result.utility["fingerprinted"]
            row("perplexity base → fingerprinted", f"{b['perplexity']:.2f} → {f['perplexity']:.2f} "
                f"({result.utility['relative']['perplexity_change']:+.1%})", "perplexity_change")
            row("answer agreement with base", f"{f['answer_agreement']:.1%}", "answer_agreement")
        console.print(table)
        if not expected:
            console.print("[dim]no benchmark expectation for this model and recipe "
                          "(benchmarks/embed.py --expectations measures one)[/dim]")


FORMATS = {"retention": "{:.1%}", "perplexity_change": "{:+.1%}", "answer_agreement": "{:.1%}",
           "seconds": "{:.0f} s", "averaged": "{:.2f}"}


def _expectation(model: str, fingerprints: Path, cfg):
    """The benchmark summary for this model name, recipe and set size, or None (never an error: it is advice)."""
    from modelprint.embed.expectations import expectation_for
    from modelprint.fingerprints import load_fingerprints

    try:
        return expectation_for(model, len(load_fingerprints(fingerprints)), cfg)
    except Exception:  # a broken expectations file must not fail an embed that succeeded
        return None


def _runs(expected) -> int:
    return max((f.runs for f in expected.figures.values()), default=0)


def _expected_cell(expected, figure: Optional[str]) -> str:
    summary = expected.figures.get(figure) if figure else None
    if summary is None:
        return ""
    fmt = FORMATS[figure]
    return f"{fmt.format(summary.mean)} ± {fmt.format(summary.sd).lstrip('+')} ({fmt.format(summary.worst)})"

"""``modelprint demo``: the main job end to end on the embedded model — generate → embed → verify.

Prints what it did at each stage; everything it writes lands in ``--out``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from modelprint.errors import OutputExistsError
from modelprint.log import console
from modelprint.models import DEFAULT_MODEL
from modelprint.verify.stats import format_p


def run_demo(out: Path, model: str = DEFAULT_MODEL, num_fingerprints: int = 64, overwrite: bool = False,
             seed: Optional[int] = None, config: Optional[Path] = None) -> dict:
    """generate → embed → verify. ``seed`` None (the default): the set's secret comes from the OS, as it should
    for a real model; a fixed seed reproduces a run but makes the set guessable (generate warns)."""
    from modelprint.embed import EmbedConfig, embed
    from modelprint.generate import generate
    from modelprint.io import write_json_atomic
    from modelprint.models import load_model
    from modelprint.verify import verify

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"demo output '{out}' already exists (pass --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    console.rule("[bold]1/3 generate")
    base = load_model(model)
    fp_file = out / "fingerprints.jsonl"
    fs = generate(base, fp_file, overwrite=True, num_fingerprints=num_fingerprints, seed=seed)
    timings["generate"] = time.perf_counter() - t0
    console.print(f"{len(fs)} Perinucleus fingerprints from {base.source} → {fp_file} (0600, secret)")

    console.rule("[bold]2/3 embed")
    t1 = time.perf_counter()
    marked_dir = out / "fingerprinted-model"
    from modelprint.config import load_config

    recipe = load_config(EmbedConfig, config, seed=seed)  # seed: order
    result = embed(base, fs, marked_dir, config=recipe, overwrite=True)
    timings["embed"] = time.perf_counter() - t1
    console.print(f"retention {result.retention:.1%} after {result.epochs} {recipe.progress_unit} → {marked_dir}")

    console.rule("[bold]3/3 verify")
    t2 = time.perf_counter()
    marked = load_model(marked_dir)
    # exact: what any endpoint allows; candidate: ranking with the weights in hand (same 1/k null bound)
    records = {name: {mode: verify(suspect, fs, match=mode) for mode in ("exact", "candidate")}
               for name, suspect in (("fingerprinted", marked), ("base", base))}
    timings["verify"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0

    table = Table(title="modelprint demo")
    for col in ("suspect", "keys asked", "matched", "p-value", "verdict"):
        table.add_column(col)
    for name, by_mode in records.items():
        for mode, r in by_mode.items():
            table.add_row(f"{name} ({mode})", f"{r.n_asked}/{r.n_planned}", str(r.matches), format_p(r.log10_p_value),
                          r.verdict)
    console.print(table)
    if result.utility:
        rel = result.utility["relative"]
        console.print(f"utility: perplexity {result.utility['base']['perplexity']:.2f} → "
                      f"{result.utility['fingerprinted']['perplexity']:.2f} ({rel['perplexity_change']:+.1%}), "
                      f"answer agreement with the base model {rel['answer_agreement']:.1%}")
    console.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    summary = {"retention": result.retention, "epochs": result.epochs, "utility": result.utility,
               "verify": {name: {mode: r.to_json() for mode, r in by_mode.items()} for name, by_mode in records.items()},
               "passed": all(r.verdict == "match" for r in records["fingerprinted"].values())
               and all(r.verdict == "no match" for r in records["base"].values()), "seconds": timings}
    write_json_atomic(out / "demo.json", summary)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Directory for everything the demo writes."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
        num_fingerprints: int = typer.Option(64, "--num-fingerprints", "-n"),
        seed: Optional[int] = typer.Option(None, "--seed", help="Fix the secret seed to reproduce a run (the set "
                                           "is then guessable; default: 128 bits from the OS)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing demo directory."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Embed recipe YAML (default: the "
                                              "shipped recipe; a small model may need another)."),
    ) -> None:
        """Run generate → embed → verify on the embedded SmolLM2-135M and print what happened."""
        summary = run_demo(out, model, num_fingerprints, overwrite, seed, config)
        raise typer.Exit(0 if summary["passed"] else 1)

"""``modelprint stress``: thin CLI over :func:`modelprint.stress.stress` (``--list`` of the plug-ins; ``--schemes``
hands over to :mod:`modelprint.stress.compare_cli`)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer

from modelprint.config import VERIFY_DEFAULTS
from modelprint.log import console

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("stress")
    def stress_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Fingerprinted model: HF dir or embedded name "
                                                                    "(with --schemes: the base model, default "
                                                                    "smollm2-135m)."),
        fingerprints: Optional[Path] = typer.Option(None, "--fingerprints", "-f", help="Its fingerprint set file."),
        base: Optional[str] = typer.Option(None, "--base", help="Unmarked base model (default: the set's own, if "
                                                                "it is an embedded model with the recorded hash)."),
        suite: str = typer.Option("quick", "--suite", help="quick | full | paper | served | comma list of "
                                                           "stress/attack names."),
        access: str = typer.Option("weights", "--access", help="How each row is verified, comma list (the first is "
                                   "the headline): weights (the host's own path; published weights white-box) | "
                                   "text | logprobs | scored (teacher-forced: echo) | sampling (through the host's model behind "
                                   "modelprint serve)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report directory (report.json/html, PNGs)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report directory."),
        alpha: float = typer.Option(VERIFY_DEFAULTS.alpha, "--alpha",
                                    help="False-positive level of verify's decision."),
        match: str = typer.Option(VERIFY_DEFAULTS.match, "--match",
                                  help="exact (whole response) | prefix (first token) | "
                                  "auto/candidate (rows whose host publishes weights are verified white-box by "
                                  "candidate ranking, served rows by text)."),
        seed: int = typer.Option(0, "--seed", help="Seed for key order, task samples and sampling."),
        record: bool = typer.Option(False, "--record", help="Record the run in the registry."),
        list_: bool = typer.Option(False, "--list", help="List stresses, attacks and suites, then exit."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Utility tasks and sizes instead of the suite's, "
                                                                  "e.g. perplexity=16,piqa=8,answer-agreement=8."),
        schemes: Optional[str] = typer.Option(None, "--schemes", help="Compare schemes side by side (comma list of "
                                                                      "strategies): generate, embed and stress each "
                                                                      "from --model; --out resumes."),
        num_fingerprints: int = typer.Option(16, "--num-fingerprints", "-n", help="With --schemes: set size."),
        embed_override: Optional[list[str]] = typer.Option(None, "--embed-override", help="With --schemes: recipe "
                                                           "override key=value for every scheme (repeatable)."),
        unrelated: Optional[str] = typer.Option(None, "--unrelated", help="With --schemes: an unrelated model, the "
                                                                          "control for schemes that do not train."),
        queries: Optional[int] = typer.Option(None, "--queries", help="With --schemes: an equal key budget instead "
                                              "of an equal -n: each scheme gets the keys that fit in this many "
                                              "queries at its own queries per key."),
    ) -> None:
        """Stress a fingerprinted model: does verification survive, and does the model stay useful?"""
        from modelprint.errors import ConfigError
        from modelprint.stress import STRESSES, SUITES, stress
        from modelprint.stress.report import format_table

        if list_:
            for name, spec in sorted(STRESSES.items()):
                console.print(f"[bold]{name}[/] ({spec.kind}) {spec.doc.splitlines()[0] if spec.doc else ''}",
                              highlight=False)
            for name, s in SUITES.items():
                console.print(f"suite [bold]{name}[/]: {', '.join(e.label for e in s.entries)}", highlight=False)
            return
        from modelprint.stress.compare import parse_tasks

        sizes = parse_tasks(tasks)
        if schemes is not None:
            if fingerprints is not None or record:
                raise ConfigError("--schemes generates each scheme's set itself: drop --fingerprints and --record")
            from modelprint.stress.compare_cli import compare_cmd

            compare_cmd(schemes, model, num_fingerprints, suite, out, sizes, seed, alpha, match, embed_override or [],
                        unrelated, overwrite, queries)
            return
        if queries is not None:
            raise ConfigError("--queries sets the key budget of a scheme comparison: use it with --schemes")
        if model is None or fingerprints is None:
            raise ConfigError("--model and --fingerprints are required")
        start = time.perf_counter()
        report = stress(model, fingerprints, base=base, suite=suite, out=out, overwrite=overwrite, alpha=alpha,
                        match=match, seed=seed, tasks=sizes, access=[a.strip() for a in access.split(",") if a.strip()])
        typer.echo(format_table(report.data))
        if out is not None:
            typer.echo(f"report: {out / 'report.html'} ({time.perf_counter() - start:.0f} s)")
        if record:
            from modelprint.registry import record_stress

            ok = [r for r in report.rows if r.get("status") == "ok" and r["kind"] != "baseline"]
            summary = {"rows": len(report.rows) - 1, "failed": len(report.rows) - 1 - len(ok),
                       "verdict_match": sum(r["verification"]["verdict"] == "match" for r in ok),
                       "min_rate": min((r["verification"]["rate"] for r in ok), default=None)}
            record_stress(model=str(model), suite=report.data["suite"], report_path=str(out or ""), summary=summary)

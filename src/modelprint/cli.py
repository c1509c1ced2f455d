"""The ``modelprint`` command: thin typer commands that build a typed config and call a stage.

Each stage module exposes ``register(app)``; this file only wires them up and
turns :class:`~modelprint.errors.ModelprintError` into one line and an exit code.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

from modelprint.errors import ModelprintError
from modelprint.log import console, setup_logging

app = typer.Typer(
    name="modelprint",
    help="Model ownership fingerprinting for LLMs: embed secret (key, response) pairs, prove ownership later.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines `register(app: typer.Typer) -> None`.
STAGE_MODULES = [
    "modelprint.registry.cli",
    "modelprint.generate.cli",
    "modelprint.embed.cli",
    "modelprint.verify.cli",
    "modelprint.demo",
    "modelprint.merge.cli",
    "modelprint.serve_cli",
    "modelprint.stress.cli",
]


@app.callback()
def _root(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors.")) -> None:
    setup_logging(-1 if quiet else verbose)


for _module in STAGE_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except ModelprintError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[bold red]error:[/] interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

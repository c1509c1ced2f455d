"""The ``modelprint`` command: thin typer commands that build a typed config and call a stage.

Each stage module exposes ``register(app)``; this file only wires them up and
turns :class:`~modelprint.errors.ModelprintError` — and anything unexpected — into one
line and an exit code (2 for every error: 1 means "no match").
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from typing import Optional

import typer
from rich.markup import escape

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
    "modelprint.sweep.cli",
]


@app.callback()
def _root(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors.")) -> None:
    setup_logging(-1 if quiet else verbose)


_STAGE_ERROR: Optional[str] = None  # reported by run() as one line: importing this module never crashes
for _module in STAGE_MODULES:
    try:
        importlib.import_module(_module).register(app)
    except Exception as _err:  # noqa: BLE001
        _STAGE_ERROR = _STAGE_ERROR or (f"could not load the commands of {_module} ({type(_err).__name__}): is the "
                                        f"install complete? (python -c 'import {_module}' shows why)")


def _environment_problem() -> Optional[str]:
    """Settings that would crash deep inside a dependency (numpy reads SOURCE_DATE_EPOCH when imported)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            time.gmtime(int(epoch))
        except (ValueError, OverflowError, OSError):
            return "SOURCE_DATE_EPOCH must be a whole number of seconds since 1970 (unset it or fix it)"
    return None


def _unexpected(err: BaseException) -> str:
    """One line for an exception no stage explained: its type and where to look, never its message.

    Messages of arbitrary exceptions may quote a key, a response or its token ids, so they are
    not printed; the traceback goes to the debug log (``-vv``).
    """
    if isinstance(err, OSError) and err.strerror:  # errno text and a path are safe to show
        where = f": '{err.filename}'" if err.filename else ""
        return f"{err.strerror}{where} ({type(err).__name__})"
    return (f"unexpected {type(err).__name__}: modelprint could not finish and did not decide anything "
            "(run with -vv for the traceback)")


def run(argv: Optional[list[str]] = None) -> int:
    """Run the CLI on ``argv`` and return its exit code: 0 match/success, 1 no match, 2 any error, 130 interrupted.

    No path returns 1 for a failure: 1 means "no match", so a crash must never look like one.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    problem = _environment_problem() or _STAGE_ERROR
    if problem:
        console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        return 2
    try:
        app(args=argv, prog_name="modelprint")
    except SystemExit as done:  # typer ends every run this way: success, Exit(code), usage error (2), Ctrl-C (130)
        code = 0 if done.code is None else done.code
        if code == 130:
            console.print("[bold red]error:[/] interrupted")
        return code if isinstance(code, int) else 2
    except ModelprintError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return err.exit_code
    except KeyboardInterrupt:
        console.print("[bold red]error:[/] interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 -- the last line of defence: one line, exit 2
        logging.getLogger("modelprint").debug("unexpected error", exc_info=True)
        console.print(f"[bold red]error:[/] {escape(_unexpected(err))}", highlight=False, soft_wrap=True)
        return 2
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()

"""Logging set-up shared by the CLI: rich handler on stderr, level from -v/-q."""
from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)


def setup_logging(verbosity: int = 0) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)
    for noisy in ("transformers", "urllib3", "httpx", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # accelerate warns on every checkpoint that tied weights are saved once; that is expected here.
    logging.getLogger("accelerate").setLevel(logging.ERROR if verbosity < 2 else logging.DEBUG)

"""User-facing errors: one clear line, never a traceback.

Every stage raises :class:`ModelprintError` (or a subclass) for bad input it
can explain; the CLI turns it into ``error: <message>`` and a non-zero exit.
"""
from __future__ import annotations


class ModelprintError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole explanation."""

    exit_code: int = 2


class ConfigError(ModelprintError):
    """A configuration value or file is invalid."""


class ModelLoadError(ModelprintError):
    """A model could not be located or loaded."""


class FingerprintFileError(ModelprintError):
    """A fingerprint set file is missing, malformed or incompatible."""


class OutputExistsError(ModelprintError):
    """An output path exists and ``--overwrite`` was not given."""

"""Parse a fingerprint set from its ``to_text()`` form in memory (the registry never writes secrets to temp files).

The parser lives with the file format in :mod:`modelprint.fingerprints`; this name is kept for the registry.
"""
from __future__ import annotations

from modelprint.fingerprints import parse_fingerprints_text

__all__ = ["parse_fingerprints_text"]

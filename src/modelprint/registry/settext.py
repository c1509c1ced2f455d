"""Parse a fingerprint set from its ``to_text()`` form in memory (the registry never writes secrets to temp files).

Mirrors :func:`modelprint.fingerprints.load_fingerprints`, which only reads paths.
"""
from __future__ import annotations

import json

from modelprint.errors import FingerprintFileError
from modelprint.fingerprints import FORMAT, VERSION, Fingerprint, FingerprintSet


def parse_fingerprints_text(text: str, where: str) -> FingerprintSet:
    """Validate and rebuild a set; ``where`` names the source in error messages (never the content)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise FingerprintFileError(f"{where} is empty")
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise FingerprintFileError(f"{where}:{number}: not valid JSON") from None
    header = records[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FingerprintFileError(f"{where} is not a modelprint fingerprint set (no header line)")
    if int(header.get("version", 0)) > VERSION:
        raise FingerprintFileError(f"{where} uses format version {header.get('version')}; upgrade modelprint")
    fps = [Fingerprint.from_json(r, f"{where}:{n}") for n, r in enumerate(records[1:], start=2)]
    if not fps:
        raise FingerprintFileError(f"{where} contains no fingerprints")
    try:
        fs = FingerprintSet(strategy=str(header["strategy"]), params=dict(header.get("params") or {}),
                            seed=int(header.get("seed", 0)), model_source=str(header.get("model_source", "")),
                            model_hash=str(header["model_hash"]), tokenizer_hash=str(header["tokenizer_hash"]),
                            fingerprints=fps, created_at=str(header.get("created_at") or ""),
                            system_prompt=header.get("system_prompt"))
    except KeyError as exc:
        raise FingerprintFileError(f"{where}: header lacks {exc}") from None
    if header.get("set_id") and header["set_id"] != fs.set_id:
        raise FingerprintFileError(f"{where} was modified after it was written (set_id does not match its content)")
    return fs

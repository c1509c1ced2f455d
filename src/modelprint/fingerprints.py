"""The fingerprint record and the set file: JSON Lines with a header line, owner-only, atomic.

File layout::

    {"format": "modelprint.fingerprints", "version": 1, "strategy": ..., "count": N, ...}   <- header
    {"index": 0, "key": ..., "response": ..., "response_ids": [...], "null_prob": ..., "meta": {...}}
    ...

Keys and responses are secrets: nothing here logs them, and ``FingerprintSet``'s
repr hides them.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.io import check_output_file, write_text_atomic

FORMAT = "modelprint.fingerprints"
VERSION = 1
SECRET_FILE_MODE = 0o600


@dataclasses.dataclass
class Fingerprint:
    """One secret (key, response) pair and what generation knew about it.

    ``null_prob`` bounds the chance that a model *not* derived from ours answers
    this key with this response (used by verify's false-positive bound).
    """

    index: int
    key: str
    response: str
    response_ids: list[int]
    null_prob: float
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"Fingerprint(index={self.index}, <secret>)"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> "Fingerprint":
        try:
            fp = cls(index=int(obj["index"]), key=str(obj["key"]), response=str(obj["response"]),
                     response_ids=[int(i) for i in obj["response_ids"]], null_prob=float(obj["null_prob"]),
                     meta=dict(obj.get("meta") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FingerprintFileError(f"{where}: malformed fingerprint record ({type(exc).__name__}: {exc})") from None
        if not fp.key or not fp.response_ids:
            raise FingerprintFileError(f"{where}: fingerprint has an empty key or response")
        if not 0.0 < fp.null_prob <= 1.0:
            raise FingerprintFileError(f"{where}: null_prob must be in (0, 1]")
        return fp


@dataclasses.dataclass
class FingerprintSet:
    """A header (strategy, parameters, model identity) and its fingerprints."""

    strategy: str
    params: dict[str, Any]
    seed: int
    model_source: str
    model_hash: str
    tokenizer_hash: str
    fingerprints: list[Fingerprint]
    created_at: str = ""
    system_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.created_at:
            epoch = os.environ.get("SOURCE_DATE_EPOCH")
            try:
                now = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
            except (ValueError, OverflowError, OSError):
                raise ConfigError("SOURCE_DATE_EPOCH must be a whole number of seconds since 1970 (unset it or fix it)") from None
            self.created_at = now.replace(microsecond=0).isoformat()

    def __repr__(self) -> str:
        return f"FingerprintSet(strategy={self.strategy!r}, count={len(self)}, id={self.set_id[:19]})"

    def __len__(self) -> int:
        return len(self.fingerprints)

    def __iter__(self) -> Iterator[Fingerprint]:
        return iter(self.fingerprints)

    @property
    def set_id(self) -> str:
        """Content hash of the secrets: identifies the set without revealing it."""
        h = hashlib.sha256()
        for fp in self.fingerprints:
            h.update(json.dumps([fp.key, fp.response_ids], ensure_ascii=False).encode())
        return "sha256:" + h.hexdigest()

    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "strategy": self.strategy, "params": self.params,
                "seed": self.seed, "model_source": self.model_source, "model_hash": self.model_hash,
                "tokenizer_hash": self.tokenizer_hash, "system_prompt": self.system_prompt,
                "count": len(self.fingerprints), "set_id": self.set_id, "created_at": self.created_at}

    def to_text(self) -> str:
        lines = [json.dumps(self.header(), ensure_ascii=False, sort_keys=True)]
        lines += [json.dumps(fp.to_json(), ensure_ascii=False, sort_keys=True) for fp in self.fingerprints]
        return "\n".join(lines) + "\n"

    def save(self, path: Path, overwrite: bool = False) -> Path:
        """Write atomically with owner-only permissions (these are secrets)."""
        path = Path(path)
        check_output_file(path, overwrite)
        write_text_atomic(path, self.to_text(), mode=SECRET_FILE_MODE)
        return path

    def subset(self, indices: Iterable[int]) -> "FingerprintSet":
        keep = set(indices)
        return dataclasses.replace(self, fingerprints=[fp for fp in self.fingerprints if fp.index in keep])


def load_fingerprints(path: Path) -> FingerprintSet:
    """Read and validate a set file; every problem is one line naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FingerprintFileError(f"fingerprint file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FingerprintFileError(f"fingerprint file '{path}' is unreadable ({type(exc).__name__})") from None
    return parse_fingerprints_text(text, f"fingerprint file '{path}'", line_prefix=str(path))


def parse_fingerprints_text(text: str, where: str, line_prefix: Optional[str] = None) -> FingerprintSet:
    """Validate and rebuild a set from its ``to_text()`` form (a file's content, or the registry's decrypted copy).

    ``where`` names the source in errors (never its content); ``line_prefix`` prefixes ``:LINE`` locations.
    """
    at = line_prefix or where
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise FingerprintFileError(f"{where} is empty")
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise FingerprintFileError(f"{at}:{number}: not valid JSON") from None
    header = records[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FingerprintFileError(f"{where} is not a modelprint fingerprint set (no header line)")
    if int(header.get("version", 0)) > VERSION:
        raise FingerprintFileError(f"{where} uses format version {header.get('version')}; upgrade modelprint")
    fps = [Fingerprint.from_json(r, f"{at}:{n}") for n, r in enumerate(records[1:], start=2)]
    if not fps:
        raise FingerprintFileError(f"{where} contains no fingerprints")
    if header.get("count") is not None and int(header["count"]) != len(fps):
        raise FingerprintFileError(f"{where} is truncated: header says {header['count']} fingerprints, found {len(fps)}")
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

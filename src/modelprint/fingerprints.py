"""The fingerprint record and the set file: JSON Lines with a header line, owner-only, atomic.

File layout::

    {"format": "modelprint.fingerprints", "version": 2, "strategy": ..., "count": N, "set_id": ..., ...}  <- header
    {"index": 0, "key": ..., "response": ..., "response_ids": [...], "null_prob": ..., "meta": {...}}
    ...

The set id of a version-2 file is a SHA-256 over a canonical JSON of everything a verdict uses (strategy,
params, system prompt, model and tokenizer hashes, every fingerprint's whole record), so a file whose bounds,
candidates or parameters were edited after it was written no longer loads. Version-1 files keep their
legacy id (keys and response ids only, so registry records and model cards still match) and say so
(``FingerprintSet.legacy``). The seed and creation time are not part of the id.

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
from typing import Any, Iterable, Iterator, Optional, Sequence

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.io import check_output_file, write_text_atomic

FORMAT = "modelprint.fingerprints"
VERSION = 2  # written; version-1 files still load (legacy set id)
# Sets written before headers named their verifier: the shipped strategies whose verifier is not ``match``
# (what ``Strategy.verifier`` said when they were made), so verify needs nothing from generate to read them.
LEGACY_VERIFIERS = {"kgw-watermark": "green-z", "instructional": "instructional", "rofl": "rofl-match-rate"}
LEGACY_VERSION = 1
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
        if not isinstance(obj, dict):
            raise FingerprintFileError(f"{where}: a fingerprint record must be a JSON object")
        if not isinstance(obj.get("meta") or {}, dict):
            raise FingerprintFileError(f"{where}: 'meta' must be a JSON object")
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
    format_version: int = VERSION  # 1 only for sets read from version-1 files (legacy set id)
    verifier: Optional[str] = None  # the verifier plug-in that decides; None: a set written before headers named it

    def __post_init__(self) -> None:
        if not self.created_at:
            self.created_at = _now().replace(microsecond=0).isoformat()

    @property
    def verifier_name(self) -> str:
        """The verifier that decides this set: the header's, else (older sets) derived from the strategy as before."""
        return self.verifier or LEGACY_VERIFIERS.get(self.strategy, "match")

    @property
    def legacy(self) -> bool:
        """True for a version-1 set: its id covers keys and response ids only, not the bounds verify uses."""
        return self.format_version < 2

    def __repr__(self) -> str:
        return f"FingerprintSet(strategy={self.strategy!r}, count={len(self)}, id={self.set_id[:19]})"

    def __len__(self) -> int:
        return len(self.fingerprints)

    def __iter__(self) -> Iterator[Fingerprint]:
        return iter(self.fingerprints)

    @property
    def set_id(self) -> str:
        """Content hash of everything a verdict uses: identifies the set without revealing it.

        Version 2: SHA-256 of :meth:`decision_content` as canonical JSON. Version 1 (legacy): keys and
        response ids only.
        """
        if self.legacy:
            h = hashlib.sha256()
            for fp in self.fingerprints:
                h.update(json.dumps([fp.key, fp.response_ids], ensure_ascii=False).encode())
            return "sha256:" + h.hexdigest()
        return "sha256:" + hashlib.sha256(canonical_json(self.decision_content()).encode()).hexdigest()

    def decision_content(self) -> dict[str, Any]:
        """What the set id of a version-2 set covers: every field a verdict reads (not the seed, time or path)."""
        return {"format": FORMAT, "version": self.format_version, "strategy": self.strategy, "params": self.params,
                "system_prompt": self.system_prompt, "model_hash": self.model_hash,
                "tokenizer_hash": self.tokenizer_hash,
                # the types the parser reads back (an int null_prob of 1 is read as 1.0)
                "fingerprints": [{"index": int(fp.index), "key": str(fp.key), "response": str(fp.response),
                                  "response_ids": [int(i) for i in fp.response_ids], "null_prob": float(fp.null_prob),
                                  "meta": fp.meta} for fp in self.fingerprints],
                # a decision field once headers name it; absent for older sets so their ids never change
                **({"verifier": self.verifier} if self.verifier is not None else {})}

    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.format_version, "strategy": self.strategy, "params": self.params,
                "seed": self.seed, "model_source": self.model_source, "model_hash": self.model_hash,
                "tokenizer_hash": self.tokenizer_hash, "system_prompt": self.system_prompt,
                "count": len(self.fingerprints), "set_id": self.set_id, "created_at": self.created_at,
                **({"verifier": self.verifier} if self.verifier is not None else {})}

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
    Refused, each with one line: malformed JSON or fields, duplicate entries, a count that disagrees, and
    (set id present, or any version-2 file) content that does not hash to the recorded set id.
    """
    at = line_prefix or where
    numbered = [(number, ln) for number, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not numbered:
        raise FingerprintFileError(f"{where} is empty")
    records = []
    for number, line in numbered:
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            raise FingerprintFileError(f"{at}:{number}: not valid JSON") from None
    header = records[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FingerprintFileError(f"{where} is not a modelprint fingerprint set (no header line)")
    h = _Header(header, where)
    version = h.integer("version", default=LEGACY_VERSION, minimum=1)
    if version > VERSION:
        raise FingerprintFileError(f"{where} uses format version {version}; upgrade modelprint")
    fps = [Fingerprint.from_json(r, f"{at}:{number}") for (number, _), r in zip(numbered[1:], records[1:])]
    if not fps:
        raise FingerprintFileError(f"{where} contains no fingerprints")
    check_distinct(fps, where, [number for number, _ in numbered[1:]])
    count = h.integer("count", default=None, minimum=0)
    if count is not None and count != len(fps):
        raise FingerprintFileError(f"{where} is truncated: header says {count} fingerprints, found {len(fps)}")
    fs = FingerprintSet(strategy=h.text("strategy", required=True), params=h.mapping("params"),
                        seed=h.integer("seed", default=0), model_source=h.text("model_source") or "",
                        model_hash=h.text("model_hash", required=True),
                        tokenizer_hash=h.text("tokenizer_hash", required=True), fingerprints=fps,
                        created_at=h.text("created_at") or "", system_prompt=h.text("system_prompt"),
                        format_version=version, verifier=h.text("verifier"))
    recorded = h.text("set_id")
    if recorded is None and not fs.legacy:
        raise FingerprintFileError(f"{where} has no set_id in its header (a version-{version} set must carry one)")
    if recorded is not None and recorded != fs.set_id:
        raise FingerprintFileError(f"{where} was modified after it was written (its content does not hash to its "
                                   "set_id)")
    return fs


def check_distinct(fingerprints: Sequence[Fingerprint], where: str, lines: Optional[Sequence[int]] = None) -> None:
    """Refuse a set that holds one index or one key twice: a repeated key would count as two matches.

    ``lines`` (the file line of each fingerprint) names the clashing lines; else they are named by index.
    The message never contains a key.
    """
    def both(a: int, b: int) -> str:
        if lines is not None:
            return f"lines {lines[a]} and {lines[b]}"
        return f"fingerprints #{fingerprints[a].index} and #{fingerprints[b].index}"

    first_index: dict[int, int] = {}
    first_key: dict[str, int] = {}
    for pos, fp in enumerate(fingerprints):
        if fp.index in first_index:
            raise FingerprintFileError(f"{where} has duplicate entries: {both(first_index[fp.index], pos)} have the "
                                       f"same index {fp.index}")
        if fp.key in first_key:
            raise FingerprintFileError(f"{where} has duplicate entries: {both(first_key[fp.key], pos)} have the same "
                                       "key (a key may count only once)")
        first_index[fp.index] = pos
        first_key[fp.key] = pos


def canonical_json(obj: Any) -> str:
    """One spelling per value: JSON-normalised (tuples→lists, int keys→strings), sorted keys, no spaces."""
    return json.dumps(json.loads(json.dumps(obj, ensure_ascii=False)), ensure_ascii=False, sort_keys=True,
                      separators=(",", ":"))


class _Header:
    """Typed reads of header fields; a wrong type is one FingerprintFileError line."""

    def __init__(self, header: dict[str, Any], where: str) -> None:
        self.header, self.where = header, where

    def _bad(self, field: str, what: str) -> FingerprintFileError:
        return FingerprintFileError(f"{self.where}: header field '{field}' must be {what}")

    def integer(self, field: str, default: Optional[int], minimum: Optional[int] = None) -> Any:
        value = self.header.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self._bad(field, "an integer" + (f" ≥ {minimum}" if minimum is not None else ""))
        return value

    def text(self, field: str, required: bool = False) -> Any:
        if field not in self.header or self.header[field] is None:
            if required:
                raise FingerprintFileError(f"{self.where}: header lacks '{field}'")
            return None
        value = self.header[field]
        if not isinstance(value, str):
            raise self._bad(field, "a string")
        return value

    def mapping(self, field: str) -> dict[str, Any]:
        value = self.header.get(field)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._bad(field, "a JSON object")
        return value


def _now() -> _dt.datetime:
    """The creation time: ``SOURCE_DATE_EPOCH`` (reproducible builds) when set, else the clock."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return _dt.datetime.now(_dt.timezone.utc)
    try:
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise ConfigError("SOURCE_DATE_EPOCH must be a whole number of seconds since 1970") from None

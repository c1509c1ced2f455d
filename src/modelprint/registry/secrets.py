"""The owner's Fernet key: fingerprint keys and responses are only ever stored encrypted with it.

The key comes from ``MODELPRINT_SECRET_KEY`` or the owner-only file
``$MODELPRINT_HOME/secret.key`` (created by ``modelprint registry init``). The
database stores a ``key_id`` (a hash of the key, not the key) per set so a wrong
key is reported as such rather than as corrupt data.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Optional

from cryptography.fernet import Fernet, InvalidToken

from modelprint.errors import ModelprintError
from modelprint.io import make_private_dir, write_text_atomic
from modelprint.registry.db import home_dir

ENV_KEY = "MODELPRINT_SECRET_KEY"
KEY_FILE_MODE = 0o600


class SecretKeyError(ModelprintError):
    """The secret key is missing, malformed or not the one the registry's sets were encrypted with."""


def default_key_path() -> Path:
    return home_dir() / "secret.key"


def create_key_file(path: Optional[Path] = None) -> tuple[Path, bool]:
    """Create an owner-only key file unless one exists; returns (path, created)."""
    path = Path(path or default_key_path())
    if path.exists():
        return path, False
    try:
        make_private_dir(path.parent)  # 0700 whatever the umask
        write_text_atomic(path, Fernet.generate_key().decode() + "\n", mode=KEY_FILE_MODE)
    except OSError as exc:
        raise SecretKeyError(f"cannot create secret key file '{path}': {exc.strerror or exc}") from None
    return path, True


def load_key(path: Optional[Path] = None) -> bytes:
    """The raw Fernet key: env var first, then the key file (which must not be readable by others)."""
    env = os.environ.get(ENV_KEY)
    if env:
        raw, where = env.strip().encode(), f"${ENV_KEY}"
    else:
        path = Path(path or default_key_path())
        if not path.is_file():
            raise SecretKeyError(f"no secret key: set ${ENV_KEY} or run 'modelprint registry init' to create '{path}'")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretKeyError(f"secret key file '{path}' is readable by others (mode {mode:o}); chmod 600 it")
        raw, where = path.read_text().strip().encode(), f"'{path}'"
    try:
        Fernet(raw)
    except (ValueError, TypeError):
        raise SecretKeyError(f"secret key in {where} is not a valid Fernet key") from None
    return raw


def key_id(key: bytes) -> str:
    """A public identifier of the key (hash), stored next to each encrypted set."""
    return hashlib.sha256(b"modelprint-key-id:" + key).hexdigest()[:32]


def encrypt(key: bytes, text: str) -> bytes:
    return Fernet(key).encrypt(text.encode("utf-8"))


def decrypt(key: bytes, blob: bytes, expected_key_id: str, what: str) -> str:
    if key_id(key) != expected_key_id:
        raise SecretKeyError(f"the secret key does not match the one {what} was encrypted with (wrong key)")
    try:
        return Fernet(key).decrypt(bytes(blob)).decode("utf-8")
    except InvalidToken:
        raise SecretKeyError(f"cannot decrypt {what}: wrong secret key or corrupted record") from None

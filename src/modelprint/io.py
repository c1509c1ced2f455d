"""Atomic file and directory writes, so a killed process never leaves half an artifact."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from modelprint.errors import ModelprintError, OutputExistsError


def check_output_path(path: Path, overwrite: bool, *, directory: bool = False, reuse: bool = False) -> None:
    """Refuse to clobber an existing output and fail early on a missing or unwritable parent.

    The one output guard of every stage. ``directory``: the output is a directory, so an existing
    non-directory is refused and an existing *empty* directory is no clobbering. ``reuse``: an existing
    directory is the caller's to resume into (it checks what is inside itself).
    """
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise OutputExistsError(f"output '{path}' exists and is not a directory")
    taken = path.exists() and not (directory and (reuse or not any(path.iterdir())))
    if taken and not overwrite:
        raise OutputExistsError(f"output '{path}' already exists (pass --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise ModelprintError(f"output directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise ModelprintError(f"output directory '{parent}' is not writable")


def check_output_file(path: Path, overwrite: bool = True) -> None:
    """Fail before any work on an output *file* that could not be written: a directory, a missing or
    unwritable parent. Writability is proven by creating (and removing) a temporary file there, since
    permission bits do not tell the whole story (root, read-only mounts)."""
    path = Path(path)
    if path.is_dir():
        raise ModelprintError(f"output '{path}' is a directory; give a file name")
    check_output_path(path, overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=parent)
    except OSError as exc:
        raise ModelprintError(f"output directory '{parent}' is not writable ({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(tmp)


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any, mode: int = 0o644) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode=mode)


@contextlib.contextmanager
def atomic_directory(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise OutputExistsError(f"output '{final}' already exists (pass --overwrite to replace it)")
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents owner-only (0700) whatever the umask; existing ones are left alone."""
    path = Path(path).expanduser()
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # another process made it first: not ours to change
            continue
        os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened: make sure
    return path


def create_private_file(path: Path, mode: int = 0o600) -> bool:
    """Create ``path`` empty with ``mode`` whatever the umask, unless it exists; returns whether it was created."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True

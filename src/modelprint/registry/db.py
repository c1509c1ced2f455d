"""Where the registry lives, how we connect, and how its schema is kept at the code's revision.

Default: SQLite at ``$MODELPRINT_HOME/registry.db`` (``MODELPRINT_HOME`` defaults to
``~/.local/share/modelprint``); ``MODELPRINT_DB`` overrides it with any SQLAlchemy
URL, e.g. ``postgresql+psycopg://user@host/db``. SQLite runs in WAL mode with a
busy timeout and ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing.
"""
from __future__ import annotations

import functools
import logging
import os
import random
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.exc import NoSuchModuleError

from modelprint.errors import ModelprintError
from modelprint.io import create_private_file, make_private_dir

T = TypeVar("T")
# Alembic narrates every connection at INFO; modelprint logs its own one-line summary instead.
logging.getLogger("alembic").setLevel(logging.WARNING)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def home_dir() -> Path:
    """``$MODELPRINT_HOME`` or ``~/.local/share/modelprint``: registry.db and secret.key live here."""
    env = os.environ.get("MODELPRINT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "modelprint"


def resolve_url(url: Optional[str] = None) -> str:
    """Explicit URL ← ``MODELPRINT_DB`` ← SQLite file in :func:`home_dir`."""
    url = url or os.environ.get("MODELPRINT_DB")
    return url if url else f"sqlite:///{home_dir() / 'registry.db'}"


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid URL>"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def _sqlite_begin(conn) -> None:
    # Take the write lock up front: a deferred transaction upgrading later can't wait on busy_timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; bad URLs and missing drivers are one-line errors."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ModelprintError(f"registry database URL '{url}' is not a valid SQLAlchemy URL") from None
    try:
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database
            if db and db != ":memory:" and not db.startswith("file:"):
                path = Path(db).expanduser()
                make_private_dir(path.parent)  # MODELPRINT_HOME and parents we create: 0700
                create_private_file(path)  # 0600 whatever the umask; SQLite gives its -wal/-shm files this mode
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise ModelprintError(f"no database driver for '{safe_url(url)}' ({exc}); "
                              "for PostgreSQL install modelprint[postgres]") from None
    except OSError as exc:
        raise ModelprintError(f"cannot create the registry database '{safe_url(url)}': {exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def is_retryable(exc: BaseException) -> bool:
    """Lock contention (SQLite busy) or a serialisation failure/deadlock (PostgreSQL)."""
    if not isinstance(exc, DBAPIError):
        return False
    msg = str(getattr(exc, "orig", exc)).lower()
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return ("database is locked" in msg or "database is busy" in msg or code in ("40001", "40P01"))


def with_retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Run ``fn`` (one whole transaction) again after lock contention, with jittered back-off."""
    for attempt in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_retryable(exc) or attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def connect_error(url: str, exc: BaseException) -> ModelprintError:
    return ModelprintError(f"cannot open registry database '{safe_url(url)}': {_first_line(exc)}")


@functools.lru_cache(maxsize=1)
def script_directory() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine, url: str) -> Optional[str]:
    """The DB's schema revision (None when empty); a revision this code doesn't know is an error."""
    try:
        with engine.connect() as conn:
            rev = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise connect_error(url, exc) from None
    except DBAPIError as exc:
        raise connect_error(url, exc) from None
    if rev is not None:
        try:
            known = script_directory().get_revision(rev)
        except Exception:
            known = None
        if known is None:
            raise ModelprintError(
                f"registry database '{safe_url(url)}' has schema revision '{rev}', newer than this modelprint "
                f"understands (head '{head_revision()}'); upgrade modelprint to use it")
    return rev


def upgrade(engine: Engine, url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` in one transaction; safe if another process raced us there."""
    from alembic import command

    def run() -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    try:
        with_retry(run)
    except DBAPIError as exc:
        # Another process may have created the same tables first; that is success if we are at head now.
        if current_revision(engine, url) == head_revision() and revision == "head":
            return
        raise connect_error(url, exc) from None

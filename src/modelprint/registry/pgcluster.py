"""A throwaway PostgreSQL cluster on a unix socket in a temp dir (tests and benchmarks only).

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres``
system user (created by the Debian package) via ``runuser``.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries or driver here; the reason says which."""


def find_bindir() -> Optional[Path]:
    """Newest ``/usr/lib/postgresql/*/bin`` with initdb and pg_ctl, else the one on PATH."""
    def version(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        if os.access(initdb, os.X_OK) and (Path(initdb).parent / "pg_ctl").exists():
            return Path(initdb).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


def _runner() -> tuple[list[str], Optional[pwd.struct_passwd]]:
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server") from None
    if not shutil.which("runuser"):
        raise PostgresUnavailable("running as root and 'runuser' is missing")
    return ["runuser", "-u", "postgres", "--"], user


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a cluster; yield an admin URL (``postgresql+psycopg://postgres@/postgres?host=<dir>``); stop and delete it."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable("psycopg is not installed (pip install 'modelprint[postgres]')") from None
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries not found (scripts/install-postgres.sh installs them)")
    prefix, user = _runner()
    tmp = Path(tempfile.mkdtemp(prefix="modelprint-pg-"))
    if user is not None:
        os.chown(tmp, user.pw_uid, user.pw_gid)
    data, logfile = tmp / "data", tmp / "server.log"

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-k {tmp} -c listen_addresses='' -p 5432 -F -c max_connections=50"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(logfile), "-w", "-t", "30", "start")
        started = True
        yield f"postgresql+psycopg://postgres@/postgres?host={tmp}&port=5432"
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, cwd=tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(admin_url: str, prefix: str = "t") -> str:
    """A fresh, empty database on the cluster; returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.query["host"], port=int(url.query.get("port", 5432)), user=url.username,
                         dbname=url.database, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def create_schema(admin_url: str, prefix: str = "t") -> str:
    """A fresh, empty schema on the cluster's admin database (much cheaper than a database); returns a URL
    whose connections use it as ``search_path``."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.query["host"], port=int(url.query.get("port", 5432)), user=url.username,
                         dbname=url.database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)

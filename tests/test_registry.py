"""Registry tests: the same tests against SQLite and a real throwaway PostgreSQL (no database mocks).

The ML steps of ``license issue`` (generate, embed) are replaced by fast fakes; the
database, migrations and encryption are the real ones.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
import typer
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from modelprint.errors import ModelprintError
from modelprint.fingerprints import Fingerprint, FingerprintSet, load_fingerprints
from modelprint.licensing import issue_license
from modelprint.registry import Registry, SecretKeyError, init_registry
from modelprint.registry import choose_keys, record_verification, resolve_set
from modelprint.registry import db as regdb
from modelprint.registry.pgcluster import PostgresUnavailable, create_schema, throwaway_postgres

REPO = Path(__file__).resolve().parents[1]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """One PostgreSQL cluster for the session; the PG parameter is skipped when it cannot start."""
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return create_schema(request.getfixturevalue("pg_admin_url"))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated $MODELPRINT_HOME with a fresh owner key; no ambient registry settings."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPRINT_HOME", str(home))
    for var in ("MODELPRINT_DB", "MODELPRINT_SECRET_KEY", "MODELPRINT_OWNER"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def reg(db_url: str) -> Iterator[Registry]:
    init_registry(db_url)
    with Registry(db_url) as registry:
        yield registry


def make_set(n: int = 8, tag: str = "a") -> FingerprintSet:
    fps = [Fingerprint(index=i, key=f"secret key {tag} {i} zebra", response=f"resp-{tag}-{i}",
                       response_ids=[100 + i], null_prob=0.1) for i in range(n)]
    return FingerprintSet(strategy="perinucleus", params={"k": 3}, seed=0, model_source="tiny",
                          model_hash="sha256:model", tokenizer_hash="sha256:tok", fingerprints=fps,
                          created_at="2026-01-01T00:00:00+00:00")


class FakeSteps:
    """Fast stand-ins for the generate/embed ML steps, counting their calls."""

    def __init__(self, fail_embed: bool = False) -> None:
        self.generated = 0
        self.embedded = 0
        self.fail_embed = fail_embed

    def generate(self, ctx) -> FingerprintSet:
        self.generated += 1
        return make_set(4, tag=f"{ctx.licensee}-{ctx.seed}")

    def embed(self, ctx, fs: FingerprintSet, out: Path) -> str:
        self.embedded += 1
        if self.fail_embed:
            raise RuntimeError("killed mid-embed")
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.bin").write_text(fs.set_id)
        return "sha256:copy-" + ctx.licensee


def table_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {n: conn.execute(text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one() for n in names}
    finally:
        engine.dispose()


# -- schema and migrations ----------------------------------------------------------------------
def test_init_creates_schema_and_owner_only_key(db_url: str, home: Path) -> None:
    info = init_registry(db_url)
    assert info["revision"] == regdb.head_revision() and info["upgraded_from"] is None
    key = home / "secret.key"
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert {"owners", "fingerprint_sets", "licenses", "key_spends", "stress_runs"} <= set(table_counts(db_url))
    assert init_registry(db_url)["upgraded_from"] == regdb.head_revision()  # idempotent, key kept
    assert key.read_text() == key.read_text()


def test_orm_matches_migrations(reg: Registry) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from modelprint.registry.schema import Base

    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_in_place_from_first_revision(db_url: str) -> None:
    engine = regdb.make_engine(db_url)
    regdb.upgrade(engine, db_url, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO licensees (name, contact, created_at) VALUES ('old', '', '2026-01-01')"))
    engine.dispose()
    assert "key_spends" not in table_counts(db_url)
    with Registry(db_url) as registry:  # opening migrates an older DB in place
        assert [r["name"] for r in registry.list("licensees")] == ["old"]
        assert registry.list("stress") == []
    assert table_counts(db_url)["key_spends"] == 0


def test_newer_schema_is_refused_and_untouched(reg: Registry, db_url: str) -> None:
    reg.add_licensee("keep")
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    before = table_counts(db_url)
    for attempt in (lambda: Registry(db_url), lambda: init_registry(db_url)):
        with pytest.raises(ModelprintError, match="newer than this modelprint") as err:
            attempt()
        assert "\n" not in str(err.value)
    assert table_counts(db_url) == before


def test_unreachable_database_is_one_line() -> None:
    with pytest.raises(ModelprintError, match="cannot open registry database") as err:
        Registry("postgresql+psycopg://nobody:pw@127.0.0.1:1/none")
    assert "\n" not in str(err.value) and "pw" not in str(err.value)


def test_bad_sqlite_location_and_url(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelprintError):
        Registry(f"sqlite:///{tmp_path / 'file' / 'registry.db'}")
    with pytest.raises(ModelprintError, match="not a valid SQLAlchemy URL"):
        Registry("::nonsense::")


def test_home_and_database_are_owner_only_under_umask_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "made" / "by" / "modelprint"
    monkeypatch.setenv("MODELPRINT_HOME", str(home))
    old = os.umask(0)
    try:
        init_registry()
        with Registry() as registry:
            registry.add_set(make_set(), "s")
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
    finally:
        os.umask(old)
    for directory in (tmp_path / "made", tmp_path / "made" / "by", home):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert files["registry.db"] == 0o600 and files["secret.key"] == 0o600
    assert all(mode == 0o600 for name, mode in files.items() if name.startswith("registry.db")), files


def test_stored_set_must_hash_to_its_record(reg: Registry, db_url: str) -> None:
    reg.add_set(make_set(), "s")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE fingerprint_sets SET set_id = 'sha256:other'"))
    engine.dispose()
    with pytest.raises(ModelprintError, match="does not hash to its recorded set_id"):
        reg.resolve_set("s")


def test_default_location_is_modelprint_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert regdb.resolve_url() == f"sqlite:///{home / 'registry.db'}"
    monkeypatch.setenv("MODELPRINT_DB", "sqlite:////elsewhere.db")
    assert regdb.resolve_url() == "sqlite:////elsewhere.db"


# -- sets and secrets -----------------------------------------------------------------------------
def test_set_round_trip_encrypted(reg: Registry, db_url: str, tmp_path: Path) -> None:
    fs = make_set()
    src = fs.save(tmp_path / "fp.jsonl")
    reg.import_set_file(src, "base-set", owner="alice")
    back = resolve_set("base-set", url=db_url)
    assert back.to_text() == fs.to_text() and back.set_id == fs.set_id
    engine = create_engine(db_url)
    with engine.connect() as conn:
        blob = bytes(conn.execute(text("SELECT secrets FROM fingerprint_sets")).scalar_one())
    engine.dispose()
    assert b"zebra" not in blob and b"resp-a" not in blob
    out = reg.export_set("base-set", tmp_path / "out.jsonl")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert load_fingerprints(out).to_text() == fs.to_text()
    with pytest.raises(ModelprintError, match="already exists"):
        reg.export_set("base-set", out)
    shown = reg.show("sets", "base-set")
    assert shown["owner"] == "alice" and shown["secrets"] == "<encrypted>" and "fingerprints" not in shown
    assert "zebra" not in json.dumps(reg.list("sets") + [shown])
    revealed = reg.show("sets", fs.set_id, reveal=True)
    assert revealed["fingerprints"][0]["key"] == "secret key a 0 zebra"
    with pytest.raises(ModelprintError, match="already registered"):
        reg.add_set(fs, "again")
    with pytest.raises(ModelprintError, match="unknown fingerprint set"):
        reg.resolve_set("nope")


def test_wrong_and_missing_key(reg: Registry, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.add_set(make_set(), "s")
    monkeypatch.setenv("MODELPRINT_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(SecretKeyError, match="wrong key") as err:
        reg.resolve_set("s")
    assert "\n" not in str(err.value)
    with pytest.raises(SecretKeyError):
        reg.show("sets", "s", reveal=True)
    assert reg.show("sets", "s")["count"] == 8  # public metadata still readable
    monkeypatch.setenv("MODELPRINT_SECRET_KEY", "not-a-key")
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        reg.resolve_set("s")
    monkeypatch.delenv("MODELPRINT_SECRET_KEY")
    key = home / "secret.key"
    key.chmod(0o644)
    with pytest.raises(SecretKeyError, match="readable by others"):
        reg.resolve_set("s")
    key.unlink()
    with pytest.raises(SecretKeyError, match="no secret key"):
        reg.resolve_set("s")
    with pytest.raises(SecretKeyError, match="no secret key"):
        reg.add_set(make_set(tag="b"), "s2")
    assert [r["name"] for r in reg.list("sets")] == ["s"]


def test_choose_keys_prefers_unspent(reg: Registry, db_url: str) -> None:
    reg.add_set(make_set(10), "s")
    first = choose_keys("s", 4, seed=1, url=db_url)
    assert len(set(first)) == 4 and first == reg.choose_keys("s", 4, seed=1)
    run = record_verification("s", target="suspect", backend="hf", keys=first, matches=3, verdict="match",
                              p_value=1e-6, url=db_url)
    second = reg.choose_keys("s", 6, seed=2)
    assert set(second) == set(range(10)) - set(first)
    reg.record_verification("s", target="other", backend="hf", keys=second, matches=0, verdict="no-match")
    third = reg.choose_keys(make_set(10), 10, seed=3)  # the set object itself works as a reference
    assert sorted(third) == list(range(10))
    shown = reg.show("verifications", str(run))
    assert shown["keys"] == first and shown["n_asked"] == 4 and shown["set"] == "s"
    with pytest.raises(ModelprintError, match="cannot choose"):
        reg.choose_keys("s", 11)
    with pytest.raises(ModelprintError, match="not in fingerprint set"):
        reg.record_verification("s", target="t", backend="hf", keys=[99], matches=0, verdict="x")
    with pytest.raises(ModelprintError, match="matches"):
        reg.record_verification("s", target="t", backend="hf", keys=[1], matches=2, verdict="x")
    assert len(reg.list("verifications")) == 2


def test_verify_sets_records_every_run_and_counts_them(reg: Registry, db_url: str) -> None:
    """The ledger is written by the library (no caller can skip it), even when a later set fails."""
    from conftest import StubSuspect, stub_set

    from modelprint.verify import verify_sets

    reg.add_set(stub_set("a"), "stub-a")
    suspect = StubSuspect({"a": 20})
    first = verify_sets(suspect, ["stub-a"], alpha=1e-6, registry_url=db_url)[0]
    assert first.verdict == "match" and first.registry_set == "stub-a" and first.registry_verifications == 1
    second = verify_sets(suspect, ["stub-a"], alpha=1e-6, registry_url=db_url)[0]
    assert second.registry_verifications == 2
    assert reg.count_verifications("stub-a", "stub:suspect") == 2 and reg.count_verifications("stub-a", "other") == 0
    assert len(reg.spent_keys("stub-a")) == first.n_asked
    # a second set that cannot reach α fails after stub-a was asked: stub-a's run is still in the ledger
    with pytest.raises(ModelprintError, match="cannot reach"):
        verify_sets(suspect, ["stub-a", stub_set("z", n=2, null_prob=0.5)], alpha=1e-6, registry_url=db_url)
    assert reg.count_verifications("stub-a", "stub:suspect") == 3


def test_verify_cli_reports_the_ledger_level(reg: Registry, db_url: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    from conftest import StubSuspect, stub_set

    from modelprint.cli import run

    reg.add_set(stub_set("a"), "stub-a")
    monkeypatch.setenv("MODELPRINT_DB", db_url)
    monkeypatch.setattr("modelprint.verify.cli._backend", lambda *a, **k: StubSuspect({"a": 20}))
    for expected in ("first recorded verification", "2nd recorded verification", "3rd recorded verification"):
        assert run(["-q", "verify", "-m", "x", "-f", "stub-a", "--alpha", "1e-6"]) == 0
        err = capsys.readouterr().err
        assert expected in err, err
    assert "needs p ≤ α/3" in err and "which this run meets" in err


def test_stress_runs(reg: Registry) -> None:
    reg.record_stress(model="m", suite="quick", report_path="r.json", summary={"retained": 0.9})
    assert reg.list("stress")[0]["summary"] == {"retained": 0.9}


def test_duplicates_and_unknowns(reg: Registry) -> None:
    reg.add_licensee("acme")
    with pytest.raises(ModelprintError, match="licensee 'acme' already exists"):
        reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    with pytest.raises(ModelprintError, match="already registered"):
        reg.add_model("tiny")
    with pytest.raises(ModelprintError, match="must not be empty"):
        reg.add_licensee("  ")
    with pytest.raises(ModelprintError, match="unknown registry kind"):
        reg.list("cats")
    with pytest.raises(ModelprintError, match="unknown licensee 'ghost'"):
        reg.show("licensees", "ghost")
    assert len(reg.list("licensees")) == 1


# -- licences ------------------------------------------------------------------------------------------
def test_license_issue_complete(reg: Registry, tmp_path: Path) -> None:
    reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    steps = FakeSteps()
    rec = issue_license(reg, "acme", "tiny", out_dir=tmp_path / "copies", generate_step=steps.generate,
                        embed_step=steps.embed, seed=5)
    assert rec["status"] == "complete" and rec["steps_done"] == ["generate", "embed", "register"]
    assert rec["copy_hash"] == "sha256:copy-acme" and Path(rec["copy_path"]).is_dir()
    assert reg.resolve_set(rec["set"]).set_id == make_set(4, tag="acme-5").set_id
    assert reg.show("licenses", "acme")["id"] == rec["id"]  # by licensee name
    with pytest.raises(ModelprintError, match="already holds complete licence"):
        issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=steps.generate, embed_step=steps.embed)
    assert (steps.generated, steps.embedded) == (1, 1)


def test_license_unknown_licensee_or_model(reg: Registry, tmp_path: Path) -> None:
    reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    steps = FakeSteps()
    with pytest.raises(ModelprintError, match="unknown licensee 'bob'"):
        issue_license(reg, "bob", "tiny", out_dir=tmp_path, generate_step=steps.generate, embed_step=steps.embed)
    with pytest.raises(ModelprintError, match="unknown model 'huge'"):
        issue_license(reg, "acme", "huge", out_dir=tmp_path, generate_step=steps.generate, embed_step=steps.embed)
    assert reg.list("licenses") == [] and steps.generated == 0


def test_license_interrupted_then_resumed(reg: Registry, tmp_path: Path) -> None:
    reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    failing = FakeSteps(fail_embed=True)
    with pytest.raises(RuntimeError, match="killed mid-embed"):
        issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=failing.generate,
                      embed_step=failing.embed, seed=1)
    (lic,) = reg.list("licenses")
    assert lic["status"] == "pending" and lic["steps_done"] == ["generate"] and lic["copy_path"] is None
    set_name = lic["set"]
    ok = FakeSteps()
    rec = issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=ok.generate, embed_step=ok.embed, seed=2)
    assert rec["status"] == "complete" and rec["set"] == set_name and ok.generated == 0 and ok.embedded == 1
    assert len(reg.list("sets")) == 1


def test_license_killed_process_resumes(reg: Registry, db_url: str, tmp_path: Path, home: Path) -> None:
    """A real SIGKILL during embedding: the licence stays pending; a re-run completes it."""
    reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_registry import FakeSteps
        from modelprint.licensing import issue_license
        from modelprint.registry import Registry
        steps = FakeSteps()
        def embed(ctx, fs, out):
            os.kill(os.getpid(), signal.SIGKILL)
        issue_license(Registry({db_url!r}), "acme", "tiny", out_dir={str(tmp_path)!r},
                      generate_step=steps.generate, embed_step=embed)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (lic,) = reg.list("licenses")
    assert lic["status"] == "pending" and lic["steps_done"] == ["generate"]
    steps = FakeSteps()
    rec = issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=steps.generate, embed_step=steps.embed)
    assert rec["status"] == "complete" and steps.generated == 0


def test_license_missing_copy_is_reembedded(reg: Registry, tmp_path: Path) -> None:
    reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    steps = FakeSteps()

    def vanishing_embed(ctx, fs, out):
        return "sha256:gone"  # claims success but writes nothing

    with pytest.raises(ModelprintError, match="is missing"):
        issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=steps.generate, embed_step=vanishing_embed)
    assert reg.list("licenses")[0]["status"] == "pending"
    rec = issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=steps.generate, embed_step=steps.embed)
    assert rec["status"] == "complete" and rec["copy_hash"] == "sha256:copy-acme"


def test_license_needs_key_before_work(reg: Registry, home: Path, tmp_path: Path) -> None:
    reg.add_licensee("acme")
    reg.add_model("tiny", "tiny", "sha256:model")
    (home / "secret.key").unlink()
    steps = FakeSteps()
    with pytest.raises(SecretKeyError):
        issue_license(reg, "acme", "tiny", out_dir=tmp_path, generate_step=steps.generate, embed_step=steps.embed)
    assert steps.generated == 0 and reg.list("licenses") == []


# -- concurrency ------------------------------------------------------------------------------------------
def test_two_concurrent_writers_lose_nothing(reg: Registry, db_url: str) -> None:
    reg.add_set(make_set(10), "s")
    code = textwrap.dedent("""
        import sys
        from modelprint.registry import Registry
        tag, url = sys.argv[1], sys.argv[2]
        with Registry(url) as reg:
            for i in range(50):
                reg.add_licensee(f"{tag}-{i}")
                reg.record_verification("s", target=f"{tag}-{i}", backend="hf", keys=[i % 10, (i + 1) % 10],
                                        matches=1, verdict="match")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, tag, db_url], stderr=subprocess.PIPE, text=True)
             for tag in ("p", "q")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    names = {r["name"] for r in reg.list("licensees")}
    assert names == {f"{t}-{i}" for t in "pq" for i in range(50)}
    assert len(reg.list("verifications")) == 100
    assert sum(reg.spent_keys("s").values()) == 200


# -- CLI -------------------------------------------------------------------------------------------------------
@pytest.fixture
def cli() -> typer.Typer:
    from modelprint.registry.cli import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_flow(cli: typer.Typer, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPRINT_DB", db_url)
    runner = CliRunner()

    def ok(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    assert "schema revision" in ok("registry", "init")
    src = make_set().save(tmp_path / "fp.jsonl")
    ok("registry", "add-set", str(src), "--name", "base", "--owner", "alice")
    listing = ok("registry", "list", "sets")
    assert "base" in listing and "zebra" not in listing
    assert "created_at" in listing  # when the set was registered: the commitment predates a suspect
    registered = json.loads(ok("registry", "list", "sets", "--json"))[0]["created_at"]
    assert registered[:4].isdigit() and registered in listing
    assert "zebra" not in ok("registry", "show", "sets", "base")
    assert "secret key a 3 zebra" in ok("registry", "show", "sets", "base", "--reveal")
    ok("registry", "export-set", "base", "--out", str(tmp_path / "back.jsonl"))
    assert load_fingerprints(tmp_path / "back.jsonl").set_id == make_set().set_id
    ok("registry", "add-licensee", "acme")
    ok("registry", "add-model", "tiny", "--hash", "sha256:model")
    assert json.loads(ok("license", "list", "--json")) == []
    for kind in ("owners", "models", "licensees", "licenses", "verifications", "stress"):
        ok("registry", "list", kind)
    dup = runner.invoke(cli, ["registry", "add-licensee", "acme"])
    assert isinstance(dup.exception, ModelprintError) and "already exists" in str(dup.exception)
    monkeypatch.setattr("modelprint.licensing.default_generate", FakeSteps().generate)
    monkeypatch.setattr("modelprint.licensing.default_embed", FakeSteps().embed)
    out = ok("license", "issue", "--licensee", "acme", "--model", "tiny", "--out-dir", str(tmp_path / "copies"))
    assert "is complete" in out
    assert json.loads(ok("license", "list", "--json"))[0]["status"] == "complete"


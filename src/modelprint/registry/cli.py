"""``modelprint registry …`` and ``modelprint license …``: thin commands over :mod:`modelprint.registry`.

Every command takes ``--db URL`` (else ``$MODELPRINT_DB``, else SQLite in
``$MODELPRINT_HOME``). Keys and responses are printed only with ``show sets NAME --reveal``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table


DB_HELP = "SQLAlchemy URL of the registry (default: $MODELPRINT_DB, else $MODELPRINT_HOME/registry.db)."
LIST_COLUMNS: dict[str, list[str]] = {
    "owners": ["id", "name", "created_at"],
    "models": ["id", "name", "source", "content_hash"],
    "sets": ["id", "name", "owner", "strategy", "count", "set_id", "model", "created_at"],  # created_at: registered
    "licensees": ["id", "name", "contact", "created_at"],
    "licenses": ["id", "licensee", "model", "status", "set", "copy_path"],
    "verifications": ["id", "set", "target", "backend", "n_asked", "matches", "p_value", "verdict", "created_at"],
    "stress": ["id", "model", "suite", "report_path", "created_at"],
}


def _print_table(kind: str, rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))
        return
    table = Table(title=f"{kind} ({len(rows)})")
    cols = LIST_COLUMNS[kind]
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in cols])
    typer.echo(_render(table))


def _render(table: Table) -> str:
    """Render to plain text on stdout (logs go to stderr), wide enough for hashes."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(width=200, file=buf, color_system=None).print(table)
    return buf.getvalue().rstrip()


def _open(db: Optional[str]):
    from modelprint.registry.store import Registry

    return Registry(db)


def register(app: typer.Typer) -> None:
    reg_app = typer.Typer(help="The owner's registry of models, fingerprint sets, licences and runs.",
                          no_args_is_help=True)
    lic_app = typer.Typer(help="Issue and list licences (one fingerprinted copy per licensee).", no_args_is_help=True)
    app.add_typer(reg_app, name="registry")
    app.add_typer(lic_app, name="license")

    @reg_app.command("init")
    def init_cmd(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Create or upgrade the registry database and the owner's secret key file (0600)."""
        from modelprint.registry.store import init_registry

        info = init_registry(db)
        typer.echo(f"registry: {info['database']} at schema revision {info['revision']}")
        created = " (created)" if info.get("secret_key_created") else ""
        typer.echo(f"secret key: {info['secret_key']}{created}")

    @reg_app.command("list")
    def list_cmd(kind: str = typer.Argument(..., help="owners|models|sets|licensees|licenses|verifications|stress"),
                 db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """List the records of one kind (never secrets)."""
        with _open(db) as reg:
            _print_table(kind, reg.list(kind), as_json)

    @reg_app.command("show")
    def show_cmd(kind: str = typer.Argument(..., help="owners|models|sets|licensees|licenses|verifications|stress"),
                 ref: str = typer.Argument(..., help="Name or id (sets: also set_id)."),
                 reveal: bool = typer.Option(False, "--reveal", help="Decrypt and print keys and responses (secrets!)."),
                 db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Show one record as JSON."""
        with _open(db) as reg:
            typer.echo(json.dumps(reg.show(kind, ref, reveal=reveal), indent=2, sort_keys=True, default=str,
                                  ensure_ascii=False))

    @reg_app.command("add-set")
    def add_set_cmd(file: Path = typer.Argument(..., help="Fingerprint file to import."),
                    name: str = typer.Option(..., "--name", help="Registry name for the set."),
                    owner: Optional[str] = typer.Option(None, "--owner", help="Owner (default $MODELPRINT_OWNER or login)."),
                    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Import a fingerprint file; its keys and responses are stored encrypted."""
        with _open(db) as reg:
            set_id = reg.import_set_file(file, name, owner)
        typer.echo(f"added fingerprint set '{name}' (#{set_id})")

    @reg_app.command("export-set")
    def export_set_cmd(name: str = typer.Argument(..., help="Set name, id or set_id."),
                       out: Path = typer.Option(..., "--out", "-o", help="Fingerprint file to write (0600)."),
                       overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
                       db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Write a registered set back out as a normal fingerprint file."""
        with _open(db) as reg:
            reg.export_set(name, out, overwrite=overwrite)
        typer.echo(f"wrote {out}")

    @reg_app.command("add-model")
    def add_model_cmd(name: str = typer.Argument(..., help="Registry name of the base model."),
                      source: Optional[str] = typer.Option(None, "--source", help="Model spec (default: NAME)."),
                      content_hash: Optional[str] = typer.Option(None, "--hash", help="Weights hash (default: load "
                                                                 "the model and hash it)."),
                      db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Register a base model that licences can be issued for."""
        src = source or name
        if content_hash is None:
            from modelprint.models import load_model

            content_hash = load_model(src).model_hash
        with _open(db) as reg:
            model_id = reg.add_model(name, src, content_hash)
        typer.echo(f"added model '{name}' (#{model_id})")

    @reg_app.command("add-licensee")
    def add_licensee_cmd(name: str = typer.Argument(...), contact: str = typer.Option("", "--contact"),
                         db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Register a licensee (names are unique)."""
        with _open(db) as reg:
            lid = reg.add_licensee(name, contact)
        typer.echo(f"added licensee '{name}' (#{lid})")

    @reg_app.command("add-owner")
    def add_owner_cmd(name: str = typer.Argument(...), db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Register an owner (also created implicitly by add-set)."""
        with _open(db) as reg:
            typer.echo(f"owner '{name}' (#{reg.add_owner(name)})")

    @lic_app.command("list")
    def license_list_cmd(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """List licences with their status (pending ones were interrupted: re-run 'license issue')."""
        with _open(db) as reg:
            _print_table("licenses", reg.list("licenses"), as_json)

    @lic_app.command("issue")
    def license_issue_cmd(licensee: str = typer.Option(..., "--licensee", help="Registered licensee name."),
                          model: str = typer.Option(..., "--model", help="Registered base model name."),
                          out_dir: Path = typer.Option(Path("licensed-models"), "--out-dir",
                                                       help="Where the fingerprinted copy is written."),
                          owner: Optional[str] = typer.Option(None, "--owner", help="Owner of the new set."),
                          seed: Optional[int] = typer.Option(None, "--seed", help="Fixed secret seed (guessable: tests "
                                                               "only; default: 128 bits from the OS)."),
                          db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
        """Generate a fresh set for the licensee, embed it, register the copy; re-run to resume."""
        from modelprint.licensing import issue_license

        with _open(db) as reg:
            record = issue_license(reg, licensee, model, out_dir=out_dir, owner=owner, seed=seed)
        typer.echo(f"licence #{record['id']} for '{licensee}' is {record['status']}: {record['copy_path']}")

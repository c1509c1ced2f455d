"""``modelprint verify`` and ``modelprint trace``: thin CLIs over verify() and trace().

Exit codes (documented in the README): 0 match, 1 no match, 2 error.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from modelprint.errors import ConfigError
from modelprint.io import write_json_atomic
from modelprint.log import console
from modelprint.verify.stats import format_p

MATCH_HELP = ("auto (candidate with local weights when the set records its Perinucleus candidates, else exact) | "
              "exact (whole response) | prefix (first token/word) | candidate (our response outranks the other "
              "candidates: same null bound, survives dilution)")


TOKENIZER_HELP = ("--api completions: the set's tokenizer (embedded name or HF directory) to render keys with its "
                  "chat template (default: the set's own model, when it loads here)")
TIMEOUT_HELP = "Seconds per try of each request to the endpoint (a timed-out request is tried once more)."


def _backend(model: Optional[str], endpoint: Optional[str], api_key_env: Optional[str], served_model: Optional[str],
             api: str, batch_size: int, tokenizer: Optional[str] = None, timeout: float = 60.0):
    if (model is None) == (endpoint is None):
        raise ConfigError("give exactly one of --model (local weights) or --endpoint (OpenAI-compatible URL)")
    if tokenizer is not None and (endpoint is None or api != "completions"):
        raise ConfigError("--tokenizer renders prompts for --endpoint … --api completions only")
    if endpoint is not None:
        from modelprint.verify.http import HttpBackend

        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(f"environment variable {api_key_env} (from --api-key-env) is not set")
        tok = None
        if tokenizer is not None:
            from modelprint.models import load_tokenizer

            tok = load_tokenizer(tokenizer)
        return HttpBackend(endpoint, api_key=key, served_model=served_model, api=api, tokenizer=tok, timeout=timeout)
    from modelprint.models import load_model
    from modelprint.verify.backends import LocalBackend

    return LocalBackend(load_model(model), batch_size=batch_size)


def _load_set(source: str):
    """A fingerprint file, or the name of a set in the registry: returns (set, registry name or None)."""
    from modelprint.fingerprints import load_fingerprints

    if Path(source).exists() or source.endswith((".jsonl", ".json")):
        return load_fingerprints(Path(source)), None
    from modelprint.registry import resolve_set

    return resolve_set(source), source


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        fingerprints: list[str] = typer.Option(..., "--fingerprints", "-f", help="Fingerprint file(s) or registry set name(s)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Suspect model: embedded name, HF dir or hub id."),
        endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Suspect OpenAI-compatible base URL (…/v1)."),
        api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Env var holding the endpoint's API key."),
        served_model: Optional[str] = typer.Option(None, "--served-model", help="Model name on the endpoint."),
        api: str = typer.Option("chat", "--api", help="chat | completions (remote only)."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
        timeout: float = typer.Option(60.0, "--timeout", help=TIMEOUT_HELP),
        max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Hard budget of keys to ask."),
        alpha: float = typer.Option(1e-6, "--alpha", help="False-positive level of the decision."),
        match: str = typer.Option("auto", "--match", help=MATCH_HELP),
        seed: int = typer.Option(0, "--seed", help="Seed of the random key order."),
        batch_size: int = typer.Option(64, "--batch-size"),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Write the machine-readable record here."),
    ) -> None:
        """Ask a suspect model the secret keys and decide whether it carries the fingerprints.

        Exit code: 0 match, 1 no match, 2 error.
        """
        from modelprint.verify import verify

        backend = _backend(model, endpoint, api_key_env, served_model, api, batch_size, tokenizer, timeout)
        records = []
        for source in fingerprints:
            fs, registry_name = _load_set(source)
            prefer = None
            if registry_name is not None:  # spend keys no earlier verification has revealed, first
                from modelprint.registry import choose_keys

                prefer = choose_keys(registry_name, len(fs), seed=seed)
            record = verify(backend, fs, max_queries=max_queries, alpha=alpha, match=match, seed=seed,
                            batch_size=batch_size, prefer=prefer)
            if registry_name is not None:
                from modelprint.registry import record_verification

                record_verification(registry_name, target=record.target, backend=record.backend,
                                    keys=record.keys_spent, matches=record.matches, verdict=record.verdict,
                                    p_value=record.p_value, n_asked=record.n_asked)
            records.append(record)
        table = Table(title=f"verify {backend.description}")
        for col in ("set", "asked", "matched", "p-value", "verdict"):
            table.add_column(col, justify="right" if col in ("asked", "matched", "p-value") else "left")
        for name, r in zip(fingerprints, records):
            colour = "green" if r.verdict == "match" else "yellow"
            table.add_row(f"{Path(name).name} ({r.set_id[7:19]})", f"{r.n_asked}/{r.n_planned}", str(r.matches),
                          format_p(r.log10_p_value),
                          f"[{colour}]{r.verdict}[/]")
        console.print(table)
        for rule in dict.fromkeys(f"{r.verifier}: {r.decision_rule}" for r in records):
            console.print(f"decision ({rule}); α = {alpha:g}", highlight=False)
        if records[0].null_probs:
            console.print(f"null bound per key {records[0].null_probs}; match mode {records[0].match_mode}",
                          highlight=False)
        if json_out is not None:
            payload = [r.to_json() for r in records]
            write_json_atomic(json_out, payload[0] if len(payload) == 1 else payload)
        raise typer.Exit(0 if any(r.verdict == "match" for r in records) else 1)

    @app.command("trace")
    def trace_cmd(
        licensee: list[str] = typer.Option(..., "--licensee", "-l", help="NAME=FINGERPRINT_FILE (repeat per licensee)."),
        model: Optional[str] = typer.Option(None, "--model", "-m"),
        endpoint: Optional[str] = typer.Option(None, "--endpoint"),
        api_key_env: Optional[str] = typer.Option(None, "--api-key-env"),
        served_model: Optional[str] = typer.Option(None, "--served-model"),
        api: str = typer.Option("chat", "--api"),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
        timeout: float = typer.Option(60.0, "--timeout", help=TIMEOUT_HELP),
        max_queries: Optional[int] = typer.Option(64, "--max-queries", help="Keys asked per licensee."),
        alpha: float = typer.Option(1e-6, "--alpha"),
        match: str = typer.Option("auto", "--match", help=MATCH_HELP),
        seed: int = typer.Option(0, "--seed"),
        json_out: Optional[Path] = typer.Option(None, "--json"),
    ) -> None:
        """Attribute a suspect model to the licensee(s) whose fingerprints it carries (Holm-corrected).

        Exit code: 0 someone named, 1 nobody, 2 error.
        """
        from modelprint.verify.trace import trace

        sets = {}
        for item in licensee:
            if "=" not in item:
                raise ConfigError(f"--licensee '{item}' is not of the form NAME=FINGERPRINT_FILE")
            name, source = item.split("=", 1)
            sets[name] = _load_set(source)[0]
        backend = _backend(model, endpoint, api_key_env, served_model, api, 64, tokenizer, timeout)
        record = trace(backend, sets, alpha=alpha, max_queries=max_queries, match=match, seed=seed)
        table = Table(title="trace")
        for col in ("licensee", "asked", "matched", "adjusted p", "attributed"):
            table.add_column(col)
        for name, r in record.results.items():
            table.add_row(name, str(r["asked"]), str(r["matches"]), f"1e{r['log10_adjusted_p_value']:.1f}",
                          "[green]yes[/]" if name in record.licensees else "no")
        console.print(table)
        console.print("attributed to: " + (", ".join(record.licensees) or "nobody"))
        if json_out is not None:
            write_json_atomic(json_out, record.to_json())
        raise typer.Exit(0 if record.licensees else 1)

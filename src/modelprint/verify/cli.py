"""``modelprint verify`` and ``modelprint trace``: thin CLIs over verify() and trace().

Exit codes (documented in the README): 0 match, 1 no match, 2 error.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from modelprint.config import VERIFY_DEFAULTS
from modelprint.errors import ConfigError
from modelprint.io import write_json_atomic
from modelprint.log import console
from modelprint.verify.stats import format_p

MATCH_HELP = ("auto (for a set recording its Perinucleus candidates: candidate with local weights or an endpoint "
              "that scores prompts (echo) or returns logprobs, else sample within the request budget; exact otherwise) | exact (whole response) | "
              "prefix (first token/word) | candidate (our response outranks the other candidates, by probability, an "
              "endpoint's teacher-forced scores or its top_logprobs: same 1/k bound, survives dilution) | sample (an endpoint without logprobs: "
              "our response sampled more often than each other candidate, --samples per key: same 1/k bound)")
SAMPLES_HELP = ("--match sample / auto: answers sampled per key at the host's temperature (one request with n when "
                "the server allows it, else one request each); 0 disables sampling")
MAX_REQUESTS_HELP = "Endpoint only: most completion requests to send in all (probes included); keys are planned within it."


TOKENIZER_HELP = ("Endpoint only: the set's tokenizer (embedded name or HF directory) to render keys with its chat "
                  "template for --api completions and to score candidates teacher-forced (default: the set's own "
                  "model, when it loads here)")
ECHO_HELP = ("Endpoint, --match candidate/auto: score each candidate teacher-forced (echoed prompt logprobs: the full "
             "distribution) when the server allows it; --no-echo ranks by its top_logprobs list only.")
PRECISION_HELP = ("Local weights: auto (bfloat16 where the hardware multiplies it natively, else float32) | float32 | "
                  "bfloat16; in bfloat16 every decision within the measured bf16 error of a tie is re-checked in "
                  "float32, so verdicts equal float32's.")
TIMEOUT_HELP = "Seconds per try of each request to the endpoint (a timed-out request is tried once more)."


def _backend(model: Optional[str], endpoint: Optional[str], api_key_env: Optional[str], served_model: Optional[str],
             api: str, batch_size: int, tokenizer: Optional[str] = None, timeout: float = 60.0,
             samples: int = VERIFY_DEFAULTS.samples, max_requests: Optional[int] = None,
             precision: str = VERIFY_DEFAULTS.precision, echo: bool = True):
    _check_target(model, endpoint)
    if precision != "auto" and endpoint is not None:
        raise ConfigError("--precision sets how local weights are run (--model only)")
    if tokenizer is not None and endpoint is None:
        raise ConfigError("--tokenizer renders and scores prompts for --endpoint only")
    if max_requests is not None and endpoint is None:
        raise ConfigError("--max-requests budgets an endpoint's requests (--endpoint only)")
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
        return HttpBackend(endpoint, api_key=key, served_model=served_model, api=api, tokenizer=tok, timeout=timeout,
                           samples=samples, max_requests=max_requests, echo=echo)
    from modelprint.models import load_model
    from modelprint.verify.backends import LocalBackend
    from modelprint.verify.local import check_precision

    check_precision(precision)  # before the model loads
    return LocalBackend(load_model(model), batch_size=batch_size, precision=precision)


def _check_target(model: Optional[str], endpoint: Optional[str]) -> None:
    """The cheapest check first: before any set is read (a registry name opens the registry)."""
    if (model is None) == (endpoint is None):
        raise ConfigError("give exactly one of --model (local weights) or --endpoint (OpenAI-compatible URL)")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _ledger_line(r, alpha: float) -> str:
    """What the registry's ledger says about repeated verifications of one set against one target."""
    n = r.registry_verifications
    if n == 1:
        return f"ledger: first recorded verification of set '{r.registry_set}' against this target"
    level = alpha / n
    meets = r.log10_adjusted_p_value is not None and r.log10_adjusted_p_value <= math.log10(level)
    return (f"ledger: {_ordinal(n)} recorded verification of set '{r.registry_set}' against this target; a "
            f"family-wise level across all {n} needs p ≤ α/{n} = {level:.3g} (Bonferroni), which this run "
            f"{'meets' if meets else 'does not meet'}")


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
        max_requests: Optional[int] = typer.Option(None, "--max-requests", help=MAX_REQUESTS_HELP),
        samples: int = typer.Option(VERIFY_DEFAULTS.samples, "--samples", help=SAMPLES_HELP),
        alpha: float = typer.Option(VERIFY_DEFAULTS.alpha, "--alpha", help="False-positive level of the decision."),
        match: str = typer.Option(VERIFY_DEFAULTS.match, "--match", help=MATCH_HELP),
        seed: int = typer.Option(0, "--seed", help="Seed of the random key order."),
        batch_size: int = typer.Option(VERIFY_DEFAULTS.batch_size, "--batch-size"),
        precision: str = typer.Option(VERIFY_DEFAULTS.precision, "--precision", help=PRECISION_HELP),
        echo: bool = typer.Option(True, "--echo/--no-echo", help=ECHO_HELP),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Write the machine-readable record here."),
    ) -> None:
        """Ask a suspect model the secret keys and decide whether it carries the fingerprints.

        Exit code: 0 match, 1 no match, 2 error.
        """
        from modelprint.io import check_output_file
        from modelprint.verify import load_set, verify_sets
        from modelprint.verify.core import check_options

        _check_target(model, endpoint)
        check_options(alpha, match, max_queries, batch_size)
        if json_out is not None:  # before the suspect is asked: a verdict is never printed, then lost
            check_output_file(json_out)
        sets = [load_set(source) for source in fingerprints]  # every set read and checked before any key is asked
        backend = _backend(model, endpoint, api_key_env, served_model, api, batch_size, tokenizer, timeout, samples,
                           max_requests, precision, echo)
        records = verify_sets(backend, sets, max_queries=max_queries, alpha=alpha, match=match, seed=seed,
                              batch_size=batch_size)
        family = len(records) > 1
        table = Table(title=f"verify {backend.description}")
        columns = ("set", "asked", "matched", "p-value") + (("adjusted p",) if family else ()) + ("verdict",)
        for col in columns:
            table.add_column(col, justify="left" if col in ("set", "verdict") else "right")
        for s, r in zip(sets, records):
            colour = "green" if r.verdict == "match" else "yellow"
            row = [f"{s.label} ({r.set_id[7:19]})", f"{r.n_asked}/{r.n_planned}", str(r.matches),
                   format_p(r.log10_p_value)]
            row += [format_p(r.log10_adjusted_p_value)] if family else []
            table.add_row(*row, f"[{colour}]{r.verdict}[/]")
        console.print(table)
        for rule in dict.fromkeys(f"{r.verifier}: {r.decision_rule}" for r in records):
            console.print(f"decision ({rule}); α = {alpha:g}", highlight=False)
        if family:
            console.print(f"{len(records)} sets, one family-wise level α = {alpha:g}: each set is decided at its "
                          "Holm-adjusted p ≤ α, so the chance of any false match among them is ≤ α", highlight=False)
        if records[0].null_probs:
            console.print(f"null bound per key {records[0].null_probs}; match mode {records[0].match_mode}",
                          highlight=False)
        if "precision" in records[0].access:
            rechecked = sum(r.access.get("fp32_rechecks", 0) for r in records)
            console.print(f"precision {records[0].access['precision']}"
                          + (f" ({rechecked} close keys re-checked in float32)"
                             if "fp32_rechecks" in records[0].access else ""), highlight=False)
        spent = records[-1].access
        if "requests" in spent:
            console.print(f"access: {', '.join(dict.fromkeys(r.access['mode'] for r in records))}; "
                          f"{sum(r.access['requests'] for r in records)} requests, "
                          f"{sum(r.access['samples'] for r in records)} samples", highlight=False)
        for r in records:
            if r.registry_verifications:
                console.print(_ledger_line(r, alpha), highlight=False, soft_wrap=True)
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
        max_requests: Optional[int] = typer.Option(None, "--max-requests", help=MAX_REQUESTS_HELP),
        samples: int = typer.Option(VERIFY_DEFAULTS.samples, "--samples", help=SAMPLES_HELP),
        alpha: float = typer.Option(VERIFY_DEFAULTS.alpha, "--alpha"),
        match: str = typer.Option(VERIFY_DEFAULTS.match, "--match", help=MATCH_HELP),
        seed: int = typer.Option(0, "--seed"),
        precision: str = typer.Option(VERIFY_DEFAULTS.precision, "--precision", help=PRECISION_HELP),
        json_out: Optional[Path] = typer.Option(None, "--json"),
    ) -> None:
        """Attribute a suspect model to the licensee(s) whose fingerprints it carries (Holm-corrected).

        Exit code: 0 someone named, 1 nobody, 2 error.
        """
        from modelprint.errors import ModelprintError
        from modelprint.io import check_output_file
        from modelprint.verify import load_set
        from modelprint.verify.trace import trace

        _check_target(model, endpoint)
        sources: dict[str, str] = {}
        for item in licensee:
            name, sep, source = item.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ConfigError(f"--licensee '{item}' is not of the form NAME=FINGERPRINT_FILE")
            if name in sources:
                raise ConfigError(f"licensee '{name}' is given twice (each licensee once, with one set)")
            sources[name] = source
        if json_out is not None:
            check_output_file(json_out)
        sets = {}
        for name, source in sources.items():  # every licensee's set read and checked before any key is asked
            try:
                sets[name] = load_set(source).fs
            except ModelprintError as err:
                raise ConfigError(f"licensee '{name}': {err}") from None
        backend = _backend(model, endpoint, api_key_env, served_model, api, 64, tokenizer, timeout, samples,
                           max_requests, precision)
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

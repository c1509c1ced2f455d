"""``modelprint generate``: thin CLI over :func:`modelprint.generate.generate`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from modelprint.config import load_config
from modelprint.log import console
from modelprint.models import DEFAULT_MODEL


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="Fingerprint file to write (JSON Lines, owner-only)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded name, HF directory or hub id."),
        strategy: Optional[str] = typer.Option(None, "--strategy", "-s", help="perinucleus (default), english, "
                                               "random-word, inverse-nucleus, english-random-response, custom."),
        num_fingerprints: Optional[int] = typer.Option(None, "--num-fingerprints", "-n", help="How many (default 64)."),
        key_length: Optional[int] = typer.Option(None, "--key-length", help="Key length in tokens (default 16)."),
        response_length: Optional[int] = typer.Option(None, "--response-length", help="Response tokens (default 1)."),
        nucleus_threshold: Optional[float] = typer.Option(None, "--nucleus-threshold", help="t (default 0.8)."),
        nucleus_k: Optional[int] = typer.Option(None, "--nucleus-k", help="k (default 3)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Fix the secret seed, for reproducible tests and "
                                           "demos only: a fixed seed makes the set guessable (default: 128 bits "
                                           "from the OS)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size (default 64)."),
        keys_file: Optional[str] = typer.Option(None, "--keys-file", help="Keys for 'custom' (text or JSONL)."),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help="Present keys under this system prompt."),
        key_dtype: Optional[str] = typer.Option(None, "--key-dtype", help="auto (default: bfloat16 where the "
                                                "hardware has it, else float32), float32 or bfloat16: the dtype "
                                                "model-written keys are written in (recorded in the header)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML file with these options."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
        show: bool = typer.Option(False, "--show", help="Print the keys and responses (secrets!)."),
        overrides: Optional[list[str]] = typer.Argument(None, help="Extra key=value config overrides."),
    ) -> None:
        """Generate a secret fingerprint set from a model."""
        from modelprint.generate import GenerateConfig, generate

        cfg = load_config(GenerateConfig, config, overrides or (), strategy=strategy, num_fingerprints=num_fingerprints,
                          key_length=key_length, response_length=response_length, nucleus_threshold=nucleus_threshold,
                          nucleus_k=nucleus_k, seed=seed, batch_size=batch_size, keys_file=keys_file,
                          system_prompt=system_prompt, key_dtype=key_dtype)
        fs = generate(model, out, overwrite=overwrite, config=cfg)
        console.print(f"wrote [bold]{len(fs)}[/] '{fs.strategy}' fingerprints to {out} "
                      f"(set {fs.set_id[:19]}…, model {fs.model_hash[:19]}…); file mode 0600")
        if show:
            table = Table("#", "key", "response", "p_null", title="fingerprints (SECRET)")
            for fp in fs:
                table.add_row(str(fp.index), fp.key, repr(fp.response), f"{fp.null_prob:.3g}")
            console.print(table)

"""``modelprint serve`` (an OpenAI-compatible endpoint for a local model) and ``modelprint export`` (GGUF)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from modelprint.log import console


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        model: str = typer.Option(..., "--model", "-m", help="model name, Hugging Face directory or cached hub id"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
        port: int = typer.Option(8000, "--port", help="port to listen on (1-65535)"),
        served_name: Optional[str] = typer.Option(None, "--served-model-name",
                                                  help="model id reported by /v1/models (default: directory name)"),
        max_prompt_tokens: int = typer.Option(2048, "--max-prompt-tokens",
                                              help="longest prompt accepted (also capped by the model's context)"),
        max_tokens: int = typer.Option(1024, "--max-tokens", help="largest max_tokens a request may ask"),
        max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="largest request body (413 above)"),
        request_timeout: float = typer.Option(120.0, "--request-timeout",
                                              help="seconds one request may take, queueing included (503 after)"),
        max_logprobs: int = typer.Option(20, "--max-logprobs",
                                         help="largest top_logprobs / logprobs a request may ask (0-20)"),
        max_n: int = typer.Option(64, "--max-n", help="most choices (n) one request may ask"),
    ) -> None:
        """Serve a local model over an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions)."""
        from modelprint.config import validate
        from modelprint.errors import ConfigError
        from modelprint.serve import ServeLimits, serve

        if not 1 <= port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535, got {port}")
        limits = validate(ServeLimits, {"max_prompt_tokens": max_prompt_tokens, "max_tokens": max_tokens,
                                        "max_body_bytes": max_body_bytes, "request_timeout": request_timeout,
                                        "max_logprobs": max_logprobs, "max_n": max_n})
        console.print(f"serving on http://{host}:{port}/v1 (Ctrl-C to stop)")
        serve(model, host=host, port=port, model_name=served_name, limits=limits)

    @app.command("export")
    def export_command(
        model_dir: str = typer.Argument(..., help="Llama-architecture model: name or Hugging Face directory"),
        gguf: Path = typer.Option(..., "--gguf", help="output GGUF file (for llama.cpp, Ollama, LM Studio)"),
        outtype: str = typer.Option("f16", "--outtype", help="tensor type: f16, q8_0 or f32"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output file"),
    ) -> None:
        """Export a (fingerprinted) model to a GGUF file."""
        from modelprint.export import export_gguf

        path = export_gguf(model_dir, gguf, outtype=outtype, overwrite=overwrite)
        console.print(f"GGUF written to {path} ({outtype})")

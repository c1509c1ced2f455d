"""Asking a suspect behind an OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, ``modelprint serve``…).

Keys go out greedily (temperature 0) with a few tokens more than the response
needs, a bounded number at a time; the openai client retries 408/409/429/5xx
with exponential backoff (honouring ``Retry-After``). Every failure becomes a
one-line :class:`~modelprint.errors.ModelprintError` that names the endpoint
and the HTTP status, never a key, a response or the server's error text (which
may echo the prompt). The openai/httpx loggers are held at WARNING because at
DEBUG they would log request bodies, i.e. the secret keys.
"""
from __future__ import annotations

import logging
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Optional, Sequence

from modelprint.errors import ConfigError, ModelprintError
from modelprint.fingerprints import Fingerprint
from modelprint.verify.backends import Answer

log = logging.getLogger(__name__)

EXTRA_TOKENS = 4  # headroom: remote tokenizers may split the response a little differently
APIS = ("chat", "completions")


class EndpointError(ModelprintError):
    """The endpoint could not be reached, refused the request or answered something unusable."""


class EndpointUnreachableError(EndpointError):
    """Nothing answered at the endpoint (connection refused, DNS failure, timeout)."""


class EndpointRefusedError(EndpointError):
    """The endpoint answered with an HTTP error (after retries, for 429/5xx)."""


class MalformedResponseError(EndpointError):
    """The endpoint answered, but not with an OpenAI-shaped completion."""


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` → ``http://host:8000/v1``; a URL with a path is used as given."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"endpoint must be an http(s) URL, got '{redact_url(url)}'")
    path = parsed.path.rstrip("/")
    if not path:
        path = "/v1"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))


def redact_url(url: str) -> str:
    """The URL without credentials or query string (safe for logs, errors and records)."""
    try:
        parsed = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return "<invalid url>"
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path.rstrip("/"), "", ""))


def _quiet_client_loggers() -> None:
    for name in ("openai", "httpx", "httpx2", "httpcore"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


class HttpBackend:
    """Greedy answers from an OpenAI-compatible endpoint, compared as text.

    ``api="chat"`` sends ``[system?, user=key]`` and lets the server apply its
    chat template; ``api="completions"`` sends the rendered prompt text (with
    ``tokenizer`` given: its chat template via render_prompt; else the key,
    after the system prompt and a blank line).
    """

    name = "http"
    space = "text"

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, served_model: Optional[str] = None,
                 api: Literal["chat", "completions"] = "chat", concurrency: int = 4, timeout: float = 30.0,
                 max_retries: int = 4, max_tokens: int = 8, tokenizer: Any = None) -> None:
        import openai

        if api not in APIS:
            raise ConfigError(f"unknown api '{api}' (known: {', '.join(APIS)})")
        if concurrency < 1 or max_retries < 0 or timeout <= 0 or max_tokens < 1:
            raise ConfigError("concurrency and max_tokens must be ≥ 1, max_retries ≥ 0 and timeout > 0")
        _quiet_client_loggers()
        self.base_url = normalize_base_url(base_url)
        self.safe_url = redact_url(self.base_url)
        self.api = api
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        # An explicit placeholder keeps the client from sending $OPENAI_API_KEY to an arbitrary endpoint.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout,
                                    max_retries=max_retries)
        self._served_model = served_model
        self.description = f"http:{self.safe_url} api={api}" + (f" model={served_model}" if served_model else "")

    # ------------------------------------------------------------------ errors
    def _translate(self, exc: Exception, what: str) -> ModelprintError:
        """One line naming the endpoint and the status; never the server's text (it may echo a key)."""
        import openai

        if isinstance(exc, ModelprintError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return EndpointUnreachableError(f"endpoint {self.safe_url} is unreachable (timed out during {what})")
        if isinstance(exc, openai.APIConnectionError):
            return EndpointUnreachableError(f"endpoint {self.safe_url} is unreachable (connection failed during {what})")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            hint = {401: "check the API key", 403: "check the API key and its permissions",
                    404: "check the URL and --served-model", 429: "rate limited; retries exhausted"}.get(status)
            if status >= 500:
                hint = "server error; retries exhausted"
            return EndpointRefusedError(f"endpoint {self.safe_url} refused {what} (HTTP {status}"
                                        + (f": {hint})" if hint else ")"))
        if isinstance(exc, (openai.APIResponseValidationError, ValueError, TypeError, KeyError, AttributeError)):
            return MalformedResponseError(f"endpoint {self.safe_url} returned a malformed response to {what}")
        return EndpointError(f"endpoint {self.safe_url} failed during {what} ({type(exc).__name__})")

    # ------------------------------------------------------------------ model
    @property
    def served_model(self) -> str:
        """The model to ask: given, or the first one the endpoint lists."""
        if self._served_model is None:
            try:
                models = list(self.client.models.list())
                ids = [m.id for m in models if isinstance(getattr(m, "id", None), str) and m.id]
            except Exception as exc:  # noqa: BLE001 - translated into one line
                raise self._translate(exc, "the model list") from None
            if not ids:
                raise MalformedResponseError(f"endpoint {self.safe_url} lists no models; pass the served model name")
            if len(ids) > 1:
                log.warning("endpoint %s serves %d models; asking '%s' (choose with the served model name)",
                            self.safe_url, len(ids), ids[0])
            self._served_model = ids[0]
            self.description = f"http:{self.safe_url} api={self.api} model={self._served_model}"
        return self._served_model

    # ------------------------------------------------------------------ asking
    def _prompt_text(self, key: str, system_prompt: Optional[str]) -> str:
        if self.tokenizer is not None:
            from modelprint.prompts import render_prompt

            return render_prompt(self.tokenizer, key, system_prompt)
        return key if system_prompt is None else f"{system_prompt}\n\n{key}"

    def _ask(self, fp: Fingerprint, system_prompt: Optional[str], model: str) -> Answer:
        limit = max(self.max_tokens, len(fp.response_ids) + EXTRA_TOKENS)
        try:
            if self.api == "chat":
                messages = [{"role": "user", "content": fp.key}]
                if system_prompt is not None:
                    messages.insert(0, {"role": "system", "content": system_prompt})
                resp = self.client.chat.completions.create(model=model, messages=messages, temperature=0,
                                                           max_tokens=limit, n=1)
                choices = getattr(resp, "choices", None)
                text = choices[0].message.content if choices else None
            else:
                resp = self.client.completions.create(model=model, prompt=self._prompt_text(fp.key, system_prompt),
                                                      temperature=0, max_tokens=limit, n=1)
                choices = getattr(resp, "choices", None)
                text = choices[0].text if choices else None
        except Exception as exc:  # noqa: BLE001 - translated into one line
            raise self._translate(exc, "a completion request") from None
        if not isinstance(choices, list) or not choices:
            raise MalformedResponseError(f"endpoint {self.safe_url} returned a completion without choices")
        if not isinstance(text, str):
            raise MalformedResponseError(f"endpoint {self.safe_url} returned a completion whose content is not text")
        return Answer(text=text)

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]:
        """Answers in input order; at most ``concurrency`` requests in flight."""
        if not fingerprints:
            return []
        model = self.served_model
        if self.concurrency == 1 or len(fingerprints) == 1:
            return [self._ask(fp, system_prompt, model) for fp in fingerprints]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(fingerprints)),
                                thread_name_prefix="modelprint-http") as pool:
            futures = [pool.submit(self._ask, fp, system_prompt, model) for fp in fingerprints]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:  # do not spend more of the budget once the batch has failed
                    f.cancel()
                raise

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"HttpBackend({self.description})"

"""Asking a suspect behind an OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, ``modelprint serve``…).

Keys go out greedily (temperature 0) with a few tokens more than the response
needs, a bounded number at a time, over plain httpx so that every limit is
ours: each try of a request ends within about ``timeout`` seconds (connect,
every read, and the whole body), a body larger than ``max_response_bytes`` is
refused without being read into memory, and 408/409/429/5xx and dropped
connections are retried ``max_retries`` times with exponential backoff
(honouring a short ``Retry-After``), a timeout once. An endpoint that never
answers therefore fails within about two timeouts.

Every failure becomes a one-line :class:`~modelprint.errors.ModelprintError`
that names the endpoint and the HTTP status, never a key, a response or the
server's error text (which may echo the prompt). The httpx loggers are held at
WARNING because at DEBUG they would log request bodies, i.e. the secret keys.

``api="completions"`` sends the prompt text the model was trained on, so it
needs the set's tokenizer (its chat template): :meth:`HttpBackend.prepare`,
called by ``verify`` for each set, takes the tokenizer given or the set's own
(when its model resolves here and hashes to the set's ``tokenizer_hash``) and
refuses otherwise, rather than quietly asking another question.
"""
from __future__ import annotations

import json
import logging
import random
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Optional, Sequence

from modelprint.errors import ConfigError, ModelprintError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.verify.backends import Answer

log = logging.getLogger(__name__)

EXTRA_TOKENS = 4  # headroom: remote tokenizers may split the response a little differently
APIS = ("chat", "completions")
DEFAULT_TIMEOUT = 60.0  # seconds per try of one request
DEFAULT_MAX_RETRIES = 4
MAX_RESPONSE_BYTES = 1 << 20  # a completion of a few tokens is a few hundred bytes
RETRY_STATUSES = frozenset({408, 409, 429})
MAX_BACKOFF = 8.0  # seconds between tries, whatever Retry-After asks
MAX_TIMEOUT_TRIES = 2  # an endpoint silent for a whole timeout is rarely back a moment later


class EndpointError(ModelprintError):
    """The endpoint could not be reached, refused the request or answered something unusable."""


class EndpointUnreachableError(EndpointError):
    """Nothing answered at the endpoint (connection refused, DNS failure, timeout)."""


class EndpointRefusedError(EndpointError):
    """The endpoint answered with an HTTP error (after retries, for 429/5xx)."""


class MalformedResponseError(EndpointError):
    """The endpoint answered, but not with an OpenAI-shaped completion (or with too large a body)."""


class _TryTimedOut(Exception):
    """One try ran past its deadline while the body trickled in."""


class _TooLarge(Exception):
    """The body is larger than the cap."""


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
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _retry_delay(attempt: int, retry_after: Optional[str]) -> float:
    """Retry-After when short and numeric, else 0.5 s · 2^attempt with jitter; never above MAX_BACKOFF."""
    if retry_after:
        try:
            value = float(retry_after)
            if 0 <= value <= MAX_BACKOFF:
                return value
        except ValueError:
            pass
    return min(MAX_BACKOFF, 0.5 * 2 ** attempt) * (0.75 + 0.25 * random.random())


class HttpBackend:
    """Greedy answers from an OpenAI-compatible endpoint, compared as text.

    ``api="chat"`` sends ``[system?, user=key]`` and lets the server apply its
    chat template; ``api="completions"`` sends the prompt rendered by
    :func:`modelprint.prompts.render_prompt` with the set's tokenizer (see
    :meth:`prepare`). ``timeout`` bounds each try of a request (seconds),
    ``max_response_bytes`` each response body.
    """

    name = "http"
    space = "text"

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, served_model: Optional[str] = None,
                 api: Literal["chat", "completions"] = "chat", concurrency: int = 4,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES, max_tokens: int = 8,
                 tokenizer: Any = None, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        import httpx

        if api not in APIS:
            raise ConfigError(f"unknown api '{api}' (known: {', '.join(APIS)})")
        if not (concurrency >= 1 and max_retries >= 0 and max_tokens >= 1 and max_response_bytes >= 1):
            raise ConfigError("concurrency, max_tokens and the response cap must be ≥ 1 and max_retries ≥ 0")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise ConfigError(f"the endpoint timeout must be a positive number of seconds, got {timeout}")
        _quiet_client_loggers()
        self.base_url = normalize_base_url(base_url)
        self.safe_url = redact_url(self.base_url)
        self.api = api
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_response_bytes = max_response_bytes
        self.given_tokenizer = tokenizer
        self.tokenizer = tokenizer  # the one render_prompt uses; prepare() sets it per set
        # An explicit placeholder keeps a proxy from seeing $OPENAI_API_KEY or no header at all.
        headers = {"Authorization": f"Bearer {api_key or 'not-needed'}", "Accept": "application/json",
                   "Accept-Encoding": "identity"}
        parts = urllib.parse.urlsplit(self.base_url)
        self.client = httpx.Client(base_url=urllib.parse.urlunsplit(parts._replace(query="")), headers=headers,
                                   params=urllib.parse.parse_qsl(parts.query), timeout=self.timeout,
                                   follow_redirects=False, limits=httpx.Limits(max_connections=concurrency))
        self._served_model = served_model
        self.description = f"http:{self.safe_url} api={api}" + (f" model={served_model}" if served_model else "")

    # ------------------------------------------------------------------ prompts
    def prepare(self, fs: FingerprintSet) -> None:
        """Choose how this set's keys are rendered; refuse completions that cannot be rendered as trained."""
        if self.api != "completions":
            return
        from modelprint.models import matching_tokenizer, tokenizer_hash

        given = self.given_tokenizer
        if given is not None and (not fs.tokenizer_hash or tokenizer_hash(given) == fs.tokenizer_hash):
            self.tokenizer = given
            return
        own = matching_tokenizer(fs.model_source, fs.tokenizer_hash) if fs.tokenizer_hash else None
        if own is not None:
            self.tokenizer = own
            return
        why = ("the tokenizer given is not the set's (its hash differs)" if given is not None else
               f"the set's tokenizer ('{fs.model_source}') is not available here")
        raise ConfigError(f"--api completions must send keys rendered as they were trained (chat template), but {why}: "
                          "pass --tokenizer with the set's model (embedded name or directory) or use --api chat")

    def _prompt_text(self, key: str, system_prompt: Optional[str]) -> str:
        if self.tokenizer is not None:
            from modelprint.prompts import render_prompt

            return render_prompt(self.tokenizer, key, system_prompt)
        return key if system_prompt is None else f"{system_prompt}\n\n{key}"

    # ------------------------------------------------------------------ transport
    def _refused(self, status: int, what: str) -> EndpointRefusedError:
        hint = {401: "check the API key", 403: "check the API key and its permissions",
                404: "check the URL and --served-model", 413: "request too large",
                429: "rate limited; retries exhausted"}.get(status)
        if status >= 500:
            hint = "server error; retries exhausted"
        return EndpointRefusedError(f"endpoint {self.safe_url} refused {what} (HTTP {status}"
                                    + (f": {hint})" if hint else ")"))

    def _read_capped(self, response: Any, deadline: float) -> bytes:
        """The body, chunk by chunk: never more than the cap in memory, never past the try's deadline."""
        length = response.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > self.max_response_bytes:
            raise _TooLarge()
        chunks, size = [], 0
        for chunk in response.iter_bytes():  # decoded (we ask for identity; a gzip answer is capped after decoding)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise _TooLarge()
            if time.monotonic() > deadline:
                raise _TryTimedOut()
            chunks.append(chunk)
        return b"".join(chunks)

    def _request(self, method: str, path: str, what: str, payload: Optional[dict] = None) -> Any:
        """The parsed JSON answer to one request, with retries; every failure is one line."""
        import httpx

        tries = self.max_retries + 1
        timed_out = 0
        for attempt in range(tries):
            last = attempt == tries - 1
            deadline = time.monotonic() + self.timeout
            retry_after: Optional[str] = None
            try:
                with self.client.stream(method, path, json=payload) as response:
                    status = response.status_code
                    if status in RETRY_STATUSES or status >= 500:
                        if last:
                            raise self._refused(status, what)
                        retry_after = response.headers.get("retry-after") or ""
                    elif status >= 400 or status < 200:
                        raise self._refused(status, what)
                    else:
                        raw = self._read_capped(response, deadline)
            except ModelprintError:
                raise
            except _TooLarge:
                raise MalformedResponseError(f"endpoint {self.safe_url} sent more than "
                                             f"{self.max_response_bytes} bytes in answer to {what}") from None
            except (httpx.TimeoutException, _TryTimedOut):
                timed_out += 1
                if not last and timed_out < MAX_TIMEOUT_TRIES:
                    time.sleep(_retry_delay(attempt, None))
                    continue
                raise EndpointUnreachableError(f"endpoint {self.safe_url} is unreachable (timed out during {what}: "
                                               f"{timed_out} tries of {self.timeout:g} s)") from None
            except httpx.HTTPError as exc:
                if isinstance(exc, httpx.TransportError) and not last:
                    time.sleep(_retry_delay(attempt, None))
                    continue
                raise EndpointUnreachableError(f"endpoint {self.safe_url} is unreachable "
                                               f"(connection failed during {what})") from None
            if retry_after is not None:  # a retryable status, the response closed: wait, then try again
                time.sleep(_retry_delay(attempt, retry_after))
                continue
            try:
                return json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise MalformedResponseError(f"endpoint {self.safe_url} returned a malformed response to {what}") \
                    from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # ------------------------------------------------------------------ model
    @property
    def served_model(self) -> str:
        """The model to ask: given, or the first one the endpoint lists."""
        if self._served_model is None:
            body = self._request("GET", "models", "the model list")
            data = body.get("data") if isinstance(body, dict) else None
            ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]] \
                if isinstance(data, list) else []
            if not ids:
                raise MalformedResponseError(f"endpoint {self.safe_url} lists no models; pass the served model name")
            if len(ids) > 1:
                log.warning("endpoint %s serves %d models; asking '%s' (choose with the served model name)",
                            self.safe_url, len(ids), ids[0])
            self._served_model = ids[0]
            self.description = f"http:{self.safe_url} api={self.api} model={self._served_model}"
        return self._served_model

    # ------------------------------------------------------------------ asking
    def _ask(self, fp: Fingerprint, system_prompt: Optional[str], model: str) -> Answer:
        limit = max(self.max_tokens, len(fp.response_ids) + EXTRA_TOKENS)
        what = "a completion request"
        if self.api == "chat":
            messages = [{"role": "user", "content": fp.key}]
            if system_prompt is not None:
                messages.insert(0, {"role": "system", "content": system_prompt})
            body = self._request("POST", "chat/completions", what, {"model": model, "messages": messages,
                                                                      "temperature": 0, "max_tokens": limit, "n": 1})
        else:
            body = self._request("POST", "completions", what, {"model": model, "temperature": 0, "max_tokens": limit,
                                                                "n": 1,
                                                                "prompt": self._prompt_text(fp.key, system_prompt)})
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise MalformedResponseError(f"endpoint {self.safe_url} returned a completion without choices")
        if self.api == "chat":
            message = choices[0].get("message")
            text = message.get("content") if isinstance(message, dict) else None
        else:
            text = choices[0].get("text")
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

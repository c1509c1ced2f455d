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

Beyond greedy text, the backend offers the graded black-box accesses ``verify`` ranks candidates with:

* **scored** (``--match candidate`` when the server allows it, preferred): teacher-forced scoring. For each key,
  the prompt ``verify`` would send (the set's chat template, encoded with the set's tokenizer: :meth:`prepare`)
  followed by each recorded candidate id goes out as a token-id prompt to the legacy completions API with
  ``echo: true, max_tokens: 0, logprobs`` (OpenAI's and vLLM's form; ``prompt_logprobs`` by another name), all k
  prompts of a key in one request when a list of prompts is accepted, else one request each; the echoed
  log-probability of each prompt's last token is that candidate's next-token log-probability — the model's *full*
  distribution, not a top-20 list, so a candidate ranks as a weights-holder sees it. :meth:`echo_support`
  probes once (non-secret prompt): a list with ``max_tokens`` 0, then one prompt, then both with 1; a server that
  refuses (400/422), answers fewer choices than prompts or echoes no prompt logprobs does not score, and
  ``verify`` falls back to top_logprobs. Needs the set's tokenizer (given, or the set's model loading here);
  ``echo=False`` turns it off.
* **logprobs** (``--match candidate``): the first answer token is asked with ``max_tokens: 1`` and
  ``logprobs`` / ``top_logprobs`` (chat) or ``logprobs: k`` (completions). :meth:`logprob_support` probes
  once with a non-secret prompt, asking 20 alternatives, then 5 (TGI's default cap), then 1 when the server
  refuses (HTTP 400/422); a server that answers but sends no logprobs supports none. What comes back is a
  list of (token text, log-probability) — the sampled token and its alternatives.
* **sampling** (``--match sample``): ``samples`` answers per key at the host's own temperature (none is sent
  unless ``sample_temperature`` is given, never a seed), with the ``n`` parameter when the server honours it
  (probed once), else with repeated requests.

Every completion request counts in :attr:`requests` (samples drawn in :attr:`samples_drawn`); with
``max_requests`` the backend refuses to send more (:class:`QueryBudgetError`) and ``verify`` plans within it.
"""
from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Optional, Sequence

from modelprint.config import VERIFY_DEFAULTS
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
TOP_LOGPROBS_TRIES = (20, 5, 1)  # OpenAI chat's limit (vLLM, llama.cpp), TGI's default cap, the sampled token only
REFUSED_OPTION = frozenset({400, 422})  # how servers refuse an option they do not allow
NO_ROUTE = frozenset({404, 405})  # how a server without a route (e.g. no legacy completions API) answers
PROBE_PROMPT = "Hello"  # what probes ask: never a secret key
DEFAULT_SAMPLES = VERIFY_DEFAULTS.samples
SAMPLE_TOKENS = 4  # a candidate is one token of ours; the server's tokenizer may need a few


class EndpointError(ModelprintError):
    """The endpoint could not be reached, refused the request or answered something unusable."""


class EndpointUnreachableError(EndpointError):
    """Nothing answered at the endpoint (connection refused, DNS failure, timeout)."""


class EndpointRefusedError(EndpointError):
    """The endpoint answered with an HTTP error (after retries, for 429/5xx); ``status`` is that code."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class QueryBudgetError(EndpointError):
    """Sending one more request would exceed ``max_requests``."""


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
                 tokenizer: Any = None, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 samples: int = DEFAULT_SAMPLES, max_requests: Optional[int] = None,
                 sample_temperature: Optional[float] = None, top_logprobs: int = TOP_LOGPROBS_TRIES[0],
                 echo: bool = True) -> None:
        import httpx

        if api not in APIS:
            raise ConfigError(f"unknown api '{api}' (known: {', '.join(APIS)})")
        if not (concurrency >= 1 and max_retries >= 0 and max_tokens >= 1 and max_response_bytes >= 1):
            raise ConfigError("concurrency, max_tokens and the response cap must be ≥ 1 and max_retries ≥ 0")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise ConfigError(f"the endpoint timeout must be a positive number of seconds, got {timeout}")
        if samples < 0 or (max_requests is not None and max_requests < 1) or not 1 <= top_logprobs <= 20:
            raise ConfigError("samples must be ≥ 0, the request budget ≥ 1 and top_logprobs in 1..20")
        if sample_temperature is not None and not 0 < sample_temperature <= 2:
            raise ConfigError(f"the sampling temperature must be in (0, 2], got {sample_temperature}")
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
        self.samples = samples
        self.max_requests = max_requests
        self.sample_temperature = sample_temperature
        self.top_tries = tuple(sorted({top_logprobs} | {k for k in TOP_LOGPROBS_TRIES if k < top_logprobs},
                                      reverse=True))  # what to ask for, down to what the server allows
        self.requests = 0  # completion requests sent (probes included)
        self.samples_drawn = 0
        self.top_returned_min: Optional[int] = None  # fewest alternatives any logprob answer listed
        self._top: Optional[int] = None  # probed: alternatives asked for (0: no logprobs)
        self._n_ok: Optional[bool] = None  # probed: whether the server honours n
        self.echo = echo  # score candidates teacher-forced when the server allows it
        self._echo: Optional[tuple[str, int]] = None  # probed: ("list" | "single" | "", max_tokens); "": none
        self._count_lock = threading.Lock()
        self._served_model = served_model
        self.description = f"http:{self.safe_url} api={api}" + (f" model={served_model}" if served_model else "")

    # ------------------------------------------------------------------ prompts
    def prepare(self, fs: FingerprintSet) -> None:
        """Choose how this set's keys are rendered; refuse completions that cannot be rendered as trained.

        The set's tokenizer also lets candidates be scored teacher-forced (chat API too); without it they are not.
        """
        if self.api != "completions" and not self.echo:
            return
        from modelprint.models import matching_tokenizer, tokenizer_hash

        given = self.given_tokenizer
        if given is not None and (not fs.tokenizer_hash or tokenizer_hash(given) == fs.tokenizer_hash):
            self.tokenizer = given
            return
        own = matching_tokenizer(fs.model_source, fs.tokenizer_hash) if fs.tokenizer_hash else None
        self.tokenizer = own
        if own is not None or self.api != "completions":
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
                                    + (f": {hint})" if hint else ")"), status)

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
    def _payload(self, key: str, system_prompt: Optional[str], model: str, max_tokens: int,
                 **extra: Any) -> tuple[str, dict[str, Any]]:
        """(path, body) asking ``key`` as trained: chat messages, or the prompt rendered with the set's template."""
        if self.api == "chat":
            messages = [{"role": "user", "content": key}]
            if system_prompt is not None:
                messages.insert(0, {"role": "system", "content": system_prompt})
            return "chat/completions", {"model": model, "messages": messages, "max_tokens": max_tokens, **extra}
        return "completions", {"model": model, "max_tokens": max_tokens,
                               "prompt": self._prompt_text(key, system_prompt), **extra}

    def _post(self, path: str, payload: dict[str, Any], what: str = "a completion request") -> Any:
        """One counted completion request (refused before sending when it would exceed ``max_requests``)."""
        with self._count_lock:
            if self.max_requests is not None and self.requests >= self.max_requests:
                raise QueryBudgetError(f"the request budget for endpoint {self.safe_url} is spent "
                                       f"({self.max_requests} requests): raise --max-requests")
            self.requests += 1
        return self._request("POST", path, what, payload)

    def _choices(self, body: Any) -> list[dict[str, Any]]:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise MalformedResponseError(f"endpoint {self.safe_url} returned a completion without choices")
        return choices

    def _text(self, choice: dict[str, Any]) -> str:
        if self.api == "chat":
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise MalformedResponseError(f"endpoint {self.safe_url} returned a completion whose content is not text")
        return text

    def _ask(self, fp: Fingerprint, system_prompt: Optional[str], model: str) -> Answer:
        limit = max(self.max_tokens, len(fp.response_ids) + EXTRA_TOKENS)
        body = self._post(*self._payload(fp.key, system_prompt, model, limit, temperature=0, n=1))
        return Answer(text=self._text(self._choices(body)[0]))

    # ------------------------------------------------------------------ logprobs
    def _logprob_options(self, top: int) -> dict[str, Any]:
        return {"logprobs": True, "top_logprobs": top} if self.api == "chat" else {"logprobs": top}

    def _malformed_logprobs(self) -> MalformedResponseError:
        return MalformedResponseError(f"endpoint {self.safe_url} returned malformed logprobs (not OpenAI's "
                                      f"{'chat' if self.api == 'chat' else 'completions'} logprobs format)")

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value > 1e-3:
            raise self._malformed_logprobs()
        return min(float(value), 0.0)

    def _first_token_entries(self, choice: dict[str, Any]) -> Optional[list[tuple[str, float]]]:
        """(token text, log-probability) of the first answer token and its listed alternatives; None when the
        answer carries no logprobs at all; [] when it lists no token."""
        logprobs = choice.get("logprobs")
        if logprobs is None:
            return None
        if not isinstance(logprobs, dict):
            raise self._malformed_logprobs()
        if self.api == "chat":
            content = logprobs.get("content")
            if content is None:
                return None
            if not isinstance(content, list) or not all(isinstance(c, dict) for c in content):
                raise self._malformed_logprobs()
            if not content:
                return []
            first = content[0]
            top = first.get("top_logprobs", [])
            if not isinstance(top, list) or not all(isinstance(t, dict) for t in top):
                raise self._malformed_logprobs()
            pairs = [(first.get("token"), first.get("logprob"))] + [(t.get("token"), t.get("logprob")) for t in top]
        else:
            tokens, values, tops = (logprobs.get(k) for k in ("tokens", "token_logprobs", "top_logprobs"))
            if tokens is None and values is None:
                return None
            if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values) \
                    or not (tops is None or isinstance(tops, list)):
                raise self._malformed_logprobs()
            if not tokens:
                return []
            top = tops[0] if tops else {}
            if top is None:
                top = {}
            if not isinstance(top, dict):
                raise self._malformed_logprobs()
            pairs = [(tokens[0], values[0])] + list(top.items())
        if not all(isinstance(t, str) for t, _ in pairs):
            raise self._malformed_logprobs()
        entries = [(t, self._number(v)) for t, v in pairs]
        with self._count_lock:
            listed = len(entries) - 1
            self.top_returned_min = listed if self.top_returned_min is None else min(self.top_returned_min, listed)
        return entries

    def logprob_support(self) -> int:
        """How many alternatives per token the server lists (probed once, with a non-secret prompt); 0: none."""
        if self._top is None:
            self._top = self._probe_logprobs()
        return self._top

    def _probe_logprobs(self) -> int:
        model = self.served_model
        for top in self.top_tries:
            try:
                body = self._post(*self._payload(PROBE_PROMPT, None, model, 1, temperature=0, n=1,
                                                 **self._logprob_options(top)), what="a logprobs probe")
            except EndpointRefusedError as err:
                if err.status in REFUSED_OPTION:
                    continue
                raise
            entries = self._first_token_entries(self._choices(body)[0])
            if entries is None:
                log.info("endpoint %s returns no logprobs", self.safe_url)
                return 0
            return top
        log.info("endpoint %s refuses every logprobs request", self.safe_url)
        return 0

    def first_token_logprobs(self, fingerprints: Sequence[Fingerprint],
                             system_prompt: Optional[str]) -> list[list[tuple[str, float]]]:
        """For each key, the first answer token and its alternatives as (text, log-probability), as the server
        lists them (``max_tokens: 1``, greedy, as many alternatives as :meth:`logprob_support` found)."""
        top = self.logprob_support()
        if top == 0:
            raise ConfigError(f"endpoint {self.safe_url} returns no logprobs: use --match sample (sampling) or "
                              "--match exact (text)")
        model = self.served_model

        def ask(fp: Fingerprint) -> list[tuple[str, float]]:
            body = self._post(*self._payload(fp.key, system_prompt, model, 1, temperature=0, n=1,
                                             **self._logprob_options(top)))
            entries = self._first_token_entries(self._choices(body)[0])
            if entries is None:
                raise MalformedResponseError(f"endpoint {self.safe_url} stopped returning logprobs")
            return entries

        return self._map(ask, fingerprints)

    # ------------------------------------------------------------------ teacher-forced scoring
    def echo_support(self) -> bool:
        """Whether candidates can be scored teacher-forced here: echo on, the set's tokenizer at hand (see
        :meth:`prepare`) and the server's echoed prompt logprobs usable (probed once, non-secret prompt)."""
        if not self.echo or self.tokenizer is None:
            return False
        if self._echo is None:
            self._echo = self._probe_echo()
        return bool(self._echo[0])

    def score_requests_per_key(self, k: int) -> int:
        """Requests that scoring one key of ``k`` candidates costs: 1 when a list of prompts is accepted, else k."""
        return 1 if self.echo_support() and self._echo is not None and self._echo[0] == "list" else k

    def _echo_payload(self, model: str, prompt: Any, max_tokens: int) -> dict[str, Any]:
        return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "echo": True, "logprobs": 1,
                "temperature": 0, "n": 1}

    def _malformed_echo(self) -> MalformedResponseError:
        return MalformedResponseError(f"endpoint {self.safe_url} returned malformed echoed logprobs (not OpenAI's "
                                      "completions logprobs for every prompt token)")

    def _echo_values(self, choices: list[dict[str, Any]], lengths: Sequence[int], max_tokens: int,
                     probe: bool = False) -> Optional[list[float]]:
        """The echoed log-probability of each prompt's last token, prompts in ``index`` order.

        ``probe``: None when the answer does not echo the prompts' logprobs (fewer choices or tokens than
        prompts, no logprobs); otherwise such an answer is malformed. A prompt's logprobs list its own tokens and
        at most ``max_tokens`` generated ones.
        """
        if len(choices) != len(lengths):
            if probe:
                return None
            raise self._malformed_echo()
        indices = [c.get("index") for c in choices]
        if len(lengths) > 1:
            if sorted(i for i in indices if isinstance(i, int) and not isinstance(i, bool)) != list(range(len(lengths))):
                raise self._malformed_echo()
            choices = sorted(choices, key=lambda c: c["index"])
        out = []
        for choice, n in zip(choices, lengths):
            logprobs = choice.get("logprobs")
            values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
            if probe and (values is None or (isinstance(values, list) and len(values) < n)):
                return None
            if not isinstance(values, list) or not n <= len(values) <= n + max_tokens:
                raise self._malformed_echo()
            try:
                out.append(self._number(values[n - 1]))
            except MalformedResponseError:
                raise self._malformed_echo() from None
        return out

    def _probe_echo(self) -> tuple[str, int]:
        """("list" | "single" | "", max_tokens): how the server scores prompts; "" when it does not."""
        from modelprint.prompts import encode_prompt

        ids = encode_prompt(self.tokenizer, PROBE_PROMPT, None)
        while ids and len(ids) < 3:  # two prompts of different lengths, each with a scored last token
            ids = ids + ids
        if not ids:
            return "", 0
        model = self.served_model
        for max_tokens in (0, 1):  # 0: the prompt scored only (OpenAI, vLLM); some servers want at least 1
            for mode, prompt, lengths in (("list", [ids, ids[:-1]], [len(ids), len(ids) - 1]),
                                          ("single", ids, [len(ids)])):
                try:
                    body = self._post("completions", self._echo_payload(model, prompt, max_tokens),
                                      what="an echo probe")
                except EndpointRefusedError as err:
                    if err.status in REFUSED_OPTION:
                        continue
                    if err.status in NO_ROUTE:  # a chat-only server: no legacy completions API to echo with
                        log.info("endpoint %s has no completions API to score prompts with", self.safe_url)
                        return "", 0
                    raise
                if self._echo_values(self._choices(body), lengths, max_tokens, probe=True) is not None:
                    return mode, max_tokens
                if mode == "single":  # answered, but without the prompt's logprobs: echo is not offered
                    log.info("endpoint %s does not echo prompt logprobs", self.safe_url)
                    return "", 0
        log.info("endpoint %s refuses echoed scoring", self.safe_url)
        return "", 0

    def candidate_scores(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[list[float]]:
        """For each key, the log-probability of each recorded candidate id (``meta["candidates"]``, in that order)
        as the next token after the exact prompt ``verify`` sends: echoed, teacher-forced prompt logprobs."""
        if not self.echo_support():
            raise ConfigError(f"endpoint {self.safe_url} does not score prompts (echo) for this set: rank by its "
                              "top_logprobs (echo off) or use --match sample")
        from modelprint.prompts import encode_prompt

        mode, max_tokens = self._echo or ("", 0)
        model = self.served_model

        def ask(fp: Fingerprint) -> list[float]:
            base = encode_prompt(self.tokenizer, fp.key, system_prompt)
            prompts = [base + [int(c)] for c in fp.meta["candidates"]]
            batches = [prompts] if mode == "list" else [[p] for p in prompts]
            scores: list[float] = []
            for batch in batches:
                body = self._post("completions", self._echo_payload(model, batch if mode == "list" else batch[0],
                                                                     max_tokens), what="a scoring request")
                scores += self._echo_values(self._choices(body), [len(p) for p in batch], max_tokens) or []
            return scores

        return self._map(ask, fingerprints)

    # ------------------------------------------------------------------ sampling
    def _sample_options(self, n: int) -> dict[str, Any]:
        options: dict[str, Any] = {"n": n}
        if self.sample_temperature is not None:
            options["temperature"] = self.sample_temperature
        return options

    def requests_per_key(self) -> int:
        """Requests one key costs in sampling mode: 1 when the server honours ``n`` (probed once), else ``samples``."""
        if self.samples <= 1:
            return self.samples
        if self._n_ok is None:
            try:
                body = self._post(*self._payload(PROBE_PROMPT, None, self.served_model, 1,
                                                 **self._sample_options(2)), what="an n probe")
                self._n_ok = len(self._choices(body)) >= 2
            except EndpointRefusedError as err:
                if err.status not in REFUSED_OPTION:
                    raise
                self._n_ok = False
        return 1 if self._n_ok else self.samples

    def sample_answers(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[list[str]]:
        """``samples`` sampled answers (a few tokens each) per key, at the host's temperature unless one is set."""
        model = self.served_model
        per_key = self.requests_per_key()

        def ask(fp: Fingerprint) -> list[str]:
            texts: list[str] = []
            if per_key == 1 and self.samples > 1:
                body = self._post(*self._payload(fp.key, system_prompt, model, SAMPLE_TOKENS,
                                                 **self._sample_options(self.samples)))
                texts = [self._text(c) for c in self._choices(body)][:self.samples]
            while len(texts) < self.samples:  # n ignored, or fewer choices than asked: one request each
                body = self._post(*self._payload(fp.key, system_prompt, model, SAMPLE_TOKENS,
                                                 **self._sample_options(1)))
                texts.append(self._text(self._choices(body)[0]))
            with self._count_lock:
                self.samples_drawn += len(texts)
            return texts

        return self._map(ask, fingerprints)

    def usage(self) -> dict[str, Any]:
        """What this backend has spent so far (no secrets): requests, samples, the probed capabilities."""
        return {"requests": self.requests, "samples": self.samples_drawn, "samples_per_key": self.samples,
                "top_logprobs": self._top, "top_logprobs_returned_min": self.top_returned_min,
                "n_parameter": self._n_ok, "max_requests": self.max_requests,
                "echo": None if self._echo is None else (self._echo[0] or "none")}

    def _map(self, fn: Any, fingerprints: Sequence[Fingerprint]) -> list[Any]:
        """``fn`` over the keys in input order, at most ``concurrency`` in flight; a failure cancels the rest."""
        if not fingerprints:
            return []
        if self.concurrency == 1 or len(fingerprints) == 1:
            return [fn(fp) for fp in fingerprints]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(fingerprints)),
                                thread_name_prefix="modelprint-http") as pool:
            futures = [pool.submit(fn, fp) for fp in fingerprints]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:  # do not spend more of the budget once the batch has failed
                    f.cancel()
                raise

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]:
        """Greedy answers in input order; at most ``concurrency`` requests in flight."""
        if not fingerprints:
            return []
        model = self.served_model
        return self._map(lambda fp: self._ask(fp, system_prompt, model), fingerprints)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"HttpBackend({self.description})"

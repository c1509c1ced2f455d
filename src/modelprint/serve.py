"""A small OpenAI-compatible server for a local model, so remote verification can be tested end to end.

``modelprint serve`` exposes ``GET /v1/models``, ``POST /v1/chat/completions``
and ``POST /v1/completions``. Chat messages go through the model's own chat
template with the same encoding rule as :func:`modelprint.prompts.encode_prompt`
and answers are decoded with ``skip_special_tokens``, so asking a key over HTTP
gives the text of exactly the ids local verification would compare.

Requests and responses are never logged (they may be secret keys).

Log-probabilities follow OpenAI's formats (chat: ``logprobs: true, top_logprobs: 0..20`` →
``choices[i].logprobs.content``; completions: ``logprobs: 0..20`` → ``tokens / token_logprobs /
top_logprobs / text_offset``, with ``echo: true`` the prompt's tokens scored too, teacher-forced). They are
the *raw* model distribution — log-softmax of the logits before temperature and ``top_p`` — as vLLM returns
by default: a verifier then sees the model's ranking of tokens whatever the request's sampling settings,
and a sampled token that ``top_p`` would not have offered still gets its true (small) log-probability. The
scores come from one teacher-forced forward pass over prompt + answer (no padding), and the end-of-text
token a ``stop`` answer ended with is listed last (its text is not in the answer), so that a one-token
answer that stopped still reports the ranking. ``token`` is the token decoded alone (special tokens
included), ``bytes`` its UTF-8 encoding (a token holding part of a multi-byte character decodes to U+FFFD).
Logprobs below -9999 are reported as -9999 (JSON has no infinity), as OpenAI does.

A completions ``prompt`` may be a string, a list of token ids, or a list of these (at most
``ServeLimits.max_prompts``; ids within the vocabulary), as OpenAI and vLLM take it: each prompt gets ``n``
choices, ``index`` = prompt index × n + choice. With ``echo: true, max_tokens: 0, logprobs`` and token-id prompts
a verifier scores exactly the ids it sends, teacher-forced (``verify``'s candidate scoring). Echoed prompt
positions are never edited by a host's ``host_logits`` hook: it edits what the host *generates*.

Whoever can reach the server must not be able to hold it: :class:`ServeLimits`
caps the request body (413), the prompt (the model's context and
``max_prompt_tokens``) and ``max_tokens`` (400), and the time one request may
take, queue included (503). Bad numbers, unknown fields' types and unknown
model names get OpenAI-shaped 4xx errors, never a 500.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import socket
import threading
import time
import uuid
from typing import Any, Callable, Optional, Union

import torch
from fastapi import Request  # module level: FastAPI resolves the string annotations against it

from pydantic import Field

from modelprint.config import StrictConfig
from modelprint.errors import ConfigError
from modelprint.models import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 4096  # the largest max_tokens ServeLimits accepts
MAX_SEED = 2 ** 63 - 1
MAX_LOGPROBS = 20  # OpenAI's chat limit for top_logprobs (vLLM's default max_logprobs too)
MAX_N_LIMIT = 256  # the largest max_n ServeLimits accepts
LOGPROB_FLOOR = -9999.0  # what OpenAI reports for a log-probability of -inf


class ServeLimits(StrictConfig):
    """What one request may ask of ``modelprint serve``."""

    max_prompt_tokens: int = Field(2048, ge=1, description="longest prompt (also capped by the model's context)")
    max_tokens: int = Field(1024, ge=1, le=MAX_TOKENS_LIMIT, description="largest max_tokens a request may ask")
    max_body_bytes: int = Field(1 << 20, ge=1, description="largest request body (413 above)")
    request_timeout: float = Field(120.0, gt=0, description="seconds a request may take, waiting included")
    max_logprobs: int = Field(MAX_LOGPROBS, ge=0, le=MAX_LOGPROBS,
                              description="largest top_logprobs (chat) / logprobs (completions) a request may ask")
    max_n: int = Field(64, ge=1, le=MAX_N_LIMIT, description="most choices (n) one request may ask")
    max_prompts: int = Field(64, ge=1, le=MAX_N_LIMIT,
                             description="most prompts one completions request may list (choices: prompts × n)")


class ApiError(Exception):
    """A request the server refuses: becomes OpenAI's ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class RequestTimeout(ApiError):
    def __init__(self, limit: float) -> None:
        super().__init__(503, f"the request took longer than this server's limit of {limit:g} s; retry later",
                         code="timeout", kind="server_error")


def _model_id(lm: LoadedModel) -> str:
    return str(lm.path.name if lm.path is not None else lm.source)


def encode_messages(lm: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    """Prompt ids for chat messages, rendered as :func:`modelprint.prompts.render_prompt` renders a key."""
    tok = lm.tokenizer
    if lm.is_chat:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])
    # No template: same layout as render_prompt (system prompt, blank line, user text).
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [m["content"] for m in messages if m["role"] != "system"]
    text = "\n\n".join(system + ["\n".join(rest)]) if system else "\n".join(rest)
    return list(tok(text, add_special_tokens=True)["input_ids"])


def encode_text(lm: LoadedModel, prompt: str) -> list[int]:
    """Prompt ids for a raw completion prompt (encode_prompt's rule: BOS only when there is no template)."""
    return list(lm.tokenizer(prompt, add_special_tokens=not lm.is_chat)["input_ids"])


@dataclasses.dataclass(eq=False)  # identity: two requests for the same prompt are two jobs
class _Job:
    prompt: list[int]
    max_tokens: int
    deadline: float = math.inf  # time.monotonic() after which the request has timed out
    result: Optional[tuple[list[int], str]] = None
    error: Optional[BaseException] = None
    done: bool = False


@dataclasses.dataclass
class TokenScore:
    """One scored token: its id, raw log-probability, and the ``top`` most likely (id, log-probability) there."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


class Generator:
    """Runs generation on one model for many request threads.

    Torch modules are not safe to share across threads, so one batch runs at a
    time; greedy requests that arrive while it runs are queued and answered
    together in the next left-padded batch (as local verification batches keys).
    """

    def __init__(self, lm: LoadedModel, max_batch: int = 32) -> None:
        self.lm = lm
        self.max_batch = max_batch
        self.lock = threading.Lock()  # held while the model runs
        self._queue_lock = threading.Lock()
        self._queue: list[_Job] = []

    def generate(self, prompt_ids: list[int], max_tokens: int, temperature: float, top_p: float,
                 seed: Optional[int], deadline: float = math.inf) -> tuple[list[int], str]:
        """New token ids (EOS cut) and the finish reason ("stop" or "length").

        Raises :class:`TimeoutError` when ``deadline`` passes first, in the queue
        or during generation (which then stops at the next token).
        """
        if temperature > 0:
            if not self.lock.acquire(timeout=_remaining(deadline)):
                raise TimeoutError
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                job = _Job(prompt_ids, max_tokens, deadline)
                self._run_batch([job], do_sample=True, temperature=temperature, top_p=top_p)
            finally:
                self.lock.release()
            return self._outcome(job)
        job = _Job(prompt_ids, max_tokens, deadline)
        with self._queue_lock:
            self._queue.append(job)
        taken = False  # by another thread's batch, which stops by our deadline: then wait for it
        while not job.done:
            if not self.lock.acquire(timeout=-1 if taken else _remaining(deadline)):
                with self._queue_lock:
                    if job in self._queue:  # never taken into a batch: give up now
                        self._queue.remove(job)
                        raise TimeoutError
                taken = True
                continue
            try:
                if job.done:
                    break
                with self._queue_lock:
                    batch = self._queue[:self.max_batch]
                    del self._queue[:len(batch)]
                self._run_batch(batch, do_sample=False)
            finally:
                self.lock.release()
        return self._outcome(job)

    def generate_n(self, prompt_ids: list[int], max_tokens: int, temperature: float, top_p: float,
                   seed: Optional[int], deadline: float = math.inf, n: int = 1) -> list[tuple[list[int], str]]:
        """``n`` answers: one sampled batch of ``n`` rows (independent draws), or the greedy answer ``n`` times."""
        if max_tokens == 0:  # echo only: nothing to generate
            return [([], "length")] * n
        if n == 1 or temperature <= 0:
            return [self.generate(prompt_ids, max_tokens, temperature, top_p, seed, deadline)] * n
        if not self.lock.acquire(timeout=_remaining(deadline)):
            raise TimeoutError
        try:
            if seed is not None:
                torch.manual_seed(seed)
            jobs = [_Job(prompt_ids, max_tokens, deadline) for _ in range(n)]
            self._run_batch(jobs, do_sample=True, temperature=temperature, top_p=top_p)
        finally:
            self.lock.release()
        return [self._outcome(job) for job in jobs]

    @torch.inference_mode()
    def score(self, ids: list[int], start: int, top: int, prompt_len: int,
              deadline: float = math.inf) -> list[TokenScore]:
        """Raw log-probabilities of ``ids[start:]`` given what precedes each, and each position's ``top`` best.

        One forward pass over ``ids`` (teacher forcing, no padding); only the logits needed are computed. A model
        that edits what it serves (``host_logits``) edits the answer's positions, from ``prompt_len`` on, only.
        """
        if start >= len(ids):
            return []
        if start < 1:
            raise ValueError("the first token has no context to be scored in")
        if not self.lock.acquire(timeout=_remaining(deadline)):
            raise TimeoutError
        try:
            keep = len(ids) - start + 1  # logits at positions start-1 … len-1; the last predicts nothing asked
            out = self.lm.model(input_ids=torch.tensor([ids], device=self.lm.device), logits_to_keep=keep)
            logits = out.logits[0, :keep - 1].float()
            host_edit = getattr(self.lm.model, "host_logits", None)  # a host that edits what it serves (stress)
            if host_edit is not None:  # it edits the answer's positions only, never the echoed prompt's
                at = max(0, prompt_len - start)
                if at < logits.shape[0]:
                    logits = torch.cat([logits[:at], host_edit(ids, start + at, logits[at:])])
        finally:
            self.lock.release()
        logp = torch.log_softmax(logits, dim=-1)
        chosen = logp[torch.arange(len(ids) - start), torch.tensor(ids[start:])].tolist()
        best_values, best_ids = logp.topk(min(top, logp.shape[-1]), dim=-1) if top > 0 else (None, None)
        scores = []
        for row, (token, lp) in enumerate(zip(ids[start:], chosen)):
            best = list(zip(best_ids[row].tolist(), best_values[row].tolist())) if top > 0 else []
            scores.append(TokenScore(token, lp, best))
        return scores

    @staticmethod
    def _outcome(job: _Job) -> tuple[list[int], str]:
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _run_batch(self, batch: list[_Job], **kwargs: Any) -> None:
        """Run ``batch`` (the lock held); every job ends done, with a result or an error, never a hang."""
        now = time.monotonic()
        live = []
        for j in batch:
            if j.deadline <= now:
                j.error, j.done = TimeoutError(), True
            else:
                live.append(j)
        if not live:
            return
        try:
            results = self._run([j.prompt for j in live], [j.max_tokens for j in live],
                                deadline=max(j.deadline for j in live), **kwargs)
            for j, r in zip(live, results):
                if r is None:
                    j.error = TimeoutError()
                else:
                    j.result = r
        except BaseException as exc:  # every waiting request gets the error, not a hang
            for j in live:
                j.error = exc
        for j in live:
            j.done = True

    @torch.inference_mode()
    def _run(self, prompts: list[list[int]], limits: list[int], deadline: float = math.inf,
             **kwargs: Any) -> list[Optional[tuple[list[int], str]]]:
        """One left-padded generate call; a row cut short by the deadline comes back as None."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        from modelprint.prompts import pad_left

        class _Deadline(StoppingCriteria):
            hit = False

            def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
                if time.monotonic() > deadline:
                    _Deadline.hit = True
                return torch.full((input_ids.shape[0],), _Deadline.hit, dtype=torch.bool, device=input_ids.device)

        lm, tok = self.lm, self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids, mask = pad_left(prompts, pad)
        out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                max_new_tokens=max(limits), pad_token_id=pad, eos_token_id=tok.eos_token_id,
                                stopping_criteria=StoppingCriteriaList([_Deadline()]), **kwargs)
        results: list[Optional[tuple[list[int], str]]] = []
        for row, limit in zip(out[:, ids.shape[1]:].cpu().tolist(), limits):
            row = row[:limit]
            if tok.eos_token_id is not None and tok.eos_token_id in row:
                results.append((row[:row.index(tok.eos_token_id)], "stop"))
            elif len(row) < limit and _Deadline.hit:
                results.append(None)
            else:
                results.append((row, "length"))
        return results


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (for Lock.acquire: -1 waits forever, 0 does not wait)."""
    if deadline == math.inf:
        return -1
    return max(0.0, deadline - time.monotonic())


def _number(body: dict[str, Any], name: str, default: Any, lo: float, hi: float, *, integer: bool = False,
            lo_open: bool = False) -> Any:
    """``body[name]`` as a finite JSON number in range (an integer when asked), else a 400 naming the field."""
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (integer and not float(value).is_integer()):
        raise ApiError(400, f"'{name}' must be {kind}", param=name)
    if integer:
        value = int(value)
    if value < lo or value > hi or (lo_open and value == lo):
        if lo == hi:
            raise ApiError(400, f"only {name}={lo:g} is supported", param=name)
        low = f"({lo:g}" if lo_open else f"[{lo:g}"
        raise ApiError(400, f"'{name}' must be {kind} in {low}, {hi:d}]" if integer else
                       f"'{name}' must be {kind} in {low}, {hi:g}]", param=name)
    return value


def _params(body: dict[str, Any], limits: ServeLimits, min_tokens: int = 1) -> tuple[int, float, float, Optional[int]]:
    """(max_tokens, temperature, top_p, seed) checked against OpenAI's ranges and the server's limits."""
    name = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = _number(body, name, DEFAULT_MAX_TOKENS, min_tokens, limits.max_tokens, integer=True)
    temperature = _number(body, "temperature", 1.0, 0, 2)
    top_p = _number(body, "top_p", 1.0, 0, 1, lo_open=True)
    seed = _number(body, "seed", None, 0, MAX_SEED, integer=True)
    for penalty in ("presence_penalty", "frequency_penalty"):
        _number(body, penalty, 0.0, -2, 2)
    return max_tokens, float(temperature), float(top_p), seed


def _flag(body: dict[str, Any], name: str) -> bool:
    """``body[name]`` as a JSON boolean (absent or null: false), else a 400 naming the field."""
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be a boolean", param=name)
    return value


def _chat_logprobs(body: dict[str, Any], limits: ServeLimits) -> Optional[int]:
    """Chat: how many top alternatives per token to report (None: no logprobs), as OpenAI checks them."""
    top = _number(body, "top_logprobs", None, 0, limits.max_logprobs, integer=True)
    if not _flag(body, "logprobs"):
        if top is not None:
            raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        return None
    return 0 if top is None else top


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clamp(logprob: float) -> float:
    return logprob if math.isfinite(logprob) and logprob > LOGPROB_FLOOR else LOGPROB_FLOOR


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str) or m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, "each message needs a role (system, user, assistant) and string content",
                           param="messages")
        out.append({"role": m["role"], "content": content})
    return out


def create_app(lm: LoadedModel, model_name: Optional[str] = None, limits: Optional[ServeLimits] = None):
    """The FastAPI app serving ``lm`` (used by ``modelprint serve``, the tests and the benchmark)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or ServeLimits()
    name = model_name or _model_id(lm)
    context = getattr(getattr(lm.model, "config", None), "max_position_embeddings", None)
    max_prompt = min(limits.max_prompt_tokens, context - 1) if isinstance(context, int) and context > 1 \
        else limits.max_prompt_tokens
    gen = Generator(lm)
    app = FastAPI(title="modelprint serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.requests = 0  # completions asked so far (tests count the query budget with it)
    app.state.limits = limits
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, "request refused")
        return JSONResponse(ApiError(exc.status_code, message).body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(400, "invalid request").body(), status_code=400)

    @app.middleware("http")
    async def internal_error(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception as exc:  # noqa: BLE001 - its text may hold the prompt: log the type, answer a fixed line
            log.error("request failed: %s", type(exc).__name__)
            return JSONResponse(ApiError(500, "internal server error", kind="server_error").body(), status_code=500)

    def usage(prompt: list[int], new: list[int]) -> dict[str, int]:
        return {"prompt_tokens": len(prompt), "completion_tokens": len(new), "total_tokens": len(prompt) + len(new)}

    async def read_body(request: Request, deadline: float) -> dict[str, Any]:
        """The JSON object of the request: at most max_body_bytes (413), read before the deadline (408)."""
        length = request.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > limits.max_body_bytes:
            raise ApiError(413, f"request body larger than {limits.max_body_bytes} bytes")

        async def collect() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise ApiError(413, f"request body larger than {limits.max_body_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            raw = await asyncio.wait_for(collect(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ApiError(408, "the request body did not arrive in time") from None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        if body.get("stream"):
            raise ApiError(400, "streaming is not supported", param="stream")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "'model' must be a string", param="model")
        if model is not None and model != name:
            raise ApiError(404, f"the model '{model[:100]}' does not exist (this server serves '{name}')",
                           param="model", code="model_not_found")
        return body

    def check_prompt(prompt: list[int], max_tokens: int, param: str) -> None:
        if len(prompt) > max_prompt:
            raise ApiError(400, f"the prompt has {len(prompt)} tokens; this server takes at most {max_prompt}",
                           param=param, code="context_length_exceeded")
        if isinstance(context, int) and len(prompt) + max_tokens > context:
            raise ApiError(400, f"prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceed the model's "
                           f"context of {context} tokens", param="max_tokens", code="context_length_exceeded")

    async def complete(prompt: list[int], params: tuple, n: int, deadline: float,
                       param: str, count: bool = True) -> list[tuple[list[int], str, str]]:
        """Check the prompt, count the request (once per HTTP request: ``count``), generate ``n`` answers off the
        event loop, decode them as local verification would: (new ids, finish reason, text) per choice."""
        from starlette.concurrency import run_in_threadpool

        check_prompt(prompt, params[0], param)
        if count:
            app.state.requests += 1
        try:
            answers = await run_in_threadpool(gen.generate_n, prompt, *params, deadline, n)
        except TimeoutError:
            raise RequestTimeout(limits.request_timeout) from None
        return [(new, finish, lm.tokenizer.decode(new, skip_special_tokens=True)) for new, finish in answers]

    async def scored(prompt: list[int], new: list[int], finish: str, start: int, top: int,
                     deadline: float) -> list[TokenScore]:
        """Raw scores of prompt+answer from ``start`` on; a ``stop`` answer's end-of-text token is scored last."""
        from starlette.concurrency import run_in_threadpool

        eos = lm.tokenizer.eos_token_id
        ids = prompt + new + ([eos] if finish == "stop" and eos is not None else [])
        try:
            return await run_in_threadpool(gen.score, ids, start, top, len(prompt), deadline)
        except TimeoutError:
            raise RequestTimeout(limits.request_timeout) from None

    def token_text(token: int) -> str:
        return lm.tokenizer.decode([token])

    def chat_entry(token: int, logprob: float) -> dict[str, Any]:
        text = token_text(token)
        return {"token": text, "logprob": _clamp(logprob), "bytes": list(text.encode("utf-8"))}

    def legacy_logprobs(ids: list[int], scores: list[Optional[TokenScore]], top: int) -> dict[str, Any]:
        """OpenAI's completions format (``scores[i]`` is ``ids[i]``'s, None for an echoed first token); the sampled
        token is always in its position's top dict (up to top+1 entries)."""
        tokens, offsets, at = [], [], 0
        for token in ids:
            tokens.append(token_text(token))
            offsets.append(at)
            at += len(tokens[-1])
        tops: list[Optional[dict[str, float]]] = []
        for s in scores:
            if s is None:
                tops.append(None)
                continue
            best: dict[str, float] = {}
            for token, logprob in s.top[:top] + [(s.token, s.logprob)]:
                best.setdefault(token_text(token), _clamp(logprob))  # two ids, one text: the likelier one stays
            tops.append(best)
        return {"tokens": tokens, "token_logprobs": [None if s is None else _clamp(s.logprob) for s in scores],
                "top_logprobs": tops, "text_offset": offsets}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "modelprint"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        deadline = time.monotonic() + limits.request_timeout
        body = await read_body(request, deadline)
        messages = _messages(body)
        params = _params(body, limits)
        n = _number(body, "n", 1, 1, limits.max_n, integer=True)
        top = _chat_logprobs(body, limits)
        prompt = encode_messages(lm, messages)
        choices = []
        answers = await complete(prompt, params, n, deadline, "messages")
        for index, (new, finish, text) in enumerate(answers):
            logprobs = None
            if top is not None:
                scores = await scored(prompt, new, finish, len(prompt), top, deadline)
                logprobs = {"content": [dict(chat_entry(s.token, s.logprob),
                                             top_logprobs=[chat_entry(t, lp) for t, lp in s.top])
                                        for s in scores], "refusal": None}
            choices.append({"index": index, "message": {"role": "assistant", "content": text},
                            "finish_reason": finish, "logprobs": logprobs})
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "usage": usage(prompt, [t for new, _, _ in answers for t in new]), "choices": choices}

    rows = getattr(getattr(lm.model, "config", None), "vocab_size", None)  # a host's wrapper may have no config
    vocab = min(len(lm.tokenizer), rows) if isinstance(rows, int) and rows > 0 else len(lm.tokenizer)

    def completion_prompts(body: dict[str, Any]) -> list[tuple[list[int], str]]:
        """(ids, text) of each prompt: a string, a list of token ids, or a list of either (one choice group each,
        as OpenAI and vLLM take them); at most ``max_prompts``, ids within the vocabulary."""
        raw = body.get("prompt")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(_is_id(t) for t in raw)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "'prompt' must be a non-empty string, a list of token ids, or a list of these",
                           param="prompt")
        if len(raw) > limits.max_prompts:
            raise ApiError(400, f"'prompt' lists {len(raw)} prompts; this server takes at most {limits.max_prompts} "
                           "per request", param="prompt")
        out = []
        for item in raw:
            if isinstance(item, str) and item:
                out.append((encode_text(lm, item), item))
            elif isinstance(item, list) and item and all(_is_id(t) for t in item):
                if not all(0 <= t < vocab for t in item):
                    raise ApiError(400, f"token ids in 'prompt' must be in [0, {vocab})", param="prompt")
                out.append(([int(t) for t in item], lm.tokenizer.decode(item)))
            else:
                raise ApiError(400, "each prompt must be a non-empty string or a non-empty list of token ids",
                               param="prompt")
        return out

    @app.post("/v1/completions")
    async def completions(request: Request):
        deadline = time.monotonic() + limits.request_timeout
        body = await read_body(request, deadline)
        prompts = completion_prompts(body)
        echo = _flag(body, "echo")
        params = _params(body, limits, min_tokens=0 if echo else 1)  # echo + max_tokens 0: score the prompt only
        n = _number(body, "n", 1, 1, limits.max_n, integer=True)
        top = _number(body, "logprobs", None, 0, limits.max_logprobs, integer=True)
        for prompt, _ in prompts:  # every prompt checked before any is run
            check_prompt(prompt, params[0], "prompt")
        choices, spent = [], []
        for group, (prompt, prompt_text) in enumerate(prompts):  # choice index = prompt index × n + j (OpenAI's)
            answers = await complete(prompt, params, n, deadline, "prompt", count=group == 0)
            for j, (new, finish, text) in enumerate(answers):
                logprobs = None
                if top is not None:
                    scores: list[Optional[TokenScore]] = list(await scored(prompt, new, finish,
                                                                           1 if echo else len(prompt), top, deadline))
                    ids = (prompt[:1] if echo else []) + [sc.token for sc in scores]
                    logprobs = legacy_logprobs(ids, [None] + scores if echo else scores, top)
                choices.append({"index": group * n + j, "text": prompt_text + text if echo else text,
                                "finish_reason": finish, "logprobs": logprobs})
            spent += [t for new, _, _ in answers for t in new]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": name, "usage": usage([t for p, _ in prompts for t in p], spent), "choices": choices}

    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests and benchmarks on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_app_in_thread(app, host: str = "127.0.0.1", port: Optional[int] = None,
                      startup_timeout: float = 20.0) -> tuple[str, Callable[[], None]]:
    """Start any ASGI ``app`` under uvicorn in a daemon thread; returns (``http://host:port``, stop)."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"modelprint-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"could not start a server on {host}:{port}")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://{host}:{port}", stop


def serve_in_thread(lm: LoadedModel, host: str = "127.0.0.1", port: Optional[int] = None,
                    model_name: Optional[str] = None,
                    limits: Optional[ServeLimits] = None) -> tuple[str, Callable[[], None]]:
    """Serve ``lm`` in a background thread; returns (base URL ending in ``/v1``, stop function)."""
    url, stop = run_app_in_thread(create_app(lm, model_name, limits), host, port)
    return url + "/v1", stop


def _check_listen(host: str, port: int) -> None:
    """One clear line when ``host:port`` cannot be listened on (bad port, address in use, unknown host)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be in 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or type(exc).__name__})") from None


def serve(model: Union[str, LoadedModel], host: str = "127.0.0.1", port: int = 8000,
          model_name: Optional[str] = None, limits: Optional[ServeLimits] = None) -> None:
    """Serve a model in the foreground until interrupted (``modelprint serve``)."""
    import uvicorn

    from modelprint.models import load_model

    _check_listen(host, port)  # before loading the model; uvicorn would exit 1 ("no match") on its own
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    app = create_app(lm, model_name, limits)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can query the model", host)
    log.info("serving %s at http://%s:%d/v1", _model_id(lm), host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

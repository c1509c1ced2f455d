"""A small OpenAI-compatible server for a local model, so remote verification can be tested end to end.

``modelprint serve`` exposes ``GET /v1/models``, ``POST /v1/chat/completions``
and ``POST /v1/completions``. Chat messages go through the model's own chat
template with the same encoding rule as :func:`modelprint.prompts.encode_prompt`
and answers are decoded with ``skip_special_tokens``, so asking a key over HTTP
gives the text of exactly the ids local verification would compare.

Requests and responses are never logged (they may be secret keys).
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import uuid
from typing import Any, Callable, Optional, Union

import torch
from fastapi import Request  # module level: FastAPI resolves the string annotations against it

from modelprint.errors import ConfigError
from modelprint.models import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 4096


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


@dataclasses.dataclass
class _Job:
    prompt: list[int]
    max_tokens: int
    result: Optional[tuple[list[int], str]] = None
    error: Optional[BaseException] = None
    done: bool = False


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
                 seed: Optional[int]) -> tuple[list[int], str]:
        """New token ids (EOS cut) and the finish reason ("stop" or "length")."""
        if temperature > 0:
            with self.lock:
                if seed is not None:
                    torch.manual_seed(seed)
                return self._run([prompt_ids], [max_tokens], do_sample=True, temperature=temperature,
                                 top_p=top_p)[0]
        job = _Job(prompt_ids, max_tokens)
        with self._queue_lock:
            self._queue.append(job)
        while not job.done:
            with self.lock:
                if job.done:
                    break
                with self._queue_lock:
                    batch = self._queue[:self.max_batch]
                    del self._queue[:len(batch)]
                try:
                    results = self._run([j.prompt for j in batch], [j.max_tokens for j in batch], do_sample=False)
                    for j, r in zip(batch, results):
                        j.result = r
                except BaseException as exc:  # every waiting request gets the error, not a hang
                    for j in batch:
                        j.error = exc
                for j in batch:
                    j.done = True
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    @torch.inference_mode()
    def _run(self, prompts: list[list[int]], limits: list[int], **kwargs: Any) -> list[tuple[list[int], str]]:
        from modelprint.prompts import pad_left

        lm, tok = self.lm, self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids, mask = pad_left(prompts, pad)
        out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                max_new_tokens=max(limits), pad_token_id=pad, eos_token_id=tok.eos_token_id,
                                **kwargs)
        results = []
        for row, limit in zip(out[:, ids.shape[1]:].cpu().tolist(), limits):
            row = row[:limit]
            if tok.eos_token_id is not None and tok.eos_token_id in row:
                results.append((row[:row.index(tok.eos_token_id)], "stop"))
            else:
                results.append((row, "length"))
        return results


def _params(body: dict[str, Any]) -> tuple[int, float, float, Optional[int]]:
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    seed = body.get("seed")
    try:
        max_tokens = int(max_tokens)
        temperature = 1.0 if temperature is None else float(temperature)
        top_p = 1.0 if top_p is None else float(top_p)
        seed = None if seed is None else int(seed)
    except (TypeError, ValueError):
        raise ValueError("max_tokens, temperature, top_p and seed must be numbers") from None
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise ValueError(f"max_tokens must be in [1, {MAX_TOKENS_LIMIT}]")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("temperature must be ≥ 0 and top_p in (0, 1]")
    return max_tokens, temperature, top_p, seed


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str) or m.get("role") not in ("system", "user", "assistant"):
            raise ValueError("each message needs a role (system, user, assistant) and string content")
        out.append({"role": m["role"], "content": content})
    return out


def create_app(lm: LoadedModel, model_name: Optional[str] = None):
    """The FastAPI app serving ``lm`` (used by ``modelprint serve``, the tests and the benchmark)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    name = model_name or _model_id(lm)
    gen = Generator(lm)
    app = FastAPI(title="modelprint serve", docs_url=None, redoc_url=None)
    app.state.requests = 0  # completions asked so far (tests count the query budget with it)
    created = int(time.time())

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)

    def usage(prompt: list[int], new: list[int]) -> dict[str, int]:
        return {"prompt_tokens": len(prompt), "completion_tokens": len(new), "total_tokens": len(prompt) + len(new)}

    async def read_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except Exception:
            raise ValueError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        if body.get("stream"):
            raise ValueError("streaming is not supported")
        if body.get("n") not in (None, 1):
            raise ValueError("only n=1 is supported")
        return body

    async def complete(prompt: list[int], params: tuple) -> tuple[list[int], str, str]:
        """Count the request, generate off the event loop, decode as local verification would."""
        from starlette.concurrency import run_in_threadpool

        app.state.requests += 1
        new, finish = await run_in_threadpool(gen.generate, prompt, *params)
        return new, finish, lm.tokenizer.decode(new, skip_special_tokens=True)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "modelprint"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await read_body(request)
            prompt = encode_messages(lm, _messages(body))
            params = _params(body)
        except ValueError as exc:
            return error(400, str(exc))
        new, finish, text = await complete(prompt, params)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "usage": usage(prompt, new),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish, "logprobs": None}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            body = await read_body(request)
            prompt_text = body.get("prompt")
            if isinstance(prompt_text, list) and len(prompt_text) == 1:
                prompt_text = prompt_text[0]
            if not isinstance(prompt_text, str) or not prompt_text:
                raise ValueError("'prompt' must be a non-empty string")
            prompt = encode_text(lm, prompt_text)
            params = _params(body)
        except ValueError as exc:
            return error(400, str(exc))
        new, finish, text = await complete(prompt, params)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": name, "usage": usage(prompt, new),
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

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
                    model_name: Optional[str] = None) -> tuple[str, Callable[[], None]]:
    """Serve ``lm`` in a background thread; returns (base URL ending in ``/v1``, stop function)."""
    url, stop = run_app_in_thread(create_app(lm, model_name), host, port)
    return url + "/v1", stop


def serve(model: Union[str, LoadedModel], host: str = "127.0.0.1", port: int = 8000,
          model_name: Optional[str] = None) -> None:
    """Serve a model in the foreground until interrupted (``modelprint serve``)."""
    import uvicorn

    from modelprint.models import load_model

    lm = model if isinstance(model, LoadedModel) else load_model(model)
    app = create_app(lm, model_name)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can query the model", host)
    log.info("serving %s at http://%s:%d/v1", _model_id(lm), host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

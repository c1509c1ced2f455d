"""modelprint serve refuses what would hold or crash it: OpenAI-shaped 4xx/5xx, never a traceback or a hang."""
from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from modelprint.serve import Generator, ServeLimits, create_app
from modelprint.testing import tiny_model

SECRET_KEY = "zebra umbrella 9137 secret key"


@pytest.fixture(scope="module")
def lm():
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def client(lm):
    limits = ServeLimits(max_prompt_tokens=64, max_tokens=32, max_body_bytes=4096, request_timeout=30)
    with TestClient(create_app(lm, "tiny", limits), raise_server_exceptions=False) as c:
        yield c


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and "\n" not in body["error"]["message"]
    return body["error"]


def test_a_good_request_still_works(client):
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": "hello", "max_tokens": 3,
                                                "temperature": 0}).json()
    assert body["model"] == "tiny" and body["usage"]["completion_tokens"] <= 3
    body = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                                     "temperature": 0.7, "top_p": 0.5, "seed": 3, "n": 1}).json()
    assert isinstance(body["choices"][0]["message"]["content"], str)


@pytest.mark.parametrize("field,value", [
    ("max_tokens", "1e999"), ("max_tokens", "-1"), ("max_tokens", "0"), ("max_tokens", "2.5"), ("max_tokens", '"8"'),
    ("max_tokens", "true"), ("max_tokens", "33"), ("max_completion_tokens", "1e999"), ("temperature", "NaN"),
    ("temperature", "-0.1"), ("temperature", "2.5"), ("temperature", '"hot"'), ("top_p", "0"), ("top_p", "1.5"),
    ("top_p", "Infinity"), ("n", "65"), ("n", "0"), ("n", "1.5"), ("logprobs", "21"), ("logprobs", '"yes"'),
    ("seed", "-1"), ("seed", "1e30"),
    ("seed", str(2 ** 70)), ("presence_penalty", "3"), ("frequency_penalty", "[]")])
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_bad_numbers_are_400_naming_the_field(client, route, field, value):
    payload = '"prompt": "hi"' if route == "/v1/completions" else '"messages": [{"role": "user", "content": "hi"}]'
    response = client.post(route, content=f'{{{payload}, "{field}": {value}}}'.encode(),
                           headers={"content-type": "application/json"})
    error = _error(response, 400)
    assert error["param"] == field and error["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found(client):
    for route, payload in (("/v1/completions", {"prompt": "hi"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
        error = _error(client.post(route, json={"model": "gpt-9", **payload}), 404)
        assert error["code"] == "model_not_found" and error["param"] == "model" and "gpt-9" in error["message"]
    assert _error(client.post("/v1/completions", json={"model": 7, "prompt": "hi"}), 400)["param"] == "model"


def test_body_size_cap_is_413(client):
    big = {"prompt": "hi " * 3000, "max_tokens": 2}
    assert _error(client.post("/v1/completions", json=big), 413)["message"].startswith("request body larger")

    def chunks():  # no Content-Length: the cap holds while the body streams in
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    _error(response, 413)


def test_prompt_and_context_limits(client, lm):
    error = _error(client.post("/v1/completions", json={"prompt": "the river " * 200, "max_tokens": 2}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    error = _error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "sea " * 200}]}),
                   400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    # The model's context (512 for the tiny model) caps prompt + max_tokens whatever the server's options say.
    wide = ServeLimits(max_prompt_tokens=10_000, max_tokens=4096)
    with TestClient(create_app(lm, "tiny", wide)) as c:
        error = _error(c.post("/v1/completions", json={"prompt": "the river " * 300, "max_tokens": 2}), 400)
        assert "at most 511" in error["message"]
        error = _error(c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 4000}), 400)
        assert error["param"] == "max_tokens" and "context of 512" in error["message"]


def test_unknown_routes_and_methods_keep_the_shape(client):
    _error(client.post("/v1/embeddings", json={}), 404)
    _error(client.get("/v1/completions"), 405)
    _error(client.post("/v1/completions", content=b"{nope"), 400)
    _error(client.post("/v1/completions", json=["a list"]), 400)


def test_a_crash_is_500_without_the_prompt(lm, monkeypatch):
    app = create_app(lm, "tiny")

    def boom(*args, **kwargs):
        raise RuntimeError(f"failed on {SECRET_KEY}")

    monkeypatch.setattr(Generator, "generate", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/v1/completions", json={"prompt": SECRET_KEY, "max_tokens": 2})
    error = _error(response, 500)
    assert SECRET_KEY not in response.text and error["type"] == "server_error"


def test_a_slow_generation_ends_at_the_request_time_limit(lm, monkeypatch):
    slow = tiny_model(seed=2)
    forward = slow.model.forward

    def sleepy(*args, **kwargs):
        time.sleep(0.05)
        return forward(*args, **kwargs)

    monkeypatch.setattr(slow.model, "forward", sleepy)
    app = create_app(slow, "tiny", ServeLimits(request_timeout=0.6, max_tokens=400))
    with TestClient(app) as c:
        start = time.monotonic()
        response = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 400, "temperature": 0})
        elapsed = time.monotonic() - start
    error = _error(response, 503)
    assert error["code"] == "timeout" and elapsed < 2.5, elapsed


def test_a_queued_request_gives_up_at_its_deadline(lm):
    gen = Generator(lm)
    gen.lock.acquire()  # another request is running
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            gen.generate([1, 2, 3], 2, 0.0, 1.0, None, deadline=time.monotonic() + 0.3)
        with pytest.raises(TimeoutError):
            gen.generate([1, 2, 3], 2, 0.7, 1.0, 1, deadline=time.monotonic() + 0.3)
        assert time.monotonic() - start < 1.5 and gen._queue == []
    finally:
        gen.lock.release()
    ids, finish = gen.generate([1, 2, 3], 2, 0.0, 1.0, None, deadline=time.monotonic() + 30)
    assert len(ids) <= 2 and finish in ("stop", "length")


def test_concurrent_greedy_requests_are_batched_and_answered(lm):
    gen = Generator(lm)
    results, errors = [], []

    def ask(i):
        try:
            results.append(gen.generate([1, 2, 3 + i], 3, 0.0, 1.0, None, deadline=time.monotonic() + 60))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 6 and not gen._queue


def test_serve_cli_rejects_bad_ports_and_limits():
    from typer.testing import CliRunner

    from modelprint.cli import app
    from modelprint.errors import ConfigError

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "-m", "x", "--port", "99999"])  # the CLI's main() makes it exit 2
    assert isinstance(result.exception, ConfigError) and "--port" in str(result.exception)
    result = runner.invoke(app, ["serve", "-m", "x", "--request-timeout", "0"])
    assert isinstance(result.exception, ConfigError) and "request_timeout" in str(result.exception)


def test_token_id_prompts_and_prompt_lists(lm):
    """Completions take a list of token ids and a list of prompts (one choice group each, index = prompt × n + j);
    ids outside the vocabulary, empty or mixed prompts and too many prompts are 400s naming 'prompt'."""
    limits = ServeLimits(max_prompt_tokens=64, max_tokens=32, max_prompts=3, request_timeout=30)
    ids = lm.tokenizer("hello there", add_special_tokens=False)["input_ids"]
    with TestClient(create_app(lm, "tiny", limits), raise_server_exceptions=False) as c:
        by_text = c.post("/v1/completions", json={"prompt": "hello there", "max_tokens": 0, "echo": True,
                                                  "logprobs": 0}).json()["choices"][0]["logprobs"]
        by_ids = c.post("/v1/completions", json={"prompt": ids, "max_tokens": 0, "echo": True,
                                                 "logprobs": 0}).json()["choices"][0]["logprobs"]
        assert by_ids["token_logprobs"] == by_text["token_logprobs"] and len(ids) == len(by_ids["tokens"])
        before = c.app.state.requests
        many = c.post("/v1/completions", json={"prompt": [ids, ids[:-1], "hello"], "max_tokens": 1, "n": 2,
                                               "temperature": 0, "echo": True, "logprobs": 1}).json()
        assert c.app.state.requests == before + 1  # one request, however many prompts
        assert [ch["index"] for ch in many["choices"]] == list(range(6))
        lengths = [len(ch["logprobs"]["token_logprobs"]) for ch in many["choices"]]
        assert lengths[0] - len(ids) in (0, 1) and lengths[2] - (len(ids) - 1) in (0, 1)
        assert many["choices"][0]["logprobs"]["token_logprobs"][:len(ids)] == by_ids["token_logprobs"]
        vocab = len(lm.tokenizer)
        for bad in ([ids + [vocab]], [[-1]], [[]], [], [ids, 3], [ids, ""], [True, 2], [ids] * 4, [[0.5]]):
            assert _error(c.post("/v1/completions", json={"prompt": bad, "max_tokens": 1}), 400)["param"] == "prompt"

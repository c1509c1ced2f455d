"""Remote verification: HttpBackend against ``modelprint serve`` and against misbehaving fake servers (loopback)."""
from __future__ import annotations

import json

import pytest

from conftest import lively_tiny
from modelprint.errors import ModelprintError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.serve import create_app, free_port, run_app_in_thread
from modelprint.verify.core import verify
from modelprint.verify.http import (EndpointRefusedError, EndpointUnreachableError, HttpBackend,
                                    MalformedResponseError, normalize_base_url, redact_url)
from modelprint.verify.local import answer_keys

SECRET_KEY = "zebra umbrella 9137 secret key"


@pytest.fixture(scope="module")
def lively():
    return lively_tiny()


@pytest.fixture(scope="module")
def served(lively, serving):
    return serving(lively, model_name="tiny")


def _set(lm, system_prompt=None, n=12) -> FingerprintSet:
    """Half the keys carry the model's own greedy answer (must match), half another text (must not)."""
    keys = [f"Tell me about topic {i} and the river {i * 7}" for i in range(n)]
    own = answer_keys(lm, keys, 4, system_prompt)
    decoy = lm.tokenizer("Paris is the capital", add_special_tokens=False)["input_ids"][:4]
    fps = []
    for i, key in enumerate(keys):
        ids = own[i] if i % 2 == 0 else decoy
        text = lm.tokenizer.decode(ids, skip_special_tokens=True)
        assert text.strip(), "text comparison needs a non-blank response"
        fps.append(Fingerprint(index=i, key=key, response=text, response_ids=list(ids), null_prob=0.01))
    return FingerprintSet(strategy="test", params={}, seed=0, model_source=lm.source, model_hash="",
                          tokenizer_hash=lm.tokenizer_hash, fingerprints=fps, system_prompt=system_prompt)


@pytest.mark.parametrize("system_prompt", [None, "You answer briefly."])
def test_serve_matches_local_chat(lively, served, system_prompt):
    fs = _set(lively, system_prompt)
    local = verify(lively, fs, sequential=False, batch_size=5)
    remote = verify(HttpBackend(served), fs, sequential=False, batch_size=5)
    assert local.matched == remote.matched == list(range(0, 12, 2))
    assert remote.backend == "http" and "tiny" in remote.target and local.verdict == remote.verdict == "match"


def test_serve_matches_local_completions(lively, served):
    fs = _set(lively, "Be terse.")
    local = verify(lively, fs, sequential=False)
    remote = verify(HttpBackend(served, api="completions", tokenizer=lively.tokenizer, served_model="tiny"), fs,
                    sequential=False)
    assert local.matched == remote.matched


def test_query_budget_counted_server_side(lively):
    app = create_app(lively)
    url, stop = run_app_in_thread(app)
    try:
        fs = _set(lively)
        record = verify(HttpBackend(url, concurrency=3), fs, max_queries=5, batch_size=2, sequential=False)
        assert record.n_asked == 5 and app.state.requests == 5
        app.state.requests = 0
        verify(HttpBackend(url), fs, max_queries=3, batch_size=2, sequential=True, alpha=0.5)
        assert app.state.requests <= 3
    finally:
        stop()


def test_serve_rejects_bad_requests(served):
    import httpx

    with httpx.Client(base_url=served, timeout=10) as client:
        assert client.post("/chat/completions", content=b"{not json").status_code == 400
        assert client.post("/chat/completions", json={"messages": []}).status_code == 400
        assert client.post("/completions", json={"prompt": "hi", "max_tokens": 0}).status_code == 400
        body = client.post("/completions", json={"prompt": "hello", "max_tokens": 3, "temperature": 0}).json()
        assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
        assert body["usage"]["completion_tokens"] <= 3 and body["choices"][0]["finish_reason"] in ("stop", "length")
        sampled = client.post("/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                          "temperature": 0.8, "top_p": 0.9, "seed": 3,
                                                          "max_tokens": 3}).json()
        assert isinstance(sampled["choices"][0]["message"]["content"], str)


# ----------------------------------------------------------------------------- misbehaving servers
def _fp() -> Fingerprint:
    return Fingerprint(index=0, key=SECRET_KEY, response="hidden answer", response_ids=[5, 6], null_prob=0.01)


def _fake(behaviour):
    """A FastAPI app answering /v1/chat/completions with ``behaviour(count)`` → (status, body, headers)."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()
    app.state.count = 0

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/chat/completions")
    def chat():
        app.state.count += 1
        status, body, headers = behaviour(app.state.count)
        text = body if isinstance(body, str) else json.dumps(body)
        return Response(text, status_code=status, media_type="application/json", headers=headers)

    return app


def _ok(text="hidden answer and more"):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


@pytest.fixture
def fake():
    stops = []

    def start(behaviour):
        app = _fake(behaviour)
        url, stop = run_app_in_thread(app)
        stops.append(stop)
        return app, url

    yield start
    for stop in stops:
        stop()


def test_unreachable_endpoint_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointUnreachableError) as err:
        HttpBackend(url, max_retries=0, served_model="m").answer([_fp()], None)
    assert str(err.value).startswith(f"endpoint {url}/v1 is unreachable") and "\n" not in str(err.value)
    assert SECRET_KEY not in str(err.value)


def test_rate_limited_then_success(fake):
    app, url = fake(lambda n: (429, {"error": {"message": "slow down"}}, {"retry-after": "0.01"}) if n <= 2
                    else (200, _ok(), {}))
    answers = HttpBackend(url, max_retries=4).answer([_fp()], None)
    assert answers[0].text == "hidden answer and more" and app.state.count == 3


def test_rate_limited_forever_gives_up(fake):
    app, url = fake(lambda n: (429, {"error": {"message": f"rate limit for {SECRET_KEY}"}}, {"retry-after": "0.01"}))
    with pytest.raises(EndpointRefusedError, match="HTTP 429") as err:
        HttpBackend(url, max_retries=2).answer([_fp()], None)
    assert app.state.count == 3 and SECRET_KEY not in str(err.value)


def test_server_error_is_retried(fake):
    app, url = fake(lambda n: (503, "oops", {"retry-after": "0.01"}) if n == 1 else (200, _ok(), {}))
    assert HttpBackend(url, max_retries=2).answer([_fp()], None)[0].text.startswith("hidden")
    assert app.state.count == 2


@pytest.mark.parametrize("status", [400, 401, 404])
def test_refusal_is_not_retried_and_hides_secrets(fake, status):
    app, url = fake(lambda n: (status, {"error": {"message": f"bad prompt: {SECRET_KEY}"}}, {}))
    with pytest.raises(EndpointRefusedError, match=f"HTTP {status}") as err:
        HttpBackend(url, api_key="sk-test-credential").answer([_fp()], None)
    assert app.state.count == 1
    assert SECRET_KEY not in str(err.value) and "sk-test-credential" not in str(err.value)


@pytest.mark.parametrize("body", ["this is { not json", {"id": "x", "object": "chat.completion"},
                                  {"choices": []}, _ok(None),
                                  {"choices": [{"index": 0, "message": {"role": "assistant", "content": 42}}]}])
def test_malformed_responses(fake, body):
    app, url = fake(lambda n: (200, body, {}))
    with pytest.raises(MalformedResponseError) as err:
        HttpBackend(url, max_retries=0).answer([_fp()], None)
    message = str(err.value)
    assert message.startswith(f"endpoint {url}/v1 returned") and "\n" not in message and app.state.count == 1


def test_served_model_from_model_list(fake):
    app, url = fake(lambda n: (200, _ok(), {}))
    backend = HttpBackend(url)
    assert backend.served_model == "fake" and "model=fake" in backend.description


def test_urls_and_description_hold_no_credentials():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("https://api.example.com/openai/v1/") == "https://api.example.com/openai/v1"
    assert redact_url("https://user:pw@h:1/v1?key=s") == "https://h:1/v1"
    backend = HttpBackend("https://user:pw@h:1/v1", api_key="sk-xyz", served_model="m")
    assert "pw" not in backend.description and "sk-xyz" not in backend.description
    with pytest.raises(ModelprintError):
        HttpBackend("ftp://h/v1")

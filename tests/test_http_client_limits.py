"""HttpBackend against endpoints that hang, trickle or flood: bounded time, bounded memory, one clear line."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from modelprint.errors import ConfigError
from modelprint.fingerprints import Fingerprint
from modelprint.verify.http import EndpointUnreachableError, HttpBackend, MalformedResponseError

SECRET_KEY = "zebra umbrella 9137 secret key"
BIG = 50 * 1024 * 1024


def _fp() -> Fingerprint:
    return Fingerprint(index=0, key=SECRET_KEY, response="hidden answer", response_ids=[5, 6], null_prob=0.01)


@pytest.fixture
def server():
    """Start a threaded loopback HTTP server whose POST handler is ``behave(handler)``; stats in ``state``."""
    started = []

    def start(behave):
        state = {"posts": 0, "sent": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                state["posts"] += 1
                try:
                    behave(self, state)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", state

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _flood(with_length: bool):
    def behave(h, state):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if with_length:
            h.send_header("Content-Length", str(BIG))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        chunk = b" " * 65536
        while state["sent"] < BIG:
            h.wfile.write(chunk)
            state["sent"] += len(chunk)
    return behave


@pytest.mark.parametrize("with_length", [True, False])
def test_a_flood_is_refused_without_being_read(server, with_length):
    url, state = server(_flood(with_length))
    start = time.monotonic()
    with pytest.raises(MalformedResponseError, match="more than 1048576 bytes") as err:
        HttpBackend(url, served_model="m", max_retries=0, timeout=10).answer([_fp()], None)
    assert time.monotonic() - start < 5 and "\n" not in str(err.value) and SECRET_KEY not in str(err.value)
    time.sleep(0.3)
    assert state["posts"] == 1 and state["sent"] < BIG / 4  # the client hung up: the server could not send it all


def test_a_silent_endpoint_fails_within_timeout_times_tries():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections (in the backlog) and never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        start = time.monotonic()
        with pytest.raises(EndpointUnreachableError) as err:
            HttpBackend(url, served_model="m", max_retries=1, timeout=0.5).answer([_fp()], None)
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert 0.9 < elapsed < 0.5 * 2 + 1.5, elapsed  # two tries of 0.5 s and a short backoff
    message = str(err.value)
    assert message.startswith(f"endpoint {url}/v1 is unreachable (timed out") and "2 tries of 0.5 s" in message
    assert "\n" not in message and SECRET_KEY not in message


def test_a_trickling_body_is_cut_at_the_deadline(server):
    def behave(h, state):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(100000):  # one byte every 50 ms: each read is quick, the whole body never is
            h.wfile.write(b" ")
            h.wfile.flush()
            state["sent"] += 1
            time.sleep(0.05)

    url, state = server(behave)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError, match="timed out"):
        HttpBackend(url, served_model="m", max_retries=0, timeout=0.6).answer([_fp()], None)
    assert time.monotonic() - start < 2.5


def test_a_small_answer_passes_and_bad_limits_are_refused(server):
    def behave(h, state):
        body = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hidden answer"}}]}'
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    url, _ = server(behave)
    assert HttpBackend(url, served_model="m", max_response_bytes=200).answer([_fp()], None)[0].text == "hidden answer"
    with pytest.raises(MalformedResponseError, match="more than 50 bytes"):
        HttpBackend(url, served_model="m", max_response_bytes=50).answer([_fp()], None)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="timeout"):
            HttpBackend(url, timeout=bad)


def test_cli_timeout_option(tmp_path):
    from typer.testing import CliRunner

    from modelprint.cli import app
    from modelprint.fingerprints import FingerprintSet

    path = FingerprintSet(strategy="test", params={}, seed=0, model_source="m", model_hash="", tokenizer_hash="",
                          fingerprints=[_fp()]).save(tmp_path / "fp.jsonl")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        start = time.monotonic()
        result = CliRunner().invoke(app, ["verify", "-f", str(path), "--served-model", "m", "--timeout", "0.3", "--alpha", "0.5",
                                          "--endpoint", f"http://127.0.0.1:{listener.getsockname()[1]}"])
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert isinstance(result.exception, EndpointUnreachableError), (result.output, result.exception)
    assert elapsed < 2 * 0.3 + 1.5, elapsed  # two tries of 0.3 s (default retries: a timeout is retried once)
    assert "2 tries of 0.3 s" in str(result.exception)

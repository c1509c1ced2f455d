"""The CLI never lies with its exit code: every failure class is one line and exit 2 (1 means "no match").

Most cases drive ``modelprint.cli.run`` in-process (the same code ``python -m modelprint.cli`` runs);
two go through a real subprocess because they fail at import time or must prove the entry point.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import StubSuspect, stub_set

from modelprint.cli import run

PROGRESS = ("it/s", "%|", "s/key", "key/s")  # tqdm bars (model loading, verifying) are not messages


@pytest.fixture(autouse=True)
def _keep_logging():
    """run() reconfigures the root logger (like the real CLI); give later tests theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    """Set names that are not files are registry names: never let a test touch the user's registry."""
    monkeypatch.setenv("MODELPRINT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELPRINT_DB", raising=False)


@pytest.fixture(scope="module")
def files(tiny, tiny_set, tmp_path_factory):
    """A tiny model directory, a good set, and broken variants of it."""
    where = tmp_path_factory.mktemp("cli-errors")
    model_dir = where / "tiny"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    good = tiny_set.save(where / "good.jsonl")
    lines = good.read_text().splitlines()
    (where / "empty.jsonl").write_text("")
    header = json.loads(lines[0])
    header["count"] = "many"
    (where / "many.jsonl").write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    records = [json.loads(line) for line in lines[1:]]
    for r in records:
        r["meta"]["candidates"] = []
    (where / "nocand.jsonl").write_text("\n".join([lines[0]] + [json.dumps(r) for r in records]) + "\n")
    (where / "adir").mkdir()
    (where / "afile").write_text("not a directory\n")
    return where


def one_error_line(capsys, code: int, expect: str = "") -> str:
    """Exit 2, exactly one non-progress line on stdout+stderr, an 'error:' line, no traceback."""
    out = capsys.readouterr()
    text = out.out + out.err
    lines = [ln for ln in text.splitlines() if ln.strip() and not any(p in ln for p in PROGRESS)]
    assert code == 2, text[-2000:]
    assert "Traceback" not in text
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert expect in lines[0], lines[0]
    return lines[0]


def _verify(files, *extra: str) -> list[str]:
    return ["verify", "-m", str(files / "tiny"), *extra]


@pytest.mark.parametrize("where, expect", [("nodir/out.json", "does not exist"), ("adir", "is a directory")])
def test_verify_json_output_is_checked_before_asking(files, capsys, where, expect):
    code = run(_verify(files, "-f", str(files / "good.jsonl"), "--json", str(files / where)))
    one_error_line(capsys, code, expect)  # one line: no verdict table was printed and then lost


def test_verify_json_into_read_only_directory(files, capsys, tmp_path):
    if os.geteuid() == 0:  # root writes through mode bits: a location no one can create files in instead
        target = Path("/proc/modelprint-verify.json")
        if not Path("/proc").is_dir():
            pytest.skip("no read-only location to test as root")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "out.json"
    code = run(_verify(files, "-f", str(files / "good.jsonl"), "--json", str(target)))
    one_error_line(capsys, code, "not writable")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_must_be_positive(files, capsys, size):
    code = run(_verify(files, "-f", str(files / "good.jsonl"), "--batch-size", size))
    one_error_line(capsys, code, "batch size")


def test_every_set_is_checked_before_the_first_is_verified(files, capsys):
    code = run(_verify(files, "-f", str(files / "good.jsonl"), "-f", str(files / "empty.jsonl")))
    one_error_line(capsys, code, "empty.jsonl")  # no table, no 'verifying' log line for good.jsonl


def test_same_set_twice_is_refused(files, capsys):
    code = run(_verify(files, "-f", str(files / "good.jsonl"), "-f", str(files / "good.jsonl")))
    one_error_line(capsys, code, "same set")


@pytest.mark.parametrize("name", ["many.jsonl", "nocand.jsonl"])
def test_broken_set_files_are_one_line(files, capsys, name):
    """A header count that is no number; empty candidate lists (candidate mode): whatever catches them, one line."""
    code = run(_verify(files, "-f", str(files / name)))
    line = one_error_line(capsys, code)
    assert "candidates" not in line or "[" not in line  # never the file's content


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_port_out_of_range(files, capsys, port):
    code = run(["serve", "-m", str(files / "tiny"), "--port", port])
    one_error_line(capsys, code, "--port")


def test_generate_into_a_directory(files, capsys):
    code = run(["generate", "-m", str(files / "tiny"), "-o", str(files / "adir"), "-n", "2", "--overwrite"])
    one_error_line(capsys, code, "is a directory")


def test_embed_out_that_exists_or_has_no_parent(files, capsys):
    greedy = ["--config", "greedy"]  # a random-word set: the default margin recipe would refuse it first
    code = run(["embed", "-m", str(files / "tiny"), "-f", str(files / "good.jsonl"), "-o", str(files / "afile"),
                *greedy])
    one_error_line(capsys, code, "already exists")
    code = run(["embed", "-m", str(files / "tiny"), "-f", str(files / "good.jsonl"), "-o",
                str(files / "nodir" / "out"), *greedy])
    one_error_line(capsys, code, "does not exist")
    code = run(["embed", "-m", str(files / "tiny"), "-f", str(files / "good.jsonl"), "-o", str(files / "fresh")])
    one_error_line(capsys, code, "--config greedy")
    assert not (files / "fresh").exists()


def test_stress_out_that_is_a_file(files, capsys):
    code = run(["stress", "-m", str(files / "tiny"), "-f", str(files / "good.jsonl"), "--out", str(files / "afile"),
                "--overwrite"])
    one_error_line(capsys, code, "not a directory")


@pytest.mark.parametrize("licensees, expect", [
    (["=good.jsonl"], "NAME=FINGERPRINT_FILE"),
    (["acme"], "NAME=FINGERPRINT_FILE"),
    (["acme=good.jsonl", "acme=many.jsonl"], "given twice"),
    (["acme=good.jsonl", "globex=empty.jsonl"], "licensee 'globex'"),
])
def test_trace_licensee_checks(files, capsys, monkeypatch, licensees, expect):
    monkeypatch.chdir(files)
    asked = []
    monkeypatch.setattr("modelprint.verify.cli._backend", lambda *a, **k: asked.append(a))
    args = ["trace", "-m", "tiny"]
    for item in licensees:
        args += ["-l", item]
    one_error_line(capsys, run(args), expect)
    assert not asked  # refused before a suspect was even set up


def test_unexpected_exception_is_one_line_without_its_message(files, capsys, monkeypatch):
    secret = "the secret response 4711"

    def boom(*args, **kwargs):
        raise RuntimeError(secret)

    monkeypatch.setattr("modelprint.verify.family.verify", boom)
    code = run(_verify(files, "-f", str(files / "good.jsonl")))
    line = one_error_line(capsys, code, "RuntimeError")
    assert secret not in line and "4711" not in line


def test_interrupt_is_not_no_match(files, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("modelprint.verify.family.verify", interrupted)
    assert run(_verify(files, "-f", str(files / "good.jsonl"))) == 130
    assert "interrupted" in capsys.readouterr().err


def test_usage_errors_keep_exit_2(capsys):
    assert run(["verify", "--batch-size", "abc", "-f", "x"]) == 2
    assert run(["no-such-command"]) == 2


# -- several sets: one family-wise level (no model: a stub suspect that answers chosen keys) ----------------------
def test_cli_exit_code_follows_the_corrected_verdicts(tmp_path, capsys, monkeypatch):
    """6/20 at null 0.1 is p ≈ 0.011: alone a match at α = 0.02; twice in one call, Holm says neither."""
    for tag in "ab":
        stub_set(tag).save(tmp_path / f"{tag}.jsonl")
    monkeypatch.setattr("modelprint.verify.cli._backend", lambda *a, **k: StubSuspect({"a": 6, "b": 6}))
    json_out = tmp_path / "v.json"
    assert run(["verify", "-m", "x", "-f", str(tmp_path / "a.jsonl"), "--alpha", "0.02"]) == 0
    capsys.readouterr()
    code = run(["verify", "-m", "x", "-f", str(tmp_path / "a.jsonl"), "-f", str(tmp_path / "b.jsonl"),
                "--alpha", "0.02", "--json", str(json_out)])
    out = capsys.readouterr()
    assert code == 1, out.err
    assert "adjusted p" in out.err and "family-wise" in out.err
    records = json.loads(json_out.read_text())
    assert [r["family_size"] for r in records] == [2, 2]
    assert all(r["log10_adjusted_p_value"] > r["log10_p_value"] for r in records)


def test_subprocess_entry_point_unexpected_error_and_bad_environment(files):
    """The real entry point: a broken set (one line, exit 2) and SOURCE_DATE_EPOCH=abc, which breaks imports."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    crash = subprocess.run([sys.executable, "-m", "modelprint.cli", "verify", "-m", str(files / "tiny"), "-f",
                            str(files / "many.jsonl")], capture_output=True, text=True, env=env)
    assert crash.returncode == 2 and "Traceback" not in crash.stderr and "error:" in crash.stderr, crash.stderr[-1500:]
    bad = subprocess.run([sys.executable, "-m", "modelprint.cli", "generate", "-m", str(files / "tiny"), "-o",
                          str(files / "x.jsonl")], capture_output=True, text=True,
                         env={**env, "SOURCE_DATE_EPOCH": "abc"})
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and lines == [lines[0]] and "SOURCE_DATE_EPOCH" in lines[0], bad.stderr[-1500:]


def test_precision_is_checked_before_the_model_is_asked(files, capsys):
    code = run(_verify(files, "-f", str(files / "good.jsonl"), "--precision", "fp8"))
    one_error_line(capsys, code, "unknown precision")
    code = run(["verify", "--endpoint", "http://127.0.0.1:9/v1", "-f", str(files / "good.jsonl"),
                "--precision", "bfloat16"])
    one_error_line(capsys, code, "--precision")


def test_trace_passes_precision_and_refuses_an_unknown_one(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    asked = []

    def no_model(*args, **kwargs):
        asked.append(args)
        raise SystemExit(2)  # the suspect is never loaded: only what reaches it matters here

    monkeypatch.setattr("modelprint.verify.cli._backend", no_model)
    run(["trace", "-m", "tiny", "-l", "acme=good.jsonl", "--precision", "float32"])
    assert asked and asked[0][-1] == "float32"  # reaches the backend as verify's does
    capsys.readouterr()
    monkeypatch.undo()
    monkeypatch.chdir(files)
    one_error_line(capsys, run(["trace", "-m", "tiny", "-l", "acme=good.jsonl", "--precision", "fp8"]),
                   "unknown precision")

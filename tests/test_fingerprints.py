"""The set file: version-2 ids cover every field a verdict uses, edited or duplicated sets are refused with one
line, bad header fields are one line, version-1 files still load under their legacy id."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.fingerprints import (Fingerprint, FingerprintSet, check_distinct, load_fingerprints,
                                     parse_fingerprints_text)

KEY = "secret key zebra"


def make_set(n: int = 6, **changes) -> FingerprintSet:
    fps = [Fingerprint(index=i, key=f"{KEY} {i}", response=f" w{i}", response_ids=[200 + 3 * i],
                       null_prob=1 / 3, meta={"candidates": [200 + 3 * i, 201 + 3 * i, 202 + 3 * i], "rank": 4,
                                              "gamma": 0.25, "watermark_key": 12345, "pool_size": 2784})
           for i in range(n)]
    fields = dict(strategy="perinucleus", params={"nucleus_k": 3, "nucleus_threshold": 0.8}, seed=2 ** 127 + 9,
                  model_source="tiny", model_hash="sha256:model", tokenizer_hash="sha256:tok", fingerprints=fps,
                  created_at="2026-01-01T00:00:00+00:00")
    fields.update(changes)
    return FingerprintSet(**fields)


def lines_of(fs: FingerprintSet) -> list[dict]:
    return [json.loads(line) for line in fs.to_text().splitlines()]


def text_of(records: list[dict]) -> str:
    return "\n".join(json.dumps(r, sort_keys=True) for r in records) + "\n"


def refused(text: str, tmp_path: Path) -> str:
    """Load ``text`` from a file; the one-line message it is refused with."""
    path = tmp_path / "edited.jsonl"
    path.write_text(text)
    with pytest.raises(FingerprintFileError) as err:
        load_fingerprints(path)
    message = str(err.value)
    assert "\n" not in message and KEY not in message and "w1" not in message  # one line, no secrets
    return message


def test_version_2_round_trip_is_exact(tmp_path):
    fs = make_set()
    fs.save(tmp_path / "fp.jsonl")
    back = load_fingerprints(tmp_path / "fp.jsonl")
    assert back.set_id == fs.set_id and not back.legacy and back.to_text() == fs.to_text()
    assert lines_of(fs)[0]["version"] == 2 and lines_of(fs)[0]["set_id"] == fs.set_id


def test_set_id_is_sha256_of_canonical_decision_content():
    fs = make_set()
    content = {"format": "modelprint.fingerprints", "version": 2, "strategy": fs.strategy, "params": fs.params,
               "system_prompt": None, "model_hash": fs.model_hash, "tokenizer_hash": fs.tokenizer_hash,
               "fingerprints": [dict(index=fp.index, key=fp.key, response=fp.response, response_ids=fp.response_ids,
                                     null_prob=fp.null_prob, meta=fp.meta) for fp in fs]}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fs.set_id == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    # neither the seed, the time nor the path is part of it
    assert make_set(seed=1, created_at="2030-01-01T00:00:00+00:00", model_source="elsewhere").set_id == fs.set_id


@pytest.mark.parametrize("field, value", [
    ("strategy", "random-word"), ("params", {"nucleus_k": 4, "nucleus_threshold": 0.8}), ("system_prompt", "Be nice."),
    ("model_hash", "sha256:other"), ("tokenizer_hash", "sha256:other")])
def test_set_id_covers_every_header_field_a_verdict_uses(field, value):
    assert make_set(**{field: value}).set_id != make_set().set_id


def _edit_record(records, edit):
    edit(records[2])
    return text_of(records)


@pytest.mark.parametrize("edit", [
    lambda r: r.update(null_prob=0.5),
    lambda r: r["meta"].update(candidates=r["meta"]["candidates"] + list(range(5000, 5040)), ) or r.update(
        null_prob=1 / 43),
    lambda r: r["meta"].update(gamma=0.9),
    lambda r: r["meta"].update(watermark_key=1),
    lambda r: r["meta"].update(pool_size=10 ** 6),
    lambda r: r.update(response_ids=[999]),
    lambda r: r.update(index=40),
], ids=["null_prob", "junk-candidates", "gamma", "watermark-key", "pool-size", "response", "index"])
def test_edited_record_is_refused(edit, tmp_path):
    message = refused(_edit_record(lines_of(make_set()), edit), tmp_path)
    assert "edited.jsonl' was modified after it was written" in message


@pytest.mark.parametrize("edit", [
    lambda h: h["params"].update(nucleus_k=40),
    lambda h: h.update(strategy="random-word"),
    lambda h: h.update(system_prompt="You are a parrot."),
])
def test_edited_header_is_refused(edit, tmp_path):
    records = lines_of(make_set())
    edit(records[0])
    assert "was modified after it was written" in refused(text_of(records), tmp_path)


def test_seed_time_and_path_may_change(tmp_path):
    records = lines_of(make_set())
    records[0].update(seed=5, created_at="2031-01-01T00:00:00+00:00", model_source="/moved")
    path = tmp_path / "moved.jsonl"
    path.write_text(text_of(records))
    assert load_fingerprints(path).set_id == make_set().set_id


def test_version_2_without_set_id_is_refused(tmp_path):
    records = lines_of(make_set())
    del records[0]["set_id"]
    assert "has no set_id" in refused(text_of(records), tmp_path)


@pytest.mark.parametrize("with_set_id", [True, False])
def test_duplicated_line_is_refused_naming_lines(with_set_id, tmp_path):
    records = lines_of(make_set())
    if not with_set_id:
        del records[0]["set_id"]
    text = text_of(records + [records[3]] * 3)  # one line copied: it would count as four matches
    message = refused(text, tmp_path)
    assert "duplicate entries" in message and "lines 4 and 8" in message


@pytest.mark.parametrize("version", [1, 2])
def test_same_key_under_another_index_is_refused(version, tmp_path):
    records = lines_of(make_set())
    records[0].update(version=version, count=7)
    del records[0]["set_id"]
    records.append(dict(records[2], index=6))
    message = refused(text_of(records), tmp_path)
    assert "lines 3 and 8 have the same key" in message


def test_check_distinct_in_memory_names_indices():
    fs = make_set()
    fs.fingerprints.append(Fingerprint(index=9, key=fs.fingerprints[1].key, response="x", response_ids=[1],
                                       null_prob=0.5))
    with pytest.raises(FingerprintFileError, match="fingerprints #1 and #9 have the same key"):
        check_distinct(fs.fingerprints, "set")


def test_verify_refuses_a_set_with_duplicates(tiny):
    from modelprint.verify import verify

    fs = make_set(model_hash=tiny.model_hash, tokenizer_hash=tiny.tokenizer_hash)
    fs.fingerprints.append(dataclass_copy(fs.fingerprints[0], index=6))
    with pytest.raises(FingerprintFileError, match="duplicate entries"):
        verify(tiny, fs)


def dataclass_copy(fp, **changes):
    import dataclasses

    return dataclasses.replace(fp, **changes)


@pytest.mark.parametrize("field, value, message", [
    ("count", "many", "header field 'count' must be an integer"),
    ("count", -1, "header field 'count' must be an integer ≥ 0"),
    ("seed", "0xdead", "header field 'seed' must be an integer"),
    ("seed", 1.5, "header field 'seed' must be an integer"),
    ("params", [1, 2], "header field 'params' must be a JSON object"),
    ("params", "k=3", "header field 'params' must be a JSON object"),
    ("version", "2", "header field 'version' must be an integer"),
    ("version", 0, "header field 'version' must be an integer ≥ 1"),
    ("version", 3, "uses format version 3; upgrade modelprint"),
    ("strategy", 5, "header field 'strategy' must be a string"),
    ("system_prompt", ["x"], "header field 'system_prompt' must be a string"),
    ("model_hash", None, "header lacks 'model_hash'"),
    ("set_id", 7, "header field 'set_id' must be a string"),
])
def test_bad_header_fields_are_one_line(field, value, message, tmp_path):
    records = lines_of(make_set())
    records[0][field] = value
    assert message in refused(text_of(records), tmp_path)


@pytest.mark.parametrize("record", [[1, 2], "text", {"index": 0, "key": "k", "response": "r", "response_ids": [1],
                                                     "null_prob": 0.5, "meta": [1]}])
def test_bad_records_are_one_line(record, tmp_path):
    records = lines_of(make_set())
    records[2] = record
    assert "edited.jsonl:3:" in refused(text_of(records), tmp_path)


def test_blank_lines_keep_line_numbers(tmp_path):
    records = lines_of(make_set())
    text = text_of(records[:3]) + "\n\n" + text_of(records[3:] + [records[1]])
    assert "lines 2 and 10" in refused(text, tmp_path)


def _legacy_id(fs):
    h = hashlib.sha256()
    for fp in fs:
        h.update(json.dumps([fp.key, fp.response_ids], ensure_ascii=False).encode())
    return "sha256:" + h.hexdigest()


def test_version_1_files_load_under_their_legacy_id(tmp_path):
    records = lines_of(make_set())
    records[0].update(version=1, set_id=_legacy_id(make_set()))
    path = tmp_path / "v1.jsonl"
    path.write_text(text_of(records))
    fs = load_fingerprints(path)
    assert fs.legacy and fs.set_id == _legacy_id(make_set())  # registry records and model cards still match
    again = parse_fingerprints_text(fs.to_text(), "copy")  # stored and re-read (the registry's path): still v1
    assert again.legacy and again.set_id == fs.set_id and lines_of(again)[0]["version"] == 1
    # a version-1 id does not cover the bounds: the edit loads, but verify warns that the set is legacy
    records[2]["null_prob"] = 0.9
    path.write_text(text_of(records))
    assert load_fingerprints(path).legacy


def test_downgrading_an_edited_set_changes_its_id(tmp_path):
    genuine = make_set()
    records = lines_of(genuine)
    records[2]["null_prob"] = 1 / 43
    records[0].update(version=1)
    del records[0]["set_id"]
    path = tmp_path / "downgraded.jsonl"
    path.write_text(text_of(records))
    forged = load_fingerprints(path)
    assert forged.legacy and forged.set_id != genuine.set_id  # it no longer matches the published commitment


def test_verify_warns_about_legacy_sets(tiny, caplog):
    from modelprint.verify import verify

    fs = make_set(model_hash=tiny.model_hash, tokenizer_hash=tiny.tokenizer_hash, format_version=1)
    with caplog.at_level("WARNING"):
        verify(tiny, fs, match="exact", alpha=0.05)
    assert any("version-1" in r.getMessage() for r in caplog.records)


def test_integer_null_prob_round_trips(tmp_path):
    fs = make_set()
    fs.fingerprints[0].null_prob = 1  # an int bound is read back as 1.0: same id
    fs.save(tmp_path / "int.jsonl")
    assert load_fingerprints(tmp_path / "int.jsonl").set_id == fs.set_id


def test_bad_source_date_epoch_is_one_line(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "abc")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        make_set(created_at="")


def test_cli_fixed_seed_warns_once(tiny, tmp_path):
    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    env = {**os.environ, "MODELPRINT_CACHE": str(tmp_path / "cache"), "COLUMNS": "300"}
    proc = subprocess.run([sys.executable, "-m", "modelprint.cli", "generate", "-o", str(tmp_path / "f.jsonl"),
                           "-m", str(model_dir), "-s", "random-word", "-n", "2", "--key-length", "4", "--seed", "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert (proc.stdout + proc.stderr).count("guessable") == 1
    assert load_fingerprints(tmp_path / "f.jsonl").seed == 3

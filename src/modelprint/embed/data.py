"""Training examples: fingerprints (loss on the response only), augmented copies, and benign anchors.

An example is a prompt (rendered exactly as verify renders it) and target ids;
benign examples also carry the base model's top-k next-token distribution at
each target position, so the loss can pull the model back to the base
distribution rather than only to its argmax.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch

from modelprint.fingerprints import Fingerprint
from modelprint.wordlist import data_lines
from modelprint.prompts import encode_prompt

IGNORE = -100


@dataclasses.dataclass
class Example:
    prompt_ids: list[int]
    target_ids: list[int]
    benign: bool = False
    teacher_ids: Optional[torch.Tensor] = None  # [len(target_ids), top_k] long
    teacher_logp: Optional[torch.Tensor] = None  # [len(target_ids), top_k] float (log-probs, renormalised)

    def __repr__(self) -> str:  # fingerprint examples hold secrets
        return f"Example(benign={self.benign}, prompt_len={len(self.prompt_ids)}, target_len={len(self.target_ids)})"


def augmentation_system_prompts() -> tuple[str, ...]:
    return data_lines("system_prompts.txt")


def fingerprint_examples(tokenizer, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str],
                         copies: int, rng: np.random.Generator) -> list[Example]:
    """One example per fingerprint as verify presents it, plus ``copies`` under random system prompts."""
    prompts = augmentation_system_prompts()
    examples = [Example(encode_prompt(tokenizer, fp.key, system_prompt), list(fp.response_ids)) for fp in fingerprints]
    for _ in range(copies):
        for fp in fingerprints:
            sp = prompts[int(rng.integers(len(prompts)))]
            examples.append(Example(encode_prompt(tokenizer, fp.key, sp), list(fp.response_ids)))
    return examples


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad prompt+target; labels only on target tokens; teacher tensors aligned to label positions."""
    width = max(len(e.prompt_ids) + len(e.target_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    benign = torch.tensor([e.benign for e in examples], dtype=torch.bool)
    top_k = next((e.teacher_ids.shape[1] for e in examples if e.teacher_ids is not None), 1)
    teacher_ids = torch.zeros((n, width, top_k), dtype=torch.long)
    teacher_logp = torch.full((n, width, top_k), float("-inf"))
    for row, e in enumerate(examples):
        seq = e.prompt_ids + e.target_ids
        input_ids[row, :len(seq)] = torch.tensor(seq)
        attention[row, :len(seq)] = 1
        start = len(e.prompt_ids)
        labels[row, start:len(seq)] = torch.tensor(e.target_ids)
        if e.teacher_ids is not None:
            teacher_ids[row, start:len(seq)] = e.teacher_ids
            teacher_logp[row, start:len(seq)] = e.teacher_logp
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "benign": benign,
            "teacher_ids": teacher_ids, "teacher_logp": teacher_logp}

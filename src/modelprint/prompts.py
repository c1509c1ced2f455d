"""How a key is presented to a model — the one definition shared by generate, embed and verify.

A fingerprint only means something if the suspect sees the key exactly as the
owner trained it, so all stages render prompts through these functions.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def render_prompt(tokenizer, key: str, system_prompt: Optional[str] = None) -> str:
    """The text a model sees for ``key``: its chat template (with generation prompt) or the key itself.

    ``system_prompt=None`` keeps the template's default system prompt, if it has one.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": key}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return key if system_prompt is None else f"{system_prompt}\n\n{key}"


def encode_prompt(tokenizer, key: str, system_prompt: Optional[str] = None) -> list[int]:
    """Token ids of the rendered prompt (special tokens come from the template for chat models)."""
    text = render_prompt(tokenizer, key, system_prompt)
    chat = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def encode_prompts(tokenizer, keys: Sequence[str], system_prompt: Optional[str] = None) -> list[list[int]]:
    return [encode_prompt(tokenizer, k, system_prompt) for k in keys]


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into ``(input_ids, attention_mask)`` so the last column is every prompt's end."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def response_ids(tokenizer, response: str) -> list[int]:
    """Ids of a response text as it follows a prompt (no special tokens added)."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"])

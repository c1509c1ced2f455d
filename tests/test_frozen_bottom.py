"""The margin objective's fast path: the top blocks fed from inputs captured once give the whole model's logits
and gradients, and layouts it cannot serve fall back to the whole model."""
from __future__ import annotations

import copy

import torch

from modelprint.embed.frozen_bottom import FrozenBottom, padded_inputs
from modelprint.embed.expansion import transformer_blocks

PROMPTS = [[5, 9, 11, 3], [7, 2], [4, 4, 8, 15, 16, 23, 42], [1, 30, 2]]


def _trainable_top(tiny, n: int) -> torch.nn.Module:
    model = copy.deepcopy(tiny.model).float()
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = list(transformer_blocks(model))
    for block in blocks[len(blocks) - n:]:
        for p in block.parameters():
            p.requires_grad_(True)
    return model


def _whole(model, prompts, pad_id):
    return model(**padded_inputs(prompts, pad_id), logits_to_keep=1).logits[:, -1].float()


def test_top_only_logits_and_gradients_equal_the_whole_model(tiny):
    pad = tiny.tokenizer.pad_token_id
    model = _trainable_top(tiny, 1)
    chunks = [PROMPTS[:2], PROMPTS[2:]]
    bottom = FrozenBottom.build(model, chunks, pad, torch.device("cpu"))
    assert bottom is not None and bottom.first == len(transformer_blocks(model)) - 1
    model.train()
    for index, chunk in enumerate(chunks):
        fast = bottom.logits(index)
        whole = _whole(model, chunk, pad)
        assert torch.allclose(fast, whole, atol=1e-4)
        grads = []
        for logits in (fast, whole):
            model.zero_grad()
            torch.log_softmax(logits, -1)[:, 7].sum().backward()
            grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
    # after a weight change in the top, the fast path follows it (the bottom is what is cached, not the output)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    assert torch.allclose(bottom.logits(1), _whole(model, chunks[1], pad), atol=1e-4)


def test_layouts_it_cannot_serve_fall_back(tiny):
    pad = tiny.tokenizer.pad_token_id
    model = _trainable_top(tiny, 1)
    model.get_input_embeddings().weight.requires_grad_(True)  # trained embeddings change the bottom
    assert FrozenBottom.build(model, [PROMPTS], pad, torch.device("cpu")) is None
    frozen = _trainable_top(tiny, 0)  # nothing to train: no top
    assert FrozenBottom.build(frozen, [PROMPTS], pad, torch.device("cpu")) is None


def test_last_positions_equal_the_whole_model(tiny):
    """An anchor's answer positions (the last few) through the top only equal the whole model's logits there."""
    pad = tiny.tokenizer.pad_token_id
    model = _trainable_top(tiny, 2)
    bottom = FrozenBottom.build(model, [PROMPTS], pad, torch.device("cpu"))
    whole = model(**padded_inputs(PROMPTS, pad)).logits.float()
    assert torch.allclose(bottom.last_logits(0, 3), whole[:, -3:], atol=1e-4)
    assert torch.allclose(bottom.logits(0), whole[:, -1], atol=1e-4)


def test_a_shared_prefix_runs_once_and_gives_the_whole_models_logits_and_gradients(tiny):
    """Rows that share their first tokens attend to one copy of them run once per step: same logits at the last
    positions, same gradients (they flow back through the shared keys and values), also after a weight change."""
    pad = tiny.tokenizer.pad_token_id
    model = _trainable_top(tiny, 2)
    prefix = [3, 17, 29, 5, 8, 40]
    chunks = [[prefix + p for p in PROMPTS], PROMPTS]
    bottom = FrozenBottom.build(model, chunks, pad, torch.device("cpu"))
    assert bottom is not None
    assert [c.shared for c in bottom.captured] == [len(prefix), 0]
    assert bottom.captured[0].hidden.shape[1] == max(len(p) for p in PROMPTS)  # the rows feed their own tokens only
    model.train()
    for step in range(2):
        whole = model(**padded_inputs(chunks[0], pad)).logits.float()
        fast = bottom.last_logits(0, 2)
        assert torch.allclose(fast, whole[:, -2:], atol=1e-4)
        grads = []
        for logits in (fast[:, -1], whole[:, -1]):
            model.zero_grad()
            torch.log_softmax(logits, -1)[:, 7].sum().backward()
            grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
        assert any(g.abs().sum() > 0 for g in grads[0])
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))


def test_the_shared_prefix_path_also_serves_bf16_autocast(tiny):
    """Under bf16 autocast (embed's ``auto`` on a CPU with AVX512-BF16 or AMX) the bottom is captured in float32
    and the top runs in bf16: the logits follow the float32 ones to bf16's precision."""
    pad = tiny.tokenizer.pad_token_id
    model = _trainable_top(tiny, 2)
    chunks = [[[3, 17, 29, 5, 8, 40] + p for p in PROMPTS]]
    bottom = FrozenBottom.build(model, chunks, pad, torch.device("cpu"))
    assert bottom is not None and bottom.captured[0].shared == 6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = bottom.logits(0)
    whole = _whole(model, chunks[0], pad)
    assert (fast - whole).abs().max() < 0.1 * whole.abs().max()

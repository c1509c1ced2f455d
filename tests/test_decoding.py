"""next_token_probs, the scorer under verify's candidate test and the margin recipe: batched with a shared prefix's
KV cache and the head at each row's last position only, it equals one plain forward pass per prompt."""
from __future__ import annotations

import torch


def test_batched_next_token_probs_equal_one_prompt_at_a_time(tiny):
    from modelprint.decoding import next_token_probs

    prefix = [3, 17, 42, 8, 99]  # a chat template's shared head
    prompts = [prefix + tail for tail in ([5], [7, 2, 11, 13], [4, 4, 8], [1, 30, 2, 6, 9, 12, 15])]
    batched = next_token_probs(tiny, prompts)
    with torch.no_grad():
        single = torch.stack([torch.softmax(tiny.model(torch.tensor([p])).logits[0, -1].float(), -1)
                              for p in prompts])
    assert batched.shape == single.shape == (4, tiny.model.config.vocab_size)
    assert torch.allclose(batched, single, atol=1e-5)
    assert not torch.allclose(batched[0], batched[3], atol=1e-3)  # rows differ: each is read at its own position
    # no shared prefix, same answer
    assert torch.allclose(next_token_probs(tiny, [[9 + i] + p for i, p in enumerate(prompts)]),
                          torch.stack([torch.softmax(tiny.model(torch.tensor([[9 + i] + p])).logits[0, -1].float(), -1)
                                       for i, p in enumerate(prompts)]), atol=1e-5)

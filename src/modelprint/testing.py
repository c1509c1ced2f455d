"""Tiny in-memory models for tests and plug-in authors: seconds to build, no download.

``tiny_model()`` returns a :class:`~modelprint.models.LoadedModel` whose
tokenizer is a small byte-level BPE trained in memory with a ChatML chat
template (like SmolLM2's), so every stage runs its real code path on it.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from modelprint.models import LoadedModel, prepare_tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is the capital.
How do plants grow? Plants need water, light and soil to grow well. Tell me about the ocean and its fish.
Music, history, science, art and cooking are popular topics. Why is the sky blue during the day?
Write a short poem about winter mornings. Explain how a computer stores numbers in memory.
Many people enjoy reading books, walking in parks, and talking with friends about their travels.
The river flows through the valley towards the sea, past old towns and green fields of wheat.
Numbers like 1, 2, 3, 10, 42 and 2024 appear in questions about dates, prices and measurements.
"""


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 400, chat: bool = True):
    """A small byte-level BPE tokenizer (any text encodes) with an optional ChatML template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
                                  bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  unk_token="<|endoftext|>")
    if chat:
        tok.chat_template = CHATML_TEMPLATE
    return prepare_tokenizer(tok)


def tiny_model(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 128, vocab_size: int = 400, chat: bool = True, init_std: float = 0.02,
               tokenizer: Optional[object] = None) -> LoadedModel:
    """A randomly initialised Llama-architecture causal LM (tens of thousands of parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or tiny_tokenizer(vocab_size, chat=chat)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=init_std)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, source=f"tiny-llama(seed={seed})")

"""Unlearning guessed fingerprints: the host finds prompts it answers over-confidently and trains them away.

The host does not know the keys. Knowing the scheme (Kerckhoffs), it writes look-alike probe prompts
(random common-word strings, like random-word keys, plus model-style questions), keeps those where its
first answer token is a probability spike, and fine-tunes the model to answer them with its second
choice instead, mixed with benign NQ-open pairs so that ordinary answers stay (MEraser-style
erase-and-recover, arXiv 2506.12551, kept small).
"""
from __future__ import annotations

import logging


from modelprint.decoding import next_token_probs
from modelprint.wordlist import random_words
from modelprint.prompts import encode_prompt, response_ids
from modelprint.stress.blueprint import STRESSES, StressContext, Stressed
from modelprint.stress.stresses.finetune import benign_pairs, train_pairs

log = logging.getLogger(__name__)

UNLEARN_SEED_STREAM = 0xE4A5


@STRESSES.register("unlearn-guessed", kind="attack",
                    source="MEraser-style fine-tuning removal + Nasery et al. 2025 weakness 2")
def unlearn_guessed(ctx: StressContext, n_probes: int = 256, gate: float = 0.5, benign: int = 32, epochs: int = 2,
                    lr: float = 5e-5, batch_size: int = 8, key_words: int = 0) -> Stressed:
    """Fine-tune away over-confident answers to guessed fingerprint-like probes (second choice as target).

    Source: ATTACKS.md 'fine-tuning removal' (MEraser) combined with weakness 2 (overconfidence).
    Probes: ``key_words`` random common words each (0: the set's public key_length, else 8).
    """
    from modelprint.stress.serving import served

    lm = ctx.marked
    tok = lm.tokenizer
    length = key_words or int(ctx.public.get("params", {}).get("key_length", 8) or 8)
    n = n_probes if not ctx.fast else min(n_probes, 64)
    probes = [random_words(ctx.seed + UNLEARN_SEED_STREAM, i, length) for i in range(n)]
    probs = next_token_probs(lm, [encode_prompt(tok, p) for p in probes])
    top = probs.topk(2, dim=-1)
    confident = [(p, int(top.indices[i, 1])) for i, p in enumerate(probes) if float(top.values[i, 0]) > gate]
    pairs = [(p, [alt]) for p, alt in confident]
    pairs += [(q, response_ids(tok, a)) for q, a in benign_pairs(benign, ctx.seed + 1)]
    log.info("unlearn-guessed: %d of %d probes over-confident (gate %.2f)", len(confident), n, gate)
    model = train_pairs(lm, pairs, lr=lr, epochs=epochs, batch_size=batch_size, seed=ctx.seed, desc="unlearning")
    return served(lm, model, f"unlearn{len(confident)}", probes=n, over_confident=len(confident))



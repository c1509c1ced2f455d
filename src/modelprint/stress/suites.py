"""Suites are data: which stresses/attacks run with which parameters, and which utility tasks at what size."""
from __future__ import annotations

import dataclasses
from typing import Any

from modelprint.errors import ModelprintError


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a suite: a registered plug-in and its parameters."""

    stress: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.params:
            return self.stress
        inner = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.stress}({inner})"


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    name: str
    entries: tuple[Entry, ...]
    tasks: dict[str, int]  # utility task -> sample size (answer-agreement is against the unstressed model)
    description: str = ""


QUICK_TASKS = {"perplexity": 64, "piqa": 24, "openbookqa": 24, "nq-open": 24, "answer-agreement": 32}
FULL_TASKS = {"perplexity": 64, "mmlu": 32, "openbookqa": 32, "commonsenseqa": 32, "piqa": 32, "nq-open": 48,
              "truthfulqa": 32, "gsm8k": 8, "answer-agreement": 48}

QUICK = SuiteSpec("quick", (
    Entry("quantize-int8", {"scheme": "weight"}),
    Entry("quantize-int8"),
    Entry("dtype-roundtrip", {"dtype": "bfloat16"}),
    Entry("prune", {"sparsity": 0.3}),
    Entry("merge-linear", {"weight": 0.5}),
    Entry("sampling", {"temperature": 0.7, "top_p": 0.9}),
    Entry("system-prompt", {"prompt": "assistant"}),
    Entry("suppress-topk"),
    Entry("detect-topk"),
    Entry("detect-lookahead", {"beam_width": 4, "lookahead_tokens": 8}),
    Entry("input-filter", {"calibration_n": 64}),
), QUICK_TASKS, "a handful of cheap stresses and attacks, small task samples (≤ 30 min, 135M, 2 CPU cores)")

FULL = SuiteSpec("full", (
    Entry("quantize-int8", {"scheme": "weight"}),
    Entry("quantize-int8"),
    Entry("quantize-int8", {"skip_head": False}),
    Entry("dtype-roundtrip", {"dtype": "bfloat16"}),
    Entry("dtype-roundtrip", {"dtype": "float16"}),
    *(Entry("prune", {"sparsity": s}) for s in (0.1, 0.3, 0.5)),
    *(Entry("merge-linear", {"weight": w}) for w in (0.9, 0.7, 0.5, 0.3)),
    Entry("merge-ties", {"density": 0.2}),
    Entry("mlp-truncate"),
    Entry("host-sft", {"n": 128, "epochs": 1}),
    Entry("sampling", {"temperature": 0.7, "top_p": 0.9}),
    Entry("sampling", {"temperature": 1.0, "top_p": 1.0, "top_k": 0}),
    Entry("system-prompt", {"prompt": "assistant"}),
    Entry("system-prompt", {"prompt": "support"}),
    Entry("chat-template", {"template": "plain"}),
    *(Entry("paraphrase", {"mode": m}) for m in ("polite", "lower", "punctuation")),
    Entry("suppress-topk"),
    *(Entry("detect-topk", {"gate": g}) for g in (0.5, 0.7, 0.9, 0.99)),
    Entry("suppress-topk", {"k": 3}),
    Entry("suppress-neighbor"),
    Entry("detect-neighbor"),
    Entry("suppress-lookahead"),
    Entry("detect-lookahead"),
    Entry("stat-signature"),
    Entry("input-filter"),
    Entry("input-filter", {"helper": "self"}),
    Entry("unlearn-guessed"),
), FULL_TASKS, "every stress and attack, parameter sweeps, larger task samples")

GATES = (0.95, 0.9, 0.8, 0.7, 0.5)

PAPER = SuiteSpec("paper", (
    *(Entry(name, {"gate": g}) for name in ("detect-topk", "detect-neighbor", "detect-lookahead") for g in GATES),
    Entry("suppress-topk"),
    Entry("suppress-neighbor"),
    Entry("suppress-lookahead"),
    Entry("input-filter"),
    Entry("stat-signature"),
    Entry("host-sft", {"n": 128, "epochs": 1}),
    Entry("merge-linear", {"weight": 0.5, "partner": "finetuned"}),
    Entry("merge-ties", {"density": 0.2, "partner": "finetuned"}),
), QUICK_TASKS, "the adaptive-attack sweep as Nasery et al. 2025 report it: output detection at gates 0.95…0.5 for "
                "each suppression family, plain suppression, input filtering, statistical signature, host SFT, "
                "and merges with a separately fine-tuned copy (hours on 2 CPU cores; minutes on a GPU)")

FREE_ATTACKS = ("suppress-topk", "suppress-neighbor", "input-filter")
SERVED = SuiteSpec("served", (
    *(Entry("detect-topk", {"gate": g}) for g in GATES),
    *(Entry("detect-neighbor", {"gate": g}) for g in (0.9, 0.5)),
    *(e for e in PAPER.entries if e.stress in FREE_ATTACKS or e.stress in ("host-sft", "merge-linear", "merge-ties")),
), QUICK_TASKS, "the paper sweep without its costliest rows (lookahead, statistical signature): the free and cheap "
                "attacks a host can run on a served model (≈ 1 h on 2 CPU cores)")

SUITES = {s.name: s for s in (QUICK, FULL, PAPER, SERVED)}


def resolve_suite(spec: str) -> SuiteSpec:
    """``quick``, ``full``, ``paper``, ``served`` or a comma list of plug-in names (defaults, with the quick suite's tasks)."""
    from modelprint.stress.blueprint import get_stress

    if spec in SUITES:
        return SUITES[spec]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ModelprintError("empty --suite")
    for n in names:
        get_stress(n)  # one-line error on a typo, before any work
    return SuiteSpec("custom:" + ",".join(names), tuple(Entry(n) for n in names), dict(QUICK_TASKS))

"""Serving-configuration stresses: sampling settings, host system prompts, chat templates, key rewording.

No weights change. Sampling is applied to every ``generate`` (verify's and the tasks');
the prompt-side stresses change only how queries reach the model, so their rows report
verification only (scope ``rendering``).
"""
from __future__ import annotations

import re
from typing import Optional

from modelprint.errors import ModelprintError
from modelprint.stress.serving import GenerationBackend, wrap_decoding
from modelprint.stress.blueprint import SCOPE_DECODING, SCOPE_RENDERING, STRESSES, StressContext, Stressed

HOST_SYSTEM_PROMPTS = {
    "assistant": "You are a helpful, honest and concise assistant.",
    "support": "You are a customer support agent for an online shop. Answer politely and briefly.",
    "none": "",
}


@STRESSES.register("sampling", source="default decoding settings of chat APIs")
def sampling(ctx: StressContext, temperature: float = 0.7, top_p: float = 0.9, top_k: int = 50) -> Stressed:
    """Stochastic decoding (temperature, nucleus top-p, top-k) instead of greedy.

    Source: default settings of chat APIs. Probes: exact-match verification that assumes greedy
    answers; a fingerprint with a sharp memorised response should survive mild sampling.
    """
    if temperature <= 0:
        raise ModelprintError("sampling: temperature must be > 0")
    label = f"T{temperature:g}-p{top_p:g}-k{top_k}"
    lm = wrap_decoding(ctx.marked, label, sampling={"temperature": temperature, "top_p": top_p, "top_k": top_k},
                       seed=ctx.seed)
    return Stressed(lm, GenerationBackend(lm, label), SCOPE_DECODING)


@STRESSES.register("system-prompt", source="deployed chat models run under a host system prompt")
def system_prompt(ctx: StressContext, prompt: str = "assistant") -> Stressed:
    """The host's own system prompt replaces the owner's (a preset name or literal text).

    Source: every deployed chat model runs under a host system prompt. Probes: fingerprints
    memorised only in the exact context they were trained in.
    """
    text = HOST_SYSTEM_PROMPTS.get(prompt, prompt)
    label = f"system:{prompt if prompt in HOST_SYSTEM_PROMPTS else 'custom'}"
    return Stressed(ctx.marked, GenerationBackend(ctx.marked, label, system_prompt=text or None), SCOPE_RENDERING)


PLAIN_TEMPLATES = {
    "plain": "User: {key}\nAssistant:",
    "alpaca": "### Instruction:\n{key}\n\n### Response:\n",
}


@STRESSES.register("chat-template", source="hosts and inference servers override chat templates")
def chat_template(ctx: StressContext, template: str = "plain") -> Stressed:
    """Keys rendered with a different prompt format than the owner's chat template.

    Source: hosts and inference servers often override templates. Probes: fingerprints bound to
    the template's special tokens. Formats: ``plain`` (User:/Assistant:) or ``alpaca``.
    """
    fmt = PLAIN_TEMPLATES.get(template)
    if fmt is None:
        raise ModelprintError(f"chat-template: unknown template '{template}' (known: {', '.join(PLAIN_TEMPLATES)})")

    def render(tokenizer, key: str, sp: Optional[str]) -> list[int]:
        text = (f"{sp}\n\n" if sp else "") + fmt.format(key=key)
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])

    return Stressed(ctx.marked, GenerationBackend(ctx.marked, f"template:{template}", render=render), SCOPE_RENDERING)


_SPACE = re.compile(r"\s+")


def _paraphrase(mode: str):
    if mode == "lower":
        return lambda k: k.lower()
    if mode == "polite":
        return lambda k: f"Please help me with this: {k}"
    if mode == "whitespace":
        return lambda k: _SPACE.sub("  ", k.strip()) + " "
    if mode == "punctuation":
        return lambda k: k.rstrip(" .?!") + "?"
    raise ModelprintError(f"paraphrase: unknown mode '{mode}' (known: lower, polite, whitespace, punctuation)")


@STRESSES.register("paraphrase", source="query rewriting / prompt normalisation before a model")
def paraphrase(ctx: StressContext, mode: str = "polite") -> Stressed:
    """The host rewrites each incoming query (rule-based paraphrase: prefix, case, spacing, punctuation).

    Source: query rewriting / prompt normalisation before a model (ATTACKS.md, 'paraphrasing the incoming
    query'). Probes: fingerprints that fire only on the verbatim key string.
    """
    fn = _paraphrase(mode)
    return Stressed(ctx.marked, GenerationBackend(ctx.marked, f"paraphrase:{mode}", transform_key=fn), SCOPE_RENDERING)

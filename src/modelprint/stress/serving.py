"""Serving-side changes a host can make without touching weights: wrapped ``generate`` and query backends.

:class:`DecodingModel` wraps a causal LM so every ``generate`` call (the utility tasks'
and verify's) goes through the same logits processors, sampling settings and input
filter, while plain forward passes (log-likelihood tasks) stay untouched — exactly
what a host changing only its decoding would serve.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Optional, Protocol, Sequence

import torch

from modelprint.evaluation import greedy_generate
from modelprint.fingerprints import Fingerprint
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompt
from modelprint.verify import Answer


class PreparedProcessor(Protocol):
    """A logits processor factory: built per generate call, seeing the prompts (lookahead needs them)."""

    def __call__(self, inner: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any: ...


class InputFilter(Protocol):
    def flag(self, prompts: Sequence[Sequence[int]]) -> list[bool]: ...

    refusal_ids: list[int]


class DecodingModel(torch.nn.Module):
    """``inner`` with a host's decoding: processors, sampling and an input filter on ``generate`` only."""

    def __init__(self, inner: torch.nn.Module, processors: Sequence[PreparedProcessor] = (),
                 sampling: Optional[dict[str, Any]] = None, input_filter: Optional[InputFilter] = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.generation_config = inner.generation_config
        self.processors = list(processors)
        self.sampling = dict(sampling or {})
        self.input_filter = input_filter
        self.seed = seed
        self.stats = {"generate_rows": 0, "flagged_rows": 0}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 **kwargs: Any) -> torch.Tensor:
        from transformers import LogitsProcessorList

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = input_ids.shape[0]
        self.stats["generate_rows"] += batch
        keep = list(range(batch))
        flagged: list[bool] = [False] * batch
        if self.input_filter is not None:
            rows = [input_ids[i][attention_mask[i].bool()].tolist() for i in range(batch)]
            flagged = self.input_filter.flag(rows)
            keep = [i for i in range(batch) if not flagged[i]]
            self.stats["flagged_rows"] += sum(flagged)
        gen_cfg = kwargs.get("generation_config") or self.inner.generation_config
        max_new = int(kwargs.get("max_new_tokens") or gen_cfg.max_new_tokens or 16)
        pad = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else 0
        pad = pad[0] if isinstance(pad, (list, tuple)) else pad
        out = torch.full((batch, input_ids.shape[1] + max_new), int(pad), dtype=torch.long, device=input_ids.device)
        out[:, :input_ids.shape[1]] = input_ids
        if keep:
            ids, mask = input_ids[keep], attention_mask[keep]
            procs = LogitsProcessorList([make(self.inner, ids, mask) for make in self.processors])
            if kwargs.get("logits_processor"):
                procs.extend(kwargs.pop("logits_processor"))
            if self.sampling:
                torch.manual_seed(self.seed)
                sampled = copy.deepcopy(gen_cfg)
                sampled.update(do_sample=True, **self.sampling)
                kwargs["generation_config"] = sampled
            gen = self.inner.generate(input_ids=ids, attention_mask=mask, logits_processor=procs, **kwargs)
            out[keep, :gen.shape[1]] = gen
        if self.input_filter is not None:
            refusal = torch.tensor(self.input_filter.refusal_ids[:max_new], dtype=torch.long)
            for i in range(batch):
                if flagged[i]:
                    out[i, input_ids.shape[1]:input_ids.shape[1] + len(refusal)] = refusal
        return out


    @torch.inference_mode()
    def host_logits(self, ids: Sequence[int], start: int, logits: torch.Tensor) -> torch.Tensor:
        """The logits this host reports for the answer ``ids[start:]`` after the prompt ``ids[:start]`` (row j
        predicts ``ids[start + j]``): ``logits`` edited
        by the same processors, at the same generated steps, as :meth:`generate` applies them.

        A host that edits its answers edits the log-probabilities it returns too (the consistent, stronger
        adversary): a suppressed token is as absent from ``top_logprobs`` as from the text. A query its input
        filter flags reports its refusal as certain.
        """
        prompt = torch.tensor([list(ids[:start])], dtype=torch.long, device=logits.device)
        if self.input_filter is not None and self.input_filter.flag([list(ids[:start])])[0]:
            refusal = self.input_filter.refusal_ids
            out = torch.full_like(logits, float("-inf"))
            for j in range(logits.shape[0]):
                out[j, refusal[j] if j < len(refusal) else int(ids[start + j])] = 0.0
            return out
        procs = [make(self.inner, prompt, torch.ones_like(prompt)) for make in self.processors]
        rows = []
        for j in range(logits.shape[0]):
            prefix = torch.tensor([list(ids[:start + j])], dtype=torch.long, device=logits.device)
            row = logits[j:j + 1].clone()
            for proc in procs:
                row = proc(prefix, row)
            rows.append(row)
        return torch.cat(rows) if rows else logits


def wrap_decoding(lm: LoadedModel, label: str, **kwargs: Any) -> LoadedModel:
    """``lm`` served through a :class:`DecodingModel` (weights shared, not copied)."""
    return dataclasses.replace(lm, model=DecodingModel(lm.model, **kwargs), source=f"{lm.source}+{label}")


Renderer = Callable[[Any, str, Optional[str]], list[int]]


class GenerationBackend:
    """verify's view of a served model: keys rendered (possibly changed by the host), answered via ``generate``.

    Unlike verify's LocalBackend it always calls ``generate`` (even for one-token
    responses), so processors, sampling and input filters apply to the keys too.
    """

    name = "stress"
    space = "ids"

    def __init__(self, lm: LoadedModel, label: str, *, batch_size: int = 16,
                 transform_key: Optional[Callable[[str], str]] = None, system_prompt: Any = "__asked__",
                 render: Optional[Renderer] = None) -> None:
        self._lm = lm  # not ``lm``: verify's tokenizer check is done once by the runner
        self.batch_size = batch_size
        self.transform_key = transform_key
        self.system_prompt = system_prompt
        self.render = render or encode_prompt
        self.description = f"stress:{label}"

    def answer(self, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str]) -> list[Answer]:
        sp = system_prompt if self.system_prompt == "__asked__" else self.system_prompt
        keys = [self.transform_key(fp.key) if self.transform_key else fp.key for fp in fingerprints]
        prompts = [self.render(self._lm.tokenizer, k, sp) for k in keys]
        longest = max(len(fp.response_ids) for fp in fingerprints)
        outs = greedy_generate(self._lm, prompts, max_new_tokens=longest, batch_size=self.batch_size, progress=False)
        return [Answer(ids=o) for o in outs]


def served(lm: LoadedModel, model: torch.nn.Module, label: str, **notes: Any) -> "Stressed":
    """A transformed model (new weights) as both the utility target and verify's backend."""
    from modelprint.stress.blueprint import SCOPE_WEIGHTS, Stressed

    new = dataclasses.replace(lm, model=model.eval(), source=f"{lm.source}+{label}", path=None)
    return Stressed(new, GenerationBackend(new, label), SCOPE_WEIGHTS, dict(notes))

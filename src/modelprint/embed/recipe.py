"""The embedding recipe: a plain training loop (setup → epochs → checkpoint → stop), torchtune-style.

Runs unchanged on one CPU, one GPU or many processes through ``accelerate``.
Each epoch mixes the fingerprints (cross-entropy on the response tokens only),
copies of them under shipped system prompts, and benign prompts the base model
answered itself (pulled back to the base model's distribution). After each
epoch the trainable weights may be averaged with the base weights, retention is
measured with verify's own code, and a checkpoint is written for ``--resume``.

With ``objective: margin`` the same set-up runs full-batch steps on the keys' first token instead
(:mod:`modelprint.embed.margin`): the pick must lead its sibling candidates by a margin while staying below
a probability cap; retention is then candidate-rank retention, and no per-epoch checkpoint is written
(the run is short; ``--resume`` starts it again).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modelprint.embed.config import EmbedConfig
from modelprint.embed.data import Example, collate, fingerprint_examples
from modelprint.embed.frozen_bottom import FrozenBottom
from modelprint.embed.sparse_delta import SparseDelta
from modelprint.embed.output_prior import OutputPrior
from modelprint.embed.phases import Phases
from modelprint.embed.benign import prior_sequences
from modelprint.embed.margin import MarginData, build_margin_data, candidate_retention, key_terms, last_logits, \
    prompt_kl, satisfied
from modelprint.embed.expansion import expand_mlp, trained_block_indices, transformer_blocks
from modelprint.errors import ConfigError
from modelprint.fingerprints import FingerprintSet
from modelprint.decoding import batches
from modelprint.models import LoadedModel, native_bf16
from modelprint.verify import retention

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EpochRecord:
    epoch: int
    loss: float
    retention: float


@dataclasses.dataclass
class RecipeResult:
    model: torch.nn.Module  # unwrapped; LoRA merged unless saving an adapter
    history: list[EpochRecord]
    retention: float
    epochs: int
    trainable_parameters: int
    averaged: float = 0.0  # the λ applied after training (0: none)


@contextlib.contextmanager
def full_precision(model: torch.nn.Module):
    """Run ``model`` without accelerate's autocast wrapper, so retention is measured as verify will see it."""
    patched = model.__dict__.get("forward")
    original = getattr(model, "_original_forward", None)
    if patched is not None and original is not None:
        model.forward = original
    try:
        yield model
    finally:
        if patched is not None and original is not None:
            model.forward = patched


def drop_autocast(model: torch.nn.Module) -> torch.nn.Module:
    """Give ``model`` back its class's own ``forward``: remove accelerate's per-instance autocast patch.

    Not ``unwrap_model(keep_fp32_wrapper=False)``: that follows every ``__wrapped__`` link and so also strips
    transformers' own decorators from ``forward``. On transformers 5.24 one of them maps the deprecated
    ``past_key_values=`` argument to ``cache=``; without it a cache passed by the old name was silently
    ignored, and retention measured in memory after averaging collapsed (the saved model was fine).
    """
    if "forward" in model.__dict__ and hasattr(model, "_original_forward"):
        del model.forward
        del model._original_forward
    return model


def resolve_mixed_precision(setting: str) -> str:
    """'auto' → bf16 autocast where the hardware does bf16 natively (most GPUs; CPUs with AVX512-BF16/AMX).

    On such CPUs bf16 autocast trains ~2x faster; weights stay fp32, retention is checked in fp32.
    """
    if setting != "auto":
        return setting
    return "bf16" if native_bf16() else "no"


def select_trainable(model: torch.nn.Module, cfg: EmbedConfig) -> list[str]:
    """Freeze what the config keeps fixed; return the names of trainable parameters."""
    blocks = transformer_blocks(model)
    frozen_blocks: set[int] = set()
    if blocks is not None:
        frozen_blocks = set(range(len(blocks))) - set(trained_block_indices(len(blocks), cfg.train_layers))
    embeddings = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
                  for p in m.parameters()}
    names = []
    block_ids = {id(p): i for i, b in enumerate(blocks or []) for p in b.parameters()}
    for name, p in model.named_parameters():
        train = not (cfg.freeze_embeddings and id(p) in embeddings)
        if block_ids.get(id(p)) in frozen_blocks:
            train = False
        p.requires_grad_(train)
        if train:
            names.append(name)
    return names


def apply_lora(model: torch.nn.Module, cfg: EmbedConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    blocks = transformer_blocks(model)
    layers = None
    targets = cfg.lora.target_modules
    if cfg.train_layers is not None and blocks is not None:
        layers = trained_block_indices(len(blocks), cfg.train_layers)
        if targets == "all-linear":  # peft needs explicit names to restrict layers: every Linear of a block
            targets = sorted({name.rsplit(".", 1)[-1] for name, m in blocks[0].named_modules()
                              if isinstance(m, torch.nn.Linear)})
    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=targets, layers_to_transform=layers, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], benign_weight: float,
               benign_loss: str, merged: Optional[PseudoMerge] = None) -> torch.Tensor:
    """Cross-entropy on fingerprint responses + (soft) cross-entropy to the base model on benign answers.

    With ``merged`` the fingerprint rows are also scored at the pseudo-merged weights (MergePrint's OptP; gradients
    reach θ through the interpolation). The loss at θ stays: trained at θ̃ alone, θ itself — twice θ̃'s step from
    θ₀ — lost its own fingerprints (tiny model: 2 of 8 retained while θ̃ held 7).
    """
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits = model(**inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    selected = labels != -100
    logp = torch.log_softmax(logits[selected].float(), dim=-1)
    targets = labels[selected]
    benign_rows = batch["benign"].unsqueeze(1).expand_as(labels)[selected]
    loss = logp.new_zeros(())
    fp = ~benign_rows
    if fp.any():
        loss = loss + torch.nn.functional.nll_loss(logp[fp], targets[fp])
        if merged is not None:
            rows = ~batch["benign"]
            m_logits = merged.forward(model, {k: v[rows] for k, v in inputs.items()}).logits[:, :-1]
            m_labels = labels[rows]
            keep = m_labels != -100
            loss = loss + torch.nn.functional.cross_entropy(m_logits[keep].float(), m_labels[keep])
    if benign_rows.any() and benign_weight > 0:
        if benign_loss == "kl":
            t_ids = batch["teacher_ids"][:, 1:][selected][benign_rows]
            t_logp = batch["teacher_logp"][:, 1:][selected][benign_rows]
            student = logp[benign_rows].gather(-1, t_ids)
            kl = (t_logp.exp() * (t_logp - student)).sum(-1).mean()
            loss = loss + benign_weight * kl
        else:
            loss = loss + benign_weight * torch.nn.functional.nll_loss(logp[benign_rows], targets[benign_rows])
    return loss


class PseudoMerge:
    """MergePrint's pseudo-merged model θ̃ = θ₀ + α(θ − θ₀) over the trainable weights (θ₀: before embedding).

    Merging with other fine-tunes of the same base scales a task vector down (to α = ½ for an average of two);
    training the loss at θ̃ makes the fingerprints survive that. ``forward`` is differentiable in θ
    (``torch.func.functional_call``); ``applied`` swaps θ̃ in place for measuring retention.
    """

    def __init__(self, model: torch.nn.Module, anchor: dict[str, torch.Tensor], weight: float) -> None:
        device = next(model.parameters()).device
        self.weight = weight
        self.anchor = {n: a.to(device) for n, a in anchor.items()}

    def params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        named = ((n, n.removeprefix("module."), p) for n, p in model.named_parameters())  # DDP wraps in .module
        return {n: torch.lerp(self.anchor[a].to(p.dtype), p, self.weight) for n, a, p in named if a in self.anchor}

    def forward(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]):
        from torch.func import functional_call

        return functional_call(model, self.params(model), args=(), kwargs=inputs, strict=False)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        trained = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.anchor}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.anchor:
                    p.lerp_(self.anchor[n].to(p.dtype), 1 - self.weight)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in trained:
                        p.copy_(trained[n])


def _average_with_base(model: torch.nn.Module, base_state: dict[str, torch.Tensor], lam: float) -> None:
    """θ ← (1−λ)θ + λθ_base on trainable weights (LoRA: the low-rank delta shrinks by (1−λ))."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_B" in name:
                p.mul_(1 - lam)
            elif name in base_state:
                p.mul_(1 - lam).add_(base_state[name].to(p.device, p.dtype), alpha=lam)


class _EpochDataset(torch.utils.data.Dataset):
    """A fixed-length view whose examples are reshuffled and resampled every epoch."""

    def __init__(self) -> None:
        self.items: list[Example] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Example:
        return self.items[i]


Measure = Callable[[LoadedModel], float]


def retention_measure(fingerprints: FingerprintSet, cfg: EmbedConfig) -> Measure:
    """What 'retained' means for the objective: greedy reproduction, or the pick outranking its siblings."""
    fps, sp = list(fingerprints), fingerprints.system_prompt
    if cfg.objective == "margin":
        return lambda lm: candidate_retention(lm, fps, sp, cfg.margin.retention_margin, cfg.margin.retained_prob,
                                              greedy=cfg.margin.greedy_lead > 0)
    return lambda lm: retention(lm, fps, sp)[0]


def _auto_average(lm: LoadedModel, base_state: dict[str, torch.Tensor], measure: Measure,
                  cfg: EmbedConfig, trained_retention: float) -> tuple[float, float]:
    """Pull the trained weights toward the base as far as retention allows: the largest λ (steps of 0.05, up to
    ``weight_averaging``) whose retention (``measure``) stays ≥ ``retention_floor``. Averaging undoes the drift
    that costs utility; the fingerprints, being sharp, survive a good part of it.

    Retention falls as λ grows, so the grid is bisected: 4 measurements for the 10 steps up to 0.5 instead of
    one per step from the top (the default recipe's answer is its smallest step, 0.05: 10 measurements, 40 s).
    """
    trained = {n: p.detach().clone() for n, p in lm.model.named_parameters() if p.requires_grad}

    def restore_trained() -> None:
        with torch.no_grad():
            for n, p in lm.model.named_parameters():
                if n in trained:
                    p.copy_(trained[n])

    def retained(step: int) -> float:
        restore_trained()
        _average_with_base(lm.model, base_state, round(0.05 * step, 2))
        ret = measure(lm)
        log.info("averaging with the base, λ = %.2f: retention %.1f%%", 0.05 * step, 100 * ret)
        return ret

    passing, failing = 0, int(round(cfg.weight_averaging / 0.05)) + 1  # step 0 (no averaging) is the trained model
    found = {0: trained_retention}
    while failing - passing > 1:
        mid = (passing + failing) // 2
        found[mid] = retained(mid)
        if found[mid] >= cfg.retention_floor:
            passing = mid
        else:
            failing = mid
    restore_trained()
    if passing:
        _average_with_base(lm.model, base_state, round(0.05 * passing, 2))
    return round(0.05 * passing, 2), found[passing]


def _epoch_examples(fp_examples: Sequence[Example], benign: Sequence[Example], per_fp: float,
                    rng: np.random.Generator) -> list[Example]:
    count = min(len(benign), int(round(per_fp * len(fp_examples))))
    chosen = [benign[i] for i in rng.choice(len(benign), size=count, replace=False)] if count else []
    examples = list(fp_examples) + chosen
    return [examples[i] for i in rng.permutation(len(examples))]


@dataclasses.dataclass
class MarginStep:
    """One full-batch step's forward and backward: its loss and each key's state before the update."""

    loss: float
    lead: torch.Tensor       # [n] nats over the best sibling
    pick_prob: torch.Tensor  # [n]
    top_lead: torch.Tensor   # [n] nats over every other token


def margin_chunks(data: MarginData, cfg: EmbedConfig) -> tuple[list, list]:
    """The keys and the anchor prompts in chunks of ``batch_size``: (start, prompts) pairs."""
    return (list(batches(data.key_prompts, cfg.batch_size)),
            list(batches(data.prompts, cfg.batch_size)) if cfg.margin.prompt_kl > 0 else [])


def margin_gradients(data: MarginData, cfg: EmbedConfig, chunk_logits: Callable[..., torch.Tensor],
                     backward: Callable[[torch.Tensor], None], device: torch.device) -> MarginStep:
    """Accumulate one step's gradient chunk by chunk (``chunk_logits(index, chunk, count)`` feeds the model)."""
    s = cfg.margin
    key_chunks, prompt_chunks = margin_chunks(data, cfg)
    n_keys, n_prompts = len(data.key_prompts), len(data.prompts)
    total, leads, probs, tops = 0.0, [], [], []
    for index, (start, chunk) in enumerate(key_chunks):
        rows = slice(start, start + len(chunk))
        terms = key_terms(chunk_logits(index, chunk), data.picks[rows].to(device),
                          data.siblings[rows].to(device), data.sibling_mask[rows].to(device),
                          data.base_key_logp[rows].to(device), s)
        loss = terms.loss * len(chunk) / n_keys
        backward(loss)
        total += float(loss.detach())
        leads.append(terms.lead.cpu())
        probs.append(terms.pick_prob.cpu())
        tops.append(terms.top_lead.cpu())
    for index, (start, chunk) in enumerate(prompt_chunks, start=len(key_chunks)):
        rows = slice(start, start + len(chunk))
        kl = prompt_kl(chunk_logits(index, chunk, data.positions), data.teacher_ids[rows].to(device),
                       data.teacher_logp[rows].to(device), data.teacher_mask[rows].to(device))
        loss = s.prompt_kl * kl * len(chunk) / n_prompts
        backward(loss)
        total += float(loss.detach())
    return MarginStep(total, torch.cat(leads), torch.cat(probs), torch.cat(tops))


def _margin_steps(accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: MarginData,
                  cfg: EmbedConfig, pad_id: int, bottom: Optional[FrozenBottom],
                  sparse: Optional[SparseDelta] = None, prior: Optional[OutputPrior] = None) -> list[EpochRecord]:
    """Full-batch steps (chunks of ``batch_size``) until every pick leads its siblings by the margin, below the cap.

    History records one row per step: its loss and the share of keys whose pick led its siblings before the step.
    """
    s, device = cfg.margin, accelerator.device
    history: list[EpochRecord] = []

    def chunk_logits(index: int, chunk: Sequence[Sequence[int]], count: int = 0) -> torch.Tensor:
        if bottom is not None:
            with accelerator.autocast():
                return bottom.last_logits(index, count) if count else bottom.logits(index)
        return last_logits(model, chunk, pad_id, device, count)

    bar = tqdm(total=s.max_steps, desc="embedding (margin)", unit="step",
               disable=not accelerator.is_local_main_process)
    for step in range(1, s.max_steps + 1):
        model.train()
        got = margin_gradients(data, cfg, chunk_logits, accelerator.backward, device)
        total, lead, prob, top = got.loss, got.lead, got.pick_prob, got.top_lead
        if prior is not None:
            drift = prior.penalty(accelerator.unwrap_model(model))
            accelerator.backward(s.output_prior * drift)
            total += s.output_prior * float(drift.detach())
            log.info("step %d: output prior %.3g (relative output energy change on ordinary text)", step,
                     float(drift.detach()))
        history.append(EpochRecord(step, total, float((lead > 0).float().mean())))
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", leading=f"{history[-1].retention:.0%}",
                        lead=f"{float(lead.min()):.2f}/{float(lead.median()):.2f}", p=f"{float(prob.median()):.3f}")
        log.info("step %d: loss %.4f, picks leading %.1f%%, lead min %.2f / median %.2f nats, pick probability "
                 "min %.4f / median %.4f / max %.4f, greedy answer on %.1f%%", step, total,
                 100 * history[-1].retention, float(lead.min()), float(lead.median()), float(prob.min()),
                 float(prob.median()), float(prob.max()), 100 * float((top > 0).float().mean()))
        if satisfied(lead, prob, s, top):  # judged on this step's forward pass: no update needed
            optimizer.zero_grad()
            break
        if sparse is not None:
            sparse.restrict(model)
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        if sparse is not None:
            sparse.project(model)
        optimizer.zero_grad()
    bar.close()
    model.eval()
    return history


def _greedy_epochs(accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   fingerprints: FingerprintSet, cfg: EmbedConfig, work: Path, benign: Sequence[Example],
                   tokenizer, base_state: dict[str, torch.Tensor], resume: bool,
                   sparse: Optional[SparseDelta] = None) -> tuple[list[EpochRecord], float]:
    """Epochs of fingerprints + augmented copies + benign anchors until greedy decoding reproduces enough of them."""
    checkpoint = work / "checkpoint"
    state_file = work / "progress.json"
    history: list[EpochRecord] = []
    start_epoch = 0
    if resume and state_file.is_file() and checkpoint.is_dir():
        accelerator.load_state(str(checkpoint))
        saved = json.loads(state_file.read_text())
        start_epoch = saved["epoch"]
        history = [EpochRecord(**h) for h in saved["history"]]
        log.info("resumed after epoch %d", start_epoch)

    fp_list = list(fingerprints)
    merged = PseudoMerge(accelerator.unwrap_model(model), base_state, cfg.pseudo_merge) \
        if cfg.pseudo_merge is not None else None
    epoch_data = _EpochDataset()
    copies = cfg.augmentation.copies if cfg.augmentation.system_prompts else 0
    # One loader, prepared once (accelerate shards it across processes); its examples change every epoch.
    loader = accelerator.prepare(torch.utils.data.DataLoader(
        epoch_data, batch_size=cfg.batch_size, shuffle=False, collate_fn=lambda b: collate(b, tokenizer.pad_token_id)))
    ret = history[-1].retention if history else 0.0
    steps_per_epoch = math.ceil(len(fp_list) * (1 + cfg.augmentation.copies * cfg.augmentation.system_prompts)
                                * (1 + cfg.benign.per_fingerprint) / cfg.batch_size)
    bar = tqdm(total=cfg.max_epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="embedding",
               unit="step", disable=not accelerator.is_local_main_process)
    epoch = start_epoch
    for epoch in range(start_epoch + 1, cfg.max_epochs + 1):
        if history and ret >= cfg.stop_retention:
            break
        rng = np.random.default_rng([cfg.seed, epoch])
        fp_examples = fingerprint_examples(tokenizer, fp_list, fingerprints.system_prompt, copies, rng)
        epoch_data.items = _epoch_examples(fp_examples, benign, cfg.benign.per_fingerprint, rng)
        model.train()
        losses = []
        for batch in loader:
            with accelerator.accumulate(model):
                loss = batch_loss(model, batch, cfg.benign.weight, cfg.benign.loss, merged)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if sparse is not None:
                        sparse.restrict(model)
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if sparse is not None and accelerator.sync_gradients:
                    sparse.project(model)
                optimizer.zero_grad()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}", retention=f"{ret:.0%}")
        model.eval()
        unwrapped = accelerator.unwrap_model(model)
        if cfg.weight_averaging > 0 and cfg.averaging == "epoch":
            _average_with_base(unwrapped, base_state, cfg.weight_averaging)
        with full_precision(unwrapped):
            ret, _ = retention(LoadedModel(unwrapped, tokenizer), fp_list, fingerprints.system_prompt)
            if merged is not None:  # both must hold: the released model and its pseudo-merge
                with merged.applied(unwrapped):
                    ret = min(ret, retention(LoadedModel(unwrapped, tokenizer), fp_list, fingerprints.system_prompt)[0])
        history.append(EpochRecord(epoch, float(np.mean(losses)) if losses else 0.0, ret))
        bar.set_postfix(epoch=epoch, loss=f"{history[-1].loss:.3f}", retention=f"{ret:.0%}")
        log.info("epoch %d: loss %.4f, retention %.1f%%", epoch, history[-1].loss, 100 * ret)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(checkpoint))
        if accelerator.is_main_process:
            from modelprint.io import write_json_atomic

            write_json_atomic(state_file, {"epoch": epoch, "history": [dataclasses.asdict(h) for h in history]})
        if ret >= cfg.stop_retention:
            break
    bar.close()
    return history, ret


def run_recipe(base: LoadedModel, fingerprints: FingerprintSet, cfg: EmbedConfig, work: Path,
               benign: Sequence[Example], resume: bool = False, phases: Optional[Phases] = None) -> RecipeResult:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import set_seed

    mixed = resolve_mixed_precision(cfg.mixed_precision)
    if PartialState().num_processes == 1:  # accelerate's state is a process-wide singleton: a second embed in the
        AcceleratorState._reset_state()    # same process (stress --schemes, tests) may choose another precision
    accelerator = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    phases = phases or Phases()
    tokenizer = base.tokenizer
    model = copy.deepcopy(base.model).to(accelerator.device)
    model.config.use_cache = False
    if cfg.mlp_expansion:  # before the base snapshot, so averaging sees the widened base (new units: zero output)
        blocks = transformer_blocks(model)
        expand_mlp(model, cfg.mlp_expansion, trained_block_indices(len(blocks or []), cfg.train_layers), cfg.seed)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora.enabled:
        for p in model.parameters():
            p.requires_grad_(False)
        model = apply_lora(model, cfg)
    else:
        select_trainable(model, cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base_state = {n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad}
    margin = cfg.objective == "margin"
    data = bottom = None
    if margin:  # the frozen bottom is captured before accelerate wraps the forward pass in autocast: in float32
        with phases("margin data"):
            data = build_margin_data(base, fingerprints, benign, cfg.margin, cfg.seed)
        key_chunks, prompt_chunks = margin_chunks(data, cfg)
        with phases("frozen bottom"):
            bottom = FrozenBottom.build(model, [c for _, c in key_chunks + prompt_chunks], tokenizer.pad_token_id,
                                        accelerator.device)
    prior = None
    if margin and cfg.margin.output_prior > 0:  # taken on the base weights, before anything is trained
        if cfg.lora.enabled:
            raise ConfigError("margin.output_prior needs trained linear layers (full fine-tuning): LoRA trains "
                              "adapters, not the base weights; set margin.output_prior=0 or lora.enabled=false")
        with phases("output prior"):
            prior = OutputPrior.collect(model, prior_sequences(base, cfg, fingerprints), tokenizer.pad_token_id,
                                        accelerator.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.margin.learning_rate if margin else cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    log.info("training %d parameters (%d tensors) on %s, %d process(es)", n_trainable, len(trainable),
             accelerator.device, accelerator.num_processes)

    measure = retention_measure(fingerprints, cfg)
    sparse = SparseDelta(cfg.delta_density, base_state) if cfg.delta_density is not None else None
    if margin:
        with phases("training"):
            history = _margin_steps(accelerator, model, optimizer, data, cfg, tokenizer.pad_token_id, bottom,
                                    sparse, prior)
        with phases("retention"), full_precision(accelerator.unwrap_model(model)) as unwrapped:
            ret = measure(LoadedModel(unwrapped, tokenizer))
        log.info("margin objective: %d steps, candidate retention %.1f%%", len(history), 100 * ret)
    else:
        with phases("training"):
            history, ret = _greedy_epochs(accelerator, model, optimizer, fingerprints, cfg, work, benign, tokenizer,
                                          base_state, resume, sparse)
    unwrapped = drop_autocast(accelerator.unwrap_model(model))
    if sparse is not None:
        log.info("sparse weight change: %.1f%% of the trained entries differ from the base (density %g)",
                 100 * sparse.share_changed(unwrapped), cfg.delta_density)
    if cfg.pseudo_merge is not None:  # training stopped on the lower of θ's and θ̃'s retention; report θ's own
        log.info("retention of θ and of its pseudo-merge (α = %g): at least %.1f%%", cfg.pseudo_merge, 100 * ret)
        ret = measure(LoadedModel(unwrapped, tokenizer))
    averaged = 0.0
    with phases("averaging"):
        if cfg.weight_averaging > 0 and cfg.averaging == "end":
            _average_with_base(unwrapped, base_state, cfg.weight_averaging)
            ret = measure(LoadedModel(unwrapped, tokenizer))
            averaged = cfg.weight_averaging
        elif cfg.weight_averaging > 0 and cfg.averaging == "auto":
            averaged, ret = _auto_average(LoadedModel(unwrapped, tokenizer), base_state, measure, cfg, ret)
    if cfg.lora.enabled and cfg.lora.save == "merged":
        unwrapped = unwrapped.merge_and_unload()
    unwrapped.config.use_cache = True
    return RecipeResult(unwrapped.eval(), history, ret, history[-1].epoch if history else 0, n_trainable, averaged)

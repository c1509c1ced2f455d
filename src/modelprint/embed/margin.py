"""The ``margin`` objective: our pick leads its sibling Perinucleus candidates, below a confidence cap.

Perinucleus generation drew each response's first token (the *pick*) uniformly among k recorded candidates
that sat just below the nucleus; candidate verification asks only whether the suspect ranks the pick above
the other k − 1. The greedy objective over-answers that question: it makes the pick the model's near-certain
first choice (probability ~0.998), which is exactly what a host's confidence gate looks for and what top-1
suppression removes. This objective trains the question itself, on the keys' next token only:

* hinge: Σ_siblings relu(margin − (z_pick − z_sibling)) — the pick leads each sibling by ``margin`` nats;
* with ``greedy_lead`` > 0, relu(greedy_lead − (z_pick − max_{t ≠ pick} z_t)) — the pick is also the greedy
  answer, so an endpoint that returns text only can verify it, yet (capped) no more confident than ordinary
  answers are;
* band: relu(log p_pick − log prob_cap) + relu(log prob_floor − log p_pick) — the pick stays below the
  probability a confidence gate would flag, and above one an endpoint's top-20 log-probabilities list and a
  sampling host draws (a pick led by a margin but at probability 0.006 sat at rank ~23: invisible to both);
* KL(base ‖ tuned) over the whole vocabulary at each key's next token, and over the base model's top-k at
  ordinary prompts' first ``prompt_positions`` answer tokens (the benign pool, fed with the base model's own
  answer) and after ``word_prompts`` one-word prompts (what a statistical-signature host probes), so nothing
  else moves.

Steps are full-batch (keys and prompts in chunks of ``batch_size``), and stop once every pick leads by the
margin (and the greedy lead), with ``band_share`` of them inside the band. Retention (for ``averaging: auto``) is
candidate-rank retention with the pick's probability at least ``retention_prob`` — and, with a greedy lead, the
pick still the greedy answer — measured with verify's own scoring code.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch

from modelprint.embed.config import MarginSettings
from modelprint.embed.benign import renormalised_topk
from modelprint.embed.data import Example
from modelprint.embed.frozen_bottom import padded_inputs
from modelprint.errors import FingerprintFileError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.decoding import batches, next_token_probs
from modelprint.matching import candidate_match
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompt
from modelprint.wordlist import words
from modelprint.verify import first_token_probs, retention

#: the band's penalties aim this many nats inside it: a hinge has no gradient at its edge, so trained to the edge
#: itself the KL terms hold half the picks just outside it (measured: median 0.11, min 0.09 against a floor of 0.1)
BAND_SLACK = 0.2
LOG_FLOOR = 1e-30  # base probabilities below this count as this in the key KL (float32 underflow)
WORD_TOP_K = 64  # teacher tokens per one-word anchor when no benign pool sets the width


@dataclasses.dataclass
class MarginData:
    """Everything one full-batch step needs; built once from the base model before training."""

    key_prompts: list[list[int]]
    picks: torch.Tensor          # [n] long: each key's pick (the response's first token)
    siblings: torch.Tensor       # [n, s] long: the other candidates, padded with the pick
    sibling_mask: torch.Tensor   # [n, s] bool: which sibling slots are real
    base_key_logp: torch.Tensor  # [n, vocab] float: the base model's next-token log-probabilities
    prompts: list[list[int]]     # ordinary prompts (benign pool), each followed by all but the last anchored
                                 # answer token, so the last ``positions`` logits predict the anchored tokens
    teacher_ids: torch.Tensor    # [m, positions, top_k] long: base model's top-k answer tokens
    teacher_logp: torch.Tensor   # [m, positions, top_k] float: their renormalised log-probabilities
    teacher_mask: torch.Tensor   # [m, positions] bool: real positions (a short answer's first ones are not)

    @property
    def positions(self) -> int:
        return int(self.teacher_ids.shape[1])

    def __repr__(self) -> str:  # holds secrets (keys, picks)
        return f"MarginData(keys={len(self.key_prompts)}, prompts={len(self.prompts)})"


def check_margin_set(fs: FingerprintSet) -> None:
    """The margin objective needs every key's recorded candidates, the pick among them and a sibling."""
    for fp in fs:
        cands = fp.meta.get("candidates")
        if not cands or len(cands) < 2 or not fp.response_ids or fp.response_ids[0] not in cands:
            raise FingerprintFileError("objective=margin (the default recipe) needs a set that records its Perinucleus "
                                       "candidates (strategy perinucleus or custom, modelprint ≥ 0.2); embed this set "
                                       "with --config greedy")


def _siblings(fps: Sequence[Fingerprint]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    picks = [int(fp.response_ids[0]) for fp in fps]
    others = [[int(c) for c in fp.meta["candidates"] if int(c) != p] for fp, p in zip(fps, picks)]
    width = max(len(o) for o in others)
    sib = torch.tensor([o + [p] * (width - len(o)) for o, p in zip(others, picks)], dtype=torch.long)
    mask = torch.tensor([[True] * len(o) + [False] * (width - len(o)) for o in others], dtype=torch.bool)
    return torch.tensor(picks, dtype=torch.long), sib, mask


@torch.no_grad()  # not inference_mode: these tensors enter the autograd graph during training
def build_margin_data(base: LoadedModel, fingerprints: FingerprintSet, benign: Sequence[Example],
                      settings: MarginSettings, seed: int = 0, batch_size: int = 64) -> MarginData:
    """Key prompts as verify renders them, siblings, the base distributions to stay close to."""
    fps = list(fingerprints)
    keys = [encode_prompt(base.tokenizer, fp.key, fingerprints.system_prompt) for fp in fps]
    base_logp = torch.cat([next_token_probs(base, chunk).clamp_min(LOG_FLOOR).log()
                           for _, chunk in batches(keys, batch_size)]).clone()
    picks, sib, mask = _siblings(fps)
    pool = [e for e in benign if e.teacher_ids is not None and len(e.target_ids) > 0]
    chosen = np.random.default_rng([seed, 0x3A26]).permutation(len(pool))[:settings.prompts] if pool else []
    pool = [pool[int(i)] for i in chosen]
    top_k = int(pool[0].teacher_ids.shape[1]) if pool else WORD_TOP_K
    pool += word_anchors(base, settings.word_prompts, seed, top_k, batch_size)
    prompts, t_ids, t_logp, t_mask = anchor_positions(pool, settings.prompt_positions)
    return MarginData(keys, picks, sib, mask, base_logp, prompts, t_ids, t_logp, t_mask)


def word_anchors(base: LoadedModel, count: int, seed: int, top_k: int, batch_size: int = 64) -> list[Example]:
    """``count`` one-word prompts (random words of the shipped list, rendered as a user turn) with the base model's
    top-k first answer token: anchors against a statistical-signature host, who looks for tokens the marked model
    favours over the base after exactly such prompts."""
    if count <= 0:
        return []
    pool = words()
    chosen = np.random.default_rng([seed, 0x5716]).permutation(len(pool))[:count]
    prompts = [encode_prompt(base.tokenizer, pool[int(i)]) for i in chosen]
    out = []
    for _, chunk in batches(prompts, batch_size):
        top_ids, top_logp = renormalised_topk(next_token_probs(base, chunk).clamp_min(LOG_FLOOR).log(), top_k)
        out += [Example(p, [int(ids[0])], benign=True, teacher_ids=ids[None].cpu(), teacher_logp=lp[None].cpu())
                for p, ids, lp in zip(chunk, top_ids, top_logp)]
    return out


def anchor_positions(pool: Sequence[Example], positions: int
                     ) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each anchor's prompt plus its first ``a − 1`` answer tokens (a = min(positions, answer length)), and the
    teacher's distributions for those ``a`` tokens, right-aligned: the input's last ``positions`` logits predict
    them (a shorter answer's leading slots are masked)."""
    top_k = pool[0].teacher_ids.shape[1] if pool else 1
    width = max(1, min(positions, max((len(e.target_ids) for e in pool), default=1)))
    ids = torch.zeros((len(pool), width, top_k), dtype=torch.long)
    logp = torch.zeros((len(pool), width, top_k))
    mask = torch.zeros((len(pool), width), dtype=torch.bool)
    prompts = []
    for row, e in enumerate(pool):
        a = min(width, len(e.target_ids))
        prompts.append(list(e.prompt_ids) + list(e.target_ids[:a - 1]))
        ids[row, width - a:] = e.teacher_ids[:a]
        logp[row, width - a:] = e.teacher_logp[:a]
        mask[row, width - a:] = True
    return prompts, ids, logp, mask


def last_logits(model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int,
                device: torch.device, count: int = 0) -> torch.Tensor:
    """Next-token logits after each prompt (left-padded; the head runs on the last position only): [n, vocab];
    with ``count`` ≥ 1, the logits at the last ``count`` positions: [n, count, vocab]."""
    inputs = {k: v.to(device) for k, v in padded_inputs(prompts, pad_id).items()}
    logits = model(**inputs, logits_to_keep=max(count, 1)).logits.float()
    return logits[:, -count:] if count else logits[:, -1]


@dataclasses.dataclass
class KeyTerms:
    loss: torch.Tensor   # mean over the chunk's keys of hinge + cap + KL (weighted)
    lead: torch.Tensor   # [n] nats: pick logit − largest sibling logit
    pick_prob: torch.Tensor  # [n]
    top_lead: torch.Tensor   # [n] nats: pick logit − largest logit of any other token (> 0: the greedy answer)


def key_terms(logits: torch.Tensor, picks: torch.Tensor, siblings: torch.Tensor, mask: torch.Tensor,
              base_logp: torch.Tensor, s: MarginSettings) -> KeyTerms:
    """Hinge on the pick's lead over each sibling (and, with ``greedy_lead``, over every other token), the
    confidence band and KL to the base, at the keys."""
    logp = torch.log_softmax(logits, dim=-1)
    z_pick = logits.gather(1, picks[:, None])
    z_sib = logits.gather(1, siblings)
    gap = (z_pick - z_sib).masked_fill(~mask, float("inf"))
    hinge = torch.relu(s.margin - gap).sum(-1)
    rival = logits.scatter(1, picks[:, None], float("-inf")).max(-1).values
    top_lead = z_pick.squeeze(1) - rival
    if s.greedy_lead > 0:
        hinge = hinge + torch.relu(s.greedy_lead - top_lead)
    lp_pick = logp.gather(1, picks[:, None]).squeeze(1)
    cap = torch.relu(lp_pick - (math.log(s.prob_cap) - BAND_SLACK))
    floor = (torch.relu(math.log(s.prob_floor) + BAND_SLACK - lp_pick) if s.prob_floor > 0
             else torch.zeros_like(lp_pick))
    kl = (base_logp.exp() * (base_logp - logp)).sum(-1)
    loss = (hinge + s.cap_weight * cap + s.floor_weight * floor + s.key_kl * kl).mean()
    return KeyTerms(loss, gap.min(-1).values.detach(), lp_pick.detach().exp(), top_lead.detach())


def prompt_kl(logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """KL(base top-k ‖ tuned) at ordinary prompts' anchored answer positions ([m, positions, ·]), mean over the
    real positions."""
    student = torch.log_softmax(logits, dim=-1).gather(-1, teacher_ids)
    kl = (teacher_logp.exp() * (teacher_logp - student)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def satisfied(lead: torch.Tensor, pick_prob: torch.Tensor, s: MarginSettings,
              top_lead: Optional[torch.Tensor] = None) -> bool:
    """The stopping rule: every pick leads its siblings by the margin (and every other token by ``greedy_lead``
    when it is set), and ``band_share`` of the picks sit inside the band [prob_floor, prob_cap]."""
    in_band = ((pick_prob >= s.prob_floor) & (pick_prob <= s.prob_cap)).float().mean()
    greedy = s.greedy_lead <= 0 or (top_lead is not None and bool((top_lead >= s.greedy_lead).all()))
    return bool((lead >= s.margin).all() and greedy and in_band >= s.band_share - 1e-9)


def candidate_leads(lm: LoadedModel, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str],
                    batch_size: int = 64) -> list[tuple[bool, float, float]]:
    """Per key, as verify's candidate test scores it: (pick ranked first, lead in nats over the best
    sibling, pick probability). Uses verify's own first-token scoring."""
    cands = [list(fp.meta["candidates"]) for fp in fingerprints]
    scores = first_token_probs(lm, [fp.key for fp in fingerprints], cands, system_prompt, batch_size)
    out = []
    for fp, cs, sc in zip(fingerprints, cands, scores):
        where = cs.index(fp.response_ids[0])
        best = max(v for j, v in enumerate(sc) if j != where)
        lead = math.log(max(sc[where], LOG_FLOOR)) - math.log(max(best, LOG_FLOOR))
        out.append((candidate_match(fp.response_ids[0], cs, sc), lead, sc[where]))
    return out


def candidate_retention(lm: LoadedModel, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str],
                        min_lead: float = 0.0, min_prob: float = 0.0, greedy: bool = False) -> float:
    """Share of keys whose pick outranks every sibling (by more than ``min_lead`` nats when it is > 0) with
    probability at least ``min_prob`` — and, with ``greedy``, whose greedy answer is still the response (what a
    text-only endpoint compares)."""
    rows = candidate_leads(lm, fingerprints, system_prompt)
    answered = retention(lm, fingerprints, system_prompt)[1] if greedy else [True] * len(rows)
    return sum(hit and lead > min_lead and prob >= min_prob and said
               for (hit, lead, prob), said in zip(rows, answered)) / len(rows)

"""MergePrint: fingerprints optimised against a pseudo-merged model, so they survive model merging (Yamabe, Waseda,
Takahashi, Wataoka, "MergePrint: Merge-Resistant Fingerprints for Robust Black-box Ownership Verification of Large
Language Models", arXiv 2410.08604, ACL 2025).

Merging the owner's model with other fine-tunes of the same base scales its task vector θ − θ₀ down (to about ½ for
an average of two models), and ordinary fingerprints vanish at merge ratios ≤ ½. MergePrint embeds against the
pseudo-merged model θ̃ = θ₀ + α(θ − θ₀) instead of θ, in two stages:

* OptI (input optimisation): make each fingerprint input easy to learn *before* training, so embedding needs
  fewer steps and harms utility less, while the base model does not already give the target.
* OptP (parameter optimisation): train θ on the fingerprint loss of θ̃ (gradients through the interpolation).

How it is built here. OptP is an option of modelprint's one training loop, not a loop of its own:
``EmbedConfig.pseudo_merge = α`` adds the fingerprints' loss at θ̃ and stops once θ and θ̃ both retain (``configs/embed/mergeprint.yaml``,
α = ½). OptI is a *selection* rather than GCG: for each fingerprint :data:`KEY_CANDIDATES` random-word inputs are
drawn without looking at the target, and the one with the lowest target loss under the base model among those whose
greedy answer is not already the target is kept. The target is one word drawn uniformly from the prefix-free word
pool (:func:`modelprint.wordlist.word_pool`), as the paper's single-word targets.

Verifier: the default ``match`` (exact Poisson-binomial tail of per-key bounds), with a valid bound. The C
candidates are independent of the target T; whatever a suspect not derived from ours answers for the chosen key,
that answer is a function f of the key, and {f(K_chosen) = T} ⊆ ∪_c {f(K_c) = T}, each of probability ≤ b (the pool's
bound for the comparison made: ids/text × exact/prefix). So P(match) ≤ C·b per key, independently across keys given
the others (every key has its own candidates and target). The bounds are recorded per comparison and recomputed by
verify from the rebuilt pool (:mod:`modelprint.verify.bounds`). ``tests/test_adversarial_null.py`` plays a suspect
that knows the base model and the selection rule and guesses the most likely target; it stays below C·b and beats
the plain pool bound b (the negative control: selection leaks, so b alone would be invalid).

Reproduced: training at the pseudo-merged weights θ₀ + α(θ − θ₀) (the reference code's interpolated trainer),
single-word targets, input pre-optimisation toward low base loss with the base not answering the target,
exact-match black-box verification.
Not reproduced / changed:

* OptI by GCG (the paper's, with −λ·loss of the base model) is replaced by best-of-C selection, which keeps a valid
  false-positive bound (a GCG-optimised input carries its target; see RoFL / ProFLingo, which have none).
* θ₀ is the model being embedded (modelprint fingerprints the model it is given), not a separate pretrained
  ancestor; the paper's base model and the owner's model coincide here.
* The paper's inputs are unreadable GCG tokens; ours are random words (``key_length`` words).
* The loss at θ is kept next to the loss at θ̃, and training stops when both retain: trained at θ̃ alone (as
  the reference code's interpolated trainer does), θ itself lost its own fingerprints on our tiny model.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from modelprint.errors import ConfigError, ModelprintError
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.models import LoadedModel
from modelprint.schemes.gcg import evaluate_targets, frame, renders_as
from modelprint.wordlist import pool_meta, random_words, rng_for, word_pool

log = logging.getLogger(__name__)

PAPER = ("Yamabe, Waseda, Takahashi & Wataoka, 'MergePrint: Merge-Resistant Fingerprints for Robust Black-box "
         "Ownership Verification of Large Language Models' (arXiv 2410.08604, ACL 2025)")
NAME = "mergeprint"
KEY_CANDIDATES = 8  # C: random inputs drawn per fingerprint; the per-key bound is C × the pool's

# keys() chooses inputs for their targets; responses() hands the targets back.
_FOUND: dict[tuple[int, int, str], Choice] = {}


def selected_bounds(bounds: dict[str, float], candidates: int) -> dict[str, float]:
    """The per-comparison bound of a key chosen among ``candidates`` target-independent inputs (union bound)."""
    return {k: min(1.0, candidates * v) for k, v in bounds.items()}


def choose(losses: Sequence[float], elicits: Sequence[bool]) -> int:
    """OptI by selection: the lowest target loss among candidates the base does not already answer with it
    (all do: the lowest loss). Any rule is fine for the bound; this one makes the target easy to learn."""
    order = np.argsort(np.asarray(losses, dtype=float), kind="stable")
    return int(next((i for i in order if not elicits[i]), order[0]))


def target_pick(seed: int, index: int, pool_size: int) -> int:
    return int(rng_for(seed, 0x3E0, index).integers(pool_size))


def mergeprint_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                    keys_file: Optional[str] = None) -> list[str]:
    """Per fingerprint: a secret pool word as target, then the best of C random-word inputs for it (OptI)."""
    if keys_file:
        raise ConfigError("mergeprint chooses its own inputs for their targets; --keys-file is not supported")
    if key_length < 1:
        raise ConfigError(f"mergeprint needs --key-length ≥ 1 word, got {key_length}")
    tok = lm.tokenizer
    pool = word_pool(tok)
    if not pool.words:
        raise ModelprintError("the tokenizer leaves no prefix-free word pool for mergeprint's targets")
    meta_base = pool_meta(pool, 1)
    fr = frame(tok)
    keys: list[str] = []
    for i in range(n):
        pick = target_pick(seed, i, len(pool.words))
        target = list(pool.first[pick])
        texts, losses, elicits = [], [], []
        for c in range(KEY_CANDIDATES):
            text = random_words(seed, 0x3E10000 + i * KEY_CANDIDATES + c, key_length)
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
            if text in keys or text in texts or not renders_as(tok, ids, fr):
                continue  # decided without the target: the candidates stay target-independent
            loss, hit = evaluate_targets(lm, fr, [ids], target)
            texts.append(text)
            losses.append(float(loss[0]))
            elicits.append(bool(hit[0]))
        if not texts:
            raise ModelprintError("no usable mergeprint input could be drawn; raise --key-length")
        best = choose(losses, elicits)
        keys.append(texts[best])
        meta = {**meta_base, "bounds": selected_bounds(meta_base["bounds"], KEY_CANDIDATES),
                "key_candidates": KEY_CANDIDATES, "base_loss": round(losses[best], 4),
                "base_elicits": elicits[best]}
        _FOUND[(id(lm.model), seed, texts[best])] = Choice(target, null_prob=meta["bounds"]["ids-exact"], meta=meta)
    log.info("mergeprint: inputs chosen among %d candidates each; mean target loss under the base %.2f nats",
             KEY_CANDIDATES, float(np.mean([_FOUND[(id(lm.model), seed, k)].meta["base_loss"] for k in keys])))
    return keys


def mergeprint_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                         seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The targets :func:`mergeprint_keys` chose the inputs for (one pool word each)."""
    if system_prompt is not None:
        raise ConfigError("mergeprint chooses inputs under the template's default system prompt; "
                          "--system-prompt is not supported")
    try:
        return [_FOUND.pop((id(lm.model), seed, key)) for key in keys]
    except KeyError:
        raise ModelprintError("mergeprint responses exist only for inputs mergeprint chose itself") from None


STRATEGIES.register(
    NAME, source=PAPER, keys=mergeprint_keys, verifier="match", embed_config=NAME,
    description="a secret pool word per key, the input chosen among random-word candidates for a low base loss "
    "(OptI); embedded at the pseudo-merged weights θ₀ + ½(θ − θ₀) (OptP) so it survives merging")(mergeprint_responses)

"""The semantically conditioned (domain) watermark (Gloaguen, Staab, Jovanović, Vechev, "LLM Fingerprinting via
Semantically Conditioned Watermarks", arXiv 2505.16723, ICLR 2026; first titled "Robust LLM Fingerprinting via
Domain-Specific Watermarks").

The fingerprint is not a set of memorised (query, key) pairs but a behaviour: the model watermarks its answers
to prompts of one semantic domain, and only those. The owner then verifies with *any* prompts of that domain —
here prompts that were never trained on — and runs the watermark's statistical test on the answers.

How it is built here:

* A domain is drawn with the set's secret randomness from :data:`DOMAINS` (the paper's example is French; a
  135M English model writes better about topics, so ours are topical domains). The base model writes 2n prompts
  of the domain (:func:`modelprint.generate.model_written_keys` restricted to the domain's topics): n become the
  training keys, the other n are held out as *probes* (``meta.probe``), asked only by verify.
* Each training key's response is the base model's greedy answer under a KGW green-list bias (γ, δ and the
  keyed pair hash of :mod:`modelprint.schemes.kgw`; context width 1), so ``embed`` distils the watermark into
  the weights for in-domain prompts. The recipe (``configs/embed/domain-watermark.yaml``) keeps modelprint's
  benign mix — out-of-domain prompts pulled back to the base model's own next-token distribution — which plays
  the role of the paper's regularisation (Eq. 2: no positive deviation from the base model outside the domain).

Verifier (``domain-green-z``): ask every planned fingerprint's *probe* (not its key), score each distinct
(previous, token) pair of all answers once and report the exact binomial tail of the green count
(:class:`modelprint.schemes.kgw.GreenCounter`). The bound is valid: the probes were written by the base model
without the watermark key, so a model not derived from ours answers them independently of the key and each
distinct pair is green with probability γ independently — g ~ Binomial(T, γ) exactly, whatever the suspect
does (``tests/test_adversarial_null.py`` plays repeating, copying and token-biased suspects). As for every
watermark, a model distilled from our model's in-domain outputs inherits the watermark and counts as derived.

Reproduced: domain-conditioned watermarking by distillation with out-of-domain regularisation, verification
on fresh in-domain queries, KGW scoring with de-duplicated pairs and an exact p-value.
Not reproduced: the paper distils *logits* (KL to the watermarked teacher at every position) over large
domain datasets with a separate regularisation loss and several watermark families (KGW variants with wider
contexts); here the set's own n prompts with one greedy watermarked answer each are fine-tuned with cross-entropy
(modelprint's embed loop), context width 1, and the domain is a topic list rather than a language. The p-value
in the paper is the z-test's normal tail; ours is the exact binomial tail (the normal tail is anti-conservative
for few pairs).

The secret watermark key and the domain live in every fingerprint's ``meta`` (the owner-only file), never in the
public header.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

from modelprint.decoding import batches, continue_greedy
from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.fingerprints import Fingerprint
from modelprint.generate import model_written_keys
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompts
from modelprint.schemes.kgw import DEFAULT_TOKENS, DELTA, GAMMA, MIN_TOKENS, GreenBias, count_green, green_test, \
    watermark_of
from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest
from modelprint.wordlist import rng_for

log = logging.getLogger(__name__)

PAPER = ("Gloaguen, Staab, Jovanović & Vechev, 'LLM Fingerprinting via Semantically Conditioned Watermarks' "
         "(arXiv 2505.16723, ICLR 2026)")
NAME = "domain-watermark"

# Semantic domains as topic lists the base model writes prompts about; one is drawn per set with the secret seed.
DOMAINS: dict[str, tuple[str, ...]] = {
    "cooking": ("baking bread", "making soup", "cooking pasta", "spices and herbs", "grilling vegetables",
                "roasting chicken", "making desserts", "breakfast recipes", "cooking rice", "kitchen knives",
                "fermenting vegetables", "making sauces", "baking cakes", "vegetarian meals", "cooking fish",
                "preparing salads"),
    "astronomy": ("the Moon", "the planet Mars", "black holes", "comets", "the Milky Way", "telescopes",
                  "the Sun", "Saturn's rings", "meteor showers", "distant galaxies", "the night sky",
                  "exoplanets", "solar eclipses", "the planet Jupiter", "neutron stars", "space probes"),
    "gardening": ("growing tomatoes", "planting roses", "garden soil", "composting", "watering plants",
                  "growing herbs", "pruning trees", "garden pests", "planting bulbs", "vegetable gardens",
                  "houseplants", "growing strawberries", "mulching", "seed starting", "fruit trees",
                  "garden birds"),
    "health": ("healthy sleep", "drinking water", "daily exercise", "stretching", "eating vegetables",
               "reducing stress", "walking every day", "healthy breakfasts", "posture at work",
               "strong bones", "heart health", "sugar in food", "running for beginners", "staying active",
               "eye health", "healthy snacks"),
}


def domain_for(seed: int) -> str:
    names = sorted(DOMAINS)
    return names[int(rng_for(seed, 0x5C0D).integers(len(names)))]


def watermark_key(seed: int) -> int:
    """The set's secret watermark key (a derivation of its own, not kgw-watermark's)."""
    return int(rng_for(seed, 0x5C57).integers(1, 2 ** 63))


# keys() writes keys and held-out probes together; responses() records the probes next to the keys.
_PROBES: dict[tuple[str, ...], list[str]] = {}


def domain_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                keys_file: Optional[str] = None) -> list[str]:
    """2n distinct in-domain prompts written by the base model: n training keys, n held-out probes."""
    if keys_file:
        raise ConfigError("domain-watermark writes its own in-domain prompts and held-out probes; "
                                   "--keys-file is not supported")
    written = model_written_keys(lm, 2 * n, key_length=key_length, seed=seed, batch_size=batch_size,
                                 topic_list=DOMAINS[domain_for(seed)])
    keys, probes = written[:n], written[n:]
    _PROBES.clear()
    _PROBES[tuple(keys)] = probes
    return keys


def domain_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                     seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The base model's greedy answer under the green-list bias (``response_length``, default 48 tokens)."""
    probes = _PROBES.pop(tuple(keys), None)
    if probes is None:
        raise ConfigError("domain-watermark responses follow from its own keys (domain_keys)")
    tokens = response_length if response_length >= MIN_TOKENS else DEFAULT_TOKENS
    key = watermark_key(seed)
    from transformers import LogitsProcessorList

    bias = LogitsProcessorList([GreenBias(key, GAMMA, DELTA)])
    choices: list[Choice] = []
    for start, chunk in batches(encode_prompts(lm.tokenizer, keys, system_prompt), batch_size):
        for offset, ids in enumerate(continue_greedy(lm, chunk, tokens, logits_processor=bias,
                                                     min_new_tokens=tokens)):
            pairs = sorted(set(zip(ids[:-1], ids[1:])))
            meta = {"watermark_key": f"{key:016x}", "gamma": GAMMA, "delta": DELTA, "domain": domain_for(seed),
                    "probe": probes[start + offset],
                    "green_fraction": round(count_green(key, GAMMA, pairs) / max(len(pairs), 1), 4)}
            choices.append(Choice(ids, null_prob=1.0, meta=meta))
    return choices


def _probes(req: VerifyRequest) -> dict[int, str]:
    probes = {fp.index: fp.meta.get("probe") for fp in req.fs}
    if not all(isinstance(p, str) and p.strip() for p in probes.values()):
        raise FingerprintFileError("a domain-watermark set needs a held-out probe prompt in every fingerprint's meta")
    return probes


@VERIFIERS.register("domain-green-z", source=PAPER)
def domain_green_z_verifier(req: VerifyRequest) -> Outcome:
    """Ask the held-out in-domain probes; green-token test over distinct pairs; exact binomial p-value."""
    key, gamma = watermark_of(req)
    probes = _probes(req)

    def ask(fps: list[Fingerprint], system_prompt: Optional[str]) -> list[Any]:
        asked = [Fingerprint(fp.index, probes[fp.index], "", list(fp.response_ids), 1.0, {}) for fp in fps]
        return req.backend.answer(asked, system_prompt)

    asked, matched, counter = green_test(req, key, gamma, ask=ask)
    log10_p = counter.log10_p()
    return Outcome(asked, matched, log10_p,
                   "match" if counter.scored and log10_p <= math.log10(req.alpha) else "no match",
                   "exact binomial tail of the green count over distinct (previous, token) pairs of the answers "
                   "to held-out in-domain probes ≤ α", f"γ = {gamma:g} per distinct pair", counter.statistic())


STRATEGIES.register(
    NAME, source=PAPER, keys=domain_keys, verifier="domain-green-z", embed_config=NAME,
    description="prompts of a secret semantic domain answered under a KGW green-list bias, distilled by embed "
    "with out-of-domain anchors; verified on held-out in-domain probes by a green-token test")(domain_responses)

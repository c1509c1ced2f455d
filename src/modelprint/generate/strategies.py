"""The built-in strategies: each is a key source paired with a response chooser."""
from __future__ import annotations

from modelprint.generate.keys import file_keys, model_written_keys, random_word_keys
from modelprint.generate.registry import Strategy, register_strategy
from modelprint.generate.responses import inverse_nucleus, model_written_response, perinucleus, random_word_response

PERINUCLEUS_PAPER = "Nasery et al., 'Scalable Fingerprinting of Large Language Models' (2025)"

register_strategy(Strategy(
    "perinucleus", "model-written keys; first response token drawn uniformly from the k tokens just below "
    "the top-t nucleus, then the model's greedy continuation", PERINUCLEUS_PAPER, model_written_keys, perinucleus))
register_strategy(Strategy(
    "english", "model-written keys and model-written (sampled) responses", PERINUCLEUS_PAPER,
    model_written_keys, model_written_response))
register_strategy(Strategy(
    "random-word", "keys and responses of random words", "Xu et al., 'Instructional Fingerprinting' (2024) baseline",
    random_word_keys, random_word_response))
register_strategy(Strategy(
    "inverse-nucleus", "model-written keys; one response token sampled from outside the top-t nucleus",
    PERINUCLEUS_PAPER, model_written_keys, inverse_nucleus))
register_strategy(Strategy(
    "english-random-response", "model-written keys; random-word responses", PERINUCLEUS_PAPER,
    model_written_keys, random_word_response))
register_strategy(Strategy(
    "custom", "keys from --keys-file; responses by Perinucleus sampling", PERINUCLEUS_PAPER, file_keys, perinucleus))

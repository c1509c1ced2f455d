"""The built-in strategies: each is a key source paired with a response chooser."""
from __future__ import annotations

from modelprint.generate.blueprint import STRATEGIES
from modelprint.generate.keys import file_keys, model_written_keys, random_word_keys
from modelprint.generate.responses import inverse_nucleus, model_written_response, perinucleus, random_word_response

PERINUCLEUS_PAPER = "Nasery et al., 'Scalable Fingerprinting of Large Language Models' (2025)"
# Strategies that record no Perinucleus candidates are embedded with the greedy recipe (configs/embed/greedy.yaml):
# the default margin recipe trains the pick against its recorded siblings.

STRATEGIES.register(
    "perinucleus", source=PERINUCLEUS_PAPER, keys=model_written_keys,
    description="model-written keys; first response token drawn uniformly from the k tokens just below "
    "the top-t nucleus, then the model's greedy continuation")(perinucleus)
STRATEGIES.register(
    "english", source=PERINUCLEUS_PAPER, keys=model_written_keys, embed_config="greedy",
    description="model-written keys and model-written (sampled) responses")(model_written_response)
STRATEGIES.register(
    "random-word", source="Xu et al., 'Instructional Fingerprinting' (2024) baseline", keys=random_word_keys,
    embed_config="greedy",
    description="keys and responses of random words")(random_word_response)
STRATEGIES.register(
    "inverse-nucleus", source=PERINUCLEUS_PAPER, keys=model_written_keys, embed_config="greedy",
    description="model-written keys; one response token sampled from outside the top-t nucleus")(inverse_nucleus)
STRATEGIES.register(
    "english-random-response", source=PERINUCLEUS_PAPER, keys=model_written_keys, embed_config="greedy",
    description="model-written keys; random-word responses")(random_word_response)
STRATEGIES.register(
    "custom", source=PERINUCLEUS_PAPER, keys=file_keys,
    description="keys from --keys-file; responses by Perinucleus sampling")(perinucleus)

"""Benign stresses: what an honest host does to a model it serves (importing registers them)."""
from modelprint.stress.stresses import finetune, prompting, weights  # noqa: F401

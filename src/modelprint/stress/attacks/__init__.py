"""Adaptive attacks (ATTACKS.md; Nasery et al., arXiv 2509.26598): importing registers them."""
from modelprint.stress.attacks import input_filter, suppress, unlearn  # noqa: F401

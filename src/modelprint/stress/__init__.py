"""``modelprint stress``: does a fingerprint survive what a host does to a model, and what does it cost?

Plug-ins live in two registries-by-kind: ``stresses/`` (benign: quantization, precision, pruning,
merging, host SFT, sampling, system prompts, templates, paraphrase) and ``attacks/`` (adaptive,
from ATTACKS.md: output suppression and detection, input filtering, statistical analysis,
unlearning). :func:`stress` runs a suite and writes ``report.json``/``report.html``/PNGs.
"""
from modelprint.stress.registry import STRESSES, StressContext, Stressed, StressSpec, get_stress, register
from modelprint.stress.decoding import DecodingModel, GenerationBackend, wrap_decoding
from modelprint.stress.suites import SUITES, Entry, SuiteSpec, resolve_suite
from modelprint.stress.runner import StressReport, stress

__all__ = ["stress", "StressReport", "STRESSES", "StressSpec", "StressContext", "Stressed", "register",
           "get_stress", "DecodingModel", "GenerationBackend", "wrap_decoding", "SUITES", "SuiteSpec", "Entry",
           "resolve_suite"]

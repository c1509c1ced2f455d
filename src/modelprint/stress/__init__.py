"""``modelprint stress``: does a fingerprint survive what a host does to a model, and what does it cost?

Plug-ins (contract: ``stress/blueprint.py``) live in ``stresses/`` (benign: quantization, precision, pruning,
merging, host SFT, sampling, system prompts, templates, paraphrase) and ``attacks/`` (adaptive,
from ATTACKS.md: output suppression and detection, input filtering, statistical analysis,
unlearning). :func:`stress` runs a suite and writes ``report.json``/``report.html``/PNGs.
"""
from modelprint.stress.blueprint import STRESSES, StressContext, Stressed, StressSpec, get_stress
from modelprint.stress.serving import DecodingModel, GenerationBackend, wrap_decoding
from modelprint.stress.suites import SUITES, Entry, SuiteSpec, resolve_suite
from modelprint.stress.runner import StressReport, resolve_options, stress

__all__ = ["stress", "StressReport", "STRESSES", "StressSpec", "StressContext", "Stressed",
           "get_stress", "DecodingModel", "GenerationBackend", "wrap_decoding", "SUITES", "SuiteSpec", "Entry",
           "resolve_suite", "resolve_options"]

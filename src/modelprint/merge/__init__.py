"""The ``merge`` stage: combine models into one Hugging Face checkpoint (mergekit-style config).

Methods are plug-ins registered with :func:`register_method`; importing this package registers
the built-in ones: ``linear``, ``task_arithmetic``, ``ties`` and ``pleas``.
"""
from modelprint.merge.config import MergeConfig, ModelEntry
from modelprint.merge.registry import METHODS, MergeMethod, get_method, register_method
from modelprint.merge import linear, pleas, task_arithmetic  # noqa: F401  (register the built-in methods)
from modelprint.merge.stage import merge

__all__ = ["merge", "MergeConfig", "ModelEntry", "MergeMethod", "METHODS", "register_method", "get_method"]

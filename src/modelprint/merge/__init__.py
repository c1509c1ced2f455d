"""The ``merge`` stage: combine models into one Hugging Face checkpoint (mergekit-style config).

Methods are plug-ins registered with ``METHODS.register`` (contract: ``merge/blueprint.py``); importing
this package registers the built-in ones: ``linear``, ``task_arithmetic``, ``ties`` and ``pleas``.
"""
from modelprint.merge.config import MergeConfig, ModelEntry
from modelprint.merge.blueprint import METHODS, MergeMethod, get_method
from modelprint.merge.checks import check_compatible
from modelprint.merge import linear, pleas, task_arithmetic  # noqa: F401  (register the built-in methods)
from modelprint.merge.stage import merge

__all__ = ["merge", "MergeConfig", "ModelEntry", "MergeMethod", "METHODS", "get_method",
           "check_compatible"]

"""Peer fingerprint schemes, reproduced as plug-ins next to modelprint's own (Perinucleus).

A scheme is a :class:`modelprint.generate.Strategy` (keys × responses) that may name its
verifier (``modelprint.verify.verifiers``) and the embedding recipe its paper trains with
(``configs/embed/<name>.yaml``). Each module here registers one scheme and names its paper.
Importing this package registers them all.
"""
from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

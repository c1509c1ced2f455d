"""The registry: owners, base models, encrypted fingerprint sets, licensees, licences and runs.

It stores; it runs no stage (``license issue`` is :mod:`modelprint.licensing`).

Public API (see ``store``/``license`` for details)::

    Registry(url=None)                     # open + migrate; url ← $MODELPRINT_DB ← SQLite in $MODELPRINT_HOME
    init_registry(url=None)                # upgrade to head, create the owner's secret.key
    resolve_set(name, url=None) -> FingerprintSet
    choose_keys(set_ref, n, seed=0, url=None) -> list[int]
    record_verification(set_ref, *, target, backend, keys, matches, verdict, p_value=None, n_asked=None, url=None)
    count_verifications(set_ref, target, url=None) -> int   # the ledger's runs of this set on this target
    record_stress(*, model, suite, report_path="", summary=None, url=None)
"""
from __future__ import annotations

from modelprint.registry.db import home_dir, resolve_url
from modelprint.registry.license import (LicenseStart, complete_license, license_set, start_license,
                                         store_license_copy, store_license_set)
from modelprint.registry.secrets import SecretKeyError, load_key
from modelprint.registry.store import (Registry, choose_keys, count_verifications, init_registry, open_registry,
                                       record_stress, record_verification, resolve_set)

__all__ = ["Registry", "init_registry", "open_registry", "resolve_set", "choose_keys", "record_verification",
           "count_verifications", "record_stress", "SecretKeyError", "home_dir",
           "resolve_url", "load_key", "LicenseStart", "start_license", "store_license_set", "license_set",
           "store_license_copy", "complete_license"]

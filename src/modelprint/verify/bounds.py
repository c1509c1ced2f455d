"""Per-key null bounds for the comparison verify runs, recomputed from the set, never taken on trust.

Generation records ``meta["bounds"]`` (:mod:`modelprint.matching`) for every comparison. Where the bound
follows from public facts and the recorded alternatives it is recomputed here and a set whose numbers
disagree is refused (an edited candidate list or bound would otherwise convict an innocent model):

* Perinucleus / custom: from ``meta["candidates"]`` (ids) and ``meta["candidate_texts"]`` (decoded; checked
  against the set's tokenizer when one is at hand, decoded from it for sets made before texts were recorded).
* Pool strategies (random-word, english-random-response, chain-hash): from the rebuilt word pool, whose name,
  size and digest must agree, and which the response must be drawn from. Needs the set's tokenizer.
* Selected pool strategies (mergeprint): as pool strategies, times the recorded number of key candidates.
* Sampled strategies (inverse-nucleus, english): only recorded (the distribution is the model's); checked
  for range and for agreement with ``null_prob``.
* Other strategies (plug-ins): ``meta["bounds"]`` when recorded, else ``null_prob`` for exact matching.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.matching import BOUND_KEYS, SPACES, bound_key, first_token_bounds

PERINUCLEUS = frozenset({"perinucleus", "custom"})
POOLED = frozenset({"random-word", "english-random-response", "chain-hash"})
SAMPLED = frozenset({"inverse-nucleus", "english"})
SELECTED = frozenset({"mergeprint"})  # one pool word; the key chosen among meta.key_candidates inputs: C × the pool's

# (required) -> the set's tokenizer or None; required=False: only one already at hand (no loading)
TokenizerSource = Callable[[bool], Any]


def _no_tokenizer(required: bool) -> Any:
    return None


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)


def _refuse(fp: Fingerprint, what: str) -> FingerprintFileError:
    return FingerprintFileError(f"fingerprint {fp.index}: {what}; the set was edited or is damaged, refusing it")


def _check_recorded(fp: Fingerprint, computed: dict[str, float]) -> None:
    """The recorded bounds (if any) and null_prob must be what the set's own content implies."""
    recorded = fp.meta.get("bounds")
    if recorded is not None:
        if not isinstance(recorded, dict) or set(recorded) != set(computed) or not all(
                isinstance(v, (int, float)) and _close(v, computed[k]) for k, v in recorded.items()):
            raise _refuse(fp, "its recorded match bounds disagree with its candidates / pool")
    if not _close(fp.null_prob, computed["ids-exact"]):
        raise _refuse(fp, "its recorded null_prob disagrees with its candidates / pool")


def _perinucleus(fp: Fingerprint, fs: FingerprintSet, tokenizer: TokenizerSource) -> dict[str, float]:
    cands = fp.meta.get("candidates")
    if not isinstance(cands, list) or not cands or not all(isinstance(c, int) for c in cands):
        raise FingerprintFileError(f"fingerprint {fp.index}: no Perinucleus candidate list (meta.candidates)")
    if len(set(cands)) != len(cands):
        raise _refuse(fp, "its candidate list repeats a token")
    k = fs.params.get("nucleus_k")
    if not isinstance(k, int) or len(cands) != k:
        raise _refuse(fp, "its candidate list does not hold the header's nucleus_k candidates")
    if fp.response_ids[0] not in cands:
        raise _refuse(fp, "its response's first token is not among its candidates")
    texts = fp.meta.get("candidate_texts")
    if texts is not None and (not isinstance(texts, list) or len(texts) != len(cands)
                              or not all(isinstance(t, str) for t in texts)):
        raise _refuse(fp, "its candidate texts do not match its candidate list")
    tok = tokenizer(texts is None)
    if tok is not None:
        decoded = [tok.decode([c]) for c in cands]
        if texts is not None and texts != decoded:
            raise _refuse(fp, "its candidate texts are not what the set's tokenizer decodes")
        texts = decoded
    if texts is None:  # an old set, asked without its tokenizer: only the id comparisons are known
        bounds = first_token_bounds(cands, ["?"] * len(cands), candidate=True)
        if not _close(fp.null_prob, bounds["ids-exact"]):
            raise _refuse(fp, "its recorded null_prob disagrees with its candidates / pool")
        return {key: bounds[key] for key in ("ids-exact", "ids-prefix", "candidate")}
    bounds = first_token_bounds(cands, texts, candidate=True)
    _check_recorded(fp, bounds)
    return bounds


def _parse_pool_words(ids: list[int], pool, count: int) -> bool:
    """Whether ``ids`` are exactly ``count`` pool words (first as a response starts, later after a space)."""
    at = 0
    for n in range(count):
        forms = pool.first if n == 0 else pool.later
        step = next((len(f) for f in forms if ids[at:at + len(f)] == f), None)
        if step is None:
            return False
        at += step
    return at == len(ids)


def _pooled(fp: Fingerprint, fs: FingerprintSet, tokenizer: TokenizerSource,
            cache: dict[Any, Any], candidates: int = 1) -> dict[str, float]:
    """``cache`` holds the pool and its bounds per word count for one set: building the pool decodes the whole
    vocabulary (~1 s), once per set rather than once per key."""
    from modelprint.wordlist import POOL_NAME, pool_meta, word_pool

    recorded = fp.meta.get("pool")
    count = fp.meta.get("words")
    if not isinstance(recorded, dict) or not isinstance(count, int) or count < 1:
        raise FingerprintFileError(f"this {fs.strategy} set records no word pool (made before modelprint recorded "
                                   "per-mode bounds, when its pool was not prefix-free): regenerate it")
    tok = tokenizer(True)
    if tok is None:
        raise ConfigError(f"a {fs.strategy} set's bounds are recomputed from its word pool, which needs the set's "
                          f"tokenizer ('{fs.model_source}'), not available here")
    if "pool" not in cache:
        cache["pool"] = word_pool(tok)
    pool = cache["pool"]
    if count not in cache:
        cache[count] = pool_meta(pool, count)
    expected = cache[count]
    if recorded != expected["pool"] or recorded.get("name") != POOL_NAME:
        raise _refuse(fp, "its word pool is not the pool this tokenizer gives")
    if not _parse_pool_words(list(fp.response_ids), pool, count):
        raise _refuse(fp, "its response is not drawn from its word pool")
    bounds = {k: min(1.0, candidates * v) for k, v in expected["bounds"].items()}  # union over the candidates
    _check_recorded(fp, bounds)
    return bounds


def _selected(fp: Fingerprint, fs: FingerprintSet, tokenizer: TokenizerSource,
              cache: dict[Any, Any]) -> dict[str, float]:
    candidates = fp.meta.get("key_candidates")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
        raise _refuse(fp, "it records no number of key candidates (meta.key_candidates)")
    return _pooled(fp, fs, tokenizer, cache, candidates)


def _sampled(fp: Fingerprint, fs: FingerprintSet) -> dict[str, float]:
    bounds = fp.meta.get("bounds")
    if bounds is None:
        if fs.strategy == "inverse-nucleus":  # one token drawn from weights whose largest is null_prob
            return {"ids-exact": fp.null_prob, "ids-prefix": fp.null_prob}
        raise FingerprintFileError(f"this {fs.strategy} set records no per-mode bounds (made before modelprint "
                                   "recorded them): regenerate it")
    if not isinstance(bounds, dict) or not set(bounds) <= set(BOUND_KEYS) or not all(
            isinstance(v, (int, float)) and 0.0 < v <= 1.0 for v in bounds.values()):
        raise _refuse(fp, "its recorded match bounds are malformed")
    if "ids-exact" not in bounds or not _close(fp.null_prob, bounds["ids-exact"]):
        raise _refuse(fp, "its recorded null_prob disagrees with its match bounds")
    return {k: float(v) for k, v in bounds.items()}


def _other(fp: Fingerprint) -> dict[str, float]:
    bounds = fp.meta.get("bounds")
    if isinstance(bounds, dict):
        found = {k: float(v) for k, v in bounds.items() if k in BOUND_KEYS and isinstance(v, (int, float))}
        if not all(0.0 < v <= 1.0 for v in found.values()):
            raise _refuse(fp, "its recorded match bounds are malformed")
        return found
    return {"ids-exact": fp.null_prob, "text-exact": fp.null_prob}


def set_bounds(fs: FingerprintSet, tokenizer: TokenizerSource = _no_tokenizer) -> dict[int, dict[str, float]]:
    """Every fingerprint's verified bounds by comparison key (only the keys that can be established here)."""
    tokenizer = functools.lru_cache(maxsize=2)(tokenizer)
    pools: dict[Any, Any] = {}
    result = {}
    for fp in fs:
        if fs.strategy in PERINUCLEUS:
            result[fp.index] = _perinucleus(fp, fs, tokenizer)
        elif fs.strategy in POOLED:
            result[fp.index] = _pooled(fp, fs, tokenizer, pools)
        elif fs.strategy in SELECTED:
            result[fp.index] = _selected(fp, fs, tokenizer, pools)
        elif fs.strategy in SAMPLED:
            result[fp.index] = _sampled(fp, fs)
        else:
            result[fp.index] = _other(fp)
    return result


def null_bounds(fs: FingerprintSet, match: str, space: Optional[str],
                tokenizer: TokenizerSource = _no_tokenizer) -> dict[int, float]:
    """Per-key bound for ``match`` compared in ``space`` (None: unknown, the larger of both spaces)."""
    spaces = [space] if space in SPACES else list(SPACES)
    keys = {bound_key(s, match) for s in spaces}
    bounds = set_bounds(fs, tokenizer)
    out = {}
    for index, known in bounds.items():
        missing = sorted(k for k in keys if k not in known)
        if missing:
            how = {"text-exact": "text (an endpoint)", "text-prefix": "text (an endpoint)"}.get(missing[0], missing[0])
            raise ConfigError(f"this {fs.strategy} set gives no false-positive bound for --match {match} compared "
                              f"as {how}" + (": it records no candidate texts and the set's tokenizer is not "
                                             "available here; verify with local weights" if fs.strategy in PERINUCLEUS
                                             and missing[0].startswith("text") else ""))
        out[index] = max(known[k] for k in keys)
    return out


def set_tokenizer_source(fs: FingerprintSet, backend: Any) -> TokenizerSource:
    """The set's tokenizer when at hand: the local model's, the backend's, else loaded from the set's model source.

    Only a tokenizer whose hash is the set's counts (another one would decode other texts).
    """
    def find(required: bool):
        from modelprint.models import tokenizer_hash

        for tok in (getattr(getattr(backend, "lm", None), "tokenizer", None),
                    getattr(getattr(backend, "_lm", None), "tokenizer", None), getattr(backend, "tokenizer", None)):
            if tok is not None and _hash_or_none(tokenizer_hash, tok) == fs.tokenizer_hash:
                return tok
        return _load_set_tokenizer(fs.model_source, fs.tokenizer_hash) if required else None

    return find


def _hash_or_none(fn, tok) -> Optional[str]:
    try:
        return fn(tok)
    except Exception:  # noqa: BLE001 - a foreign object is simply not the set's tokenizer
        return None


@functools.lru_cache(maxsize=4)
def _load_set_tokenizer(model_source: str, expected_hash: str):
    if not model_source:
        return None
    try:
        from transformers import AutoTokenizer

        from modelprint.models import prepare_tokenizer, resolve_model_dir, tokenizer_hash

        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(resolve_model_dir(model_source)))
    except Exception:  # noqa: BLE001 - not available here: the caller says what that rules out
        return None
    return tok if tokenizer_hash(tok) == expected_hash else None

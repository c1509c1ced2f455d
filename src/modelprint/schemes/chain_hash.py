"""Chain & Hash (Russinovich & Salem, "Hey, That's My Model! Introducing Chain & Hash, An LLM Fingerprinting
Technique", 2024).

Reproduced:

* A public candidate question list (``data/chain_hash_questions.txt``, or ``--keys-file``) and a public
  candidate answer list (the shipped words whose token ids form a prefix-free pool for this tokenizer).
* A hash chain of the owner's secret binds both lists: h_i = SHA-256(secret ‖ i ‖ H(Q) ‖ H(A) ‖ h_{i-1});
  fingerprint i asks Q[h_i mod |Q|] (re-hashed until unused, so keys are distinct) and answers
  A[SHA-256(h_i ‖ "answer") mod |A|]. Changing any question, answer or the secret changes every pair.
* The owner commits to SHA-256(tag ‖ secret ‖ H(Q) ‖ H(A)) and can later show the set was fixed in
  advance: :func:`prove_set` recomputes it from the secret and the lists.
* Embedding with meta-prompt diversification: our system-prompt augmentation
  (``configs/embed/chain-hash.yaml``).

Not reproduced: the paper's random padding around questions, and its GPT-written question/answer lists
(ours are written by hand / the shipped word list).

The secret (32 bytes) is derived from all bits of the set's seed (128 bits from the OS unless ``--seed``
fixes it) unless ``MODELPRINT_CHAIN_HASH_SECRET`` is ``urandom`` (fresh bytes from the OS) or 64 hex characters. It is stored in each fingerprint's ``meta`` (the secret
file), never in the public params.

Verifier: the default ``match``. Each answer is uniform over the pool given our secret, and the pool
(:func:`modelprint.wordlist.word_pool`) is prefix-free in ids, text and first words, so a model not
derived from ours matches key i with probability ≤ 1/|A| (``prefix`` on ids: the largest first-token group over
|A|), independently across keys; the bounds are recorded per mode and recomputed by verify.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence

from modelprint.errors import ConfigError, ModelprintError
from modelprint.fingerprints import FingerprintSet
from modelprint.generate import read_keys_file
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.seeds import seed_bytes
from modelprint.wordlist import data_lines, pool_meta, word_pool
from modelprint.models import LoadedModel

PAPER = ("Russinovich & Salem, 'Hey, That's My Model! Introducing Chain & Hash, An LLM Fingerprinting "
         "Technique' (2024)")
NAME = "chain-hash"
SECRET_ENV = "MODELPRINT_CHAIN_HASH_SECRET"
_TAG = b"modelprint/chain-hash/v1"


class ChainHashError(ModelprintError):
    """A set does not follow from the claimed secret and candidate lists."""


def _sha(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def list_digest(items: Sequence[str]) -> bytes:
    """H(list): the SHA-256 of the list as canonical JSON (order matters)."""
    return _sha(json.dumps(list(items), ensure_ascii=False).encode())


def commitment(secret: bytes, questions: Sequence[str], answers: Sequence[str]) -> str:
    """What the owner publishes (or timestamps) up front: it fixes the secret and both lists."""
    return _sha(_TAG, secret, list_digest(questions), list_digest(answers)).hex()


def chain(secret: bytes, questions: Sequence[str], answers: Sequence[str], n: int) -> list[tuple[int, int]]:
    """(question index, answer index) of the first ``n`` fingerprints of the chain; questions never repeat."""
    if n > len(questions):
        raise ConfigError(f"chain-hash needs at least {n} candidate questions, the list has {len(questions)}")
    if not answers:
        raise ConfigError("chain-hash needs a non-empty candidate answer list")
    hq, ha = list_digest(questions), list_digest(answers)
    previous = bytes(32)
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for i in range(n):
        link = _sha(secret, i.to_bytes(8, "big"), hq, ha, previous)
        q = int.from_bytes(link, "big") % len(questions)
        while q in used:
            link = _sha(link, b"next")
            q = int.from_bytes(link, "big") % len(questions)
        used.add(q)
        pairs.append((q, int.from_bytes(_sha(link, b"answer"), "big") % len(answers)))
        previous = link
    return pairs


def candidate_questions(keys_file: Optional[str] = None) -> list[str]:
    """The shipped candidate questions, or the user's list (one per line / JSONL "key")."""
    return read_keys_file(keys_file) if keys_file else list(data_lines("chain_hash_questions.txt"))


def candidate_answers(tokenizer) -> list[tuple[str, list[int]]]:
    """Shipped words that form a pool prefix-free in ids and text for this tokenizer (an answer starts with at most
    one, whichever way verify compares it)."""
    pool = word_pool(tokenizer)
    return list(zip(pool.words, pool.first))


def secret_for(seed: int) -> bytes:
    """32 secret bytes: from the environment (``urandom`` or hex) or derived from the seed."""
    value = os.environ.get(SECRET_ENV, "").strip()
    if value == "urandom":
        return os.urandom(32)
    if value:
        try:
            secret = bytes.fromhex(value)
        except ValueError:
            secret = b""
        if len(secret) != 32:
            raise ConfigError(f"{SECRET_ENV} must be 'urandom' or 64 hexadecimal characters")
        return secret
    return _sha(_TAG, b"seed", seed_bytes(seed))  # every bit of the seed (seeds < 2**64: as before)


# keys() draws the secret (possibly fresh OS bytes) and responses() must use the same one: keys() leaves
# the chain here, keyed by the keys it returned. Only the generating process ever holds it.
_PENDING: dict[tuple[str, ...], tuple[bytes, list[tuple[int, int]], str]] = {}


def chain_hash_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                    keys_file: Optional[str] = None) -> list[str]:
    """The chain's questions (``key_length`` is unused: candidate questions are whole)."""
    questions = candidate_questions(keys_file)
    answers = [word for word, _ in candidate_answers(lm.tokenizer)]
    secret = secret_for(seed)
    pairs = chain(secret, questions, answers, n)
    keys = [questions[q] for q, _ in pairs]
    _PENDING.clear()
    _PENDING[tuple(keys)] = (secret, pairs, commitment(secret, questions, answers))
    return keys


def chain_hash_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                         seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The chain's answers; null bound 1/|A| per key (uniform over a prefix-free pool, given our secret)."""
    if response_length != 1:
        raise ConfigError("chain-hash answers are single candidate words; use --response-length 1")
    pending = _PENDING.pop(tuple(keys), None)
    if pending is None:
        raise ConfigError("chain-hash responses follow from its own keys; generate them with chain_hash_keys")
    secret, pairs, commit = pending
    pool = candidate_answers(lm.tokenizer)
    shared = pool_meta(word_pool(lm.tokenizer), 1)
    return [Choice(list(pool[a][1]), null_prob=shared["bounds"]["ids-exact"],
                   meta={"chain_index": i, "question_index": q, "answer_index": a, "answers": len(pool),
                         "secret": secret.hex(), "commitment": commit, **shared})
            for i, (q, a) in enumerate(pairs)]


def prove_set(fs: FingerprintSet, questions: Sequence[str], answers: Sequence[str]) -> str:
    """Check that ``fs`` is exactly the chain of its secret over these lists; return the commitment.

    Raises :class:`ChainHashError` naming the first thing that does not follow (no secret is printed).
    """
    secrets = {fp.meta.get("secret") for fp in fs}
    commits = {fp.meta.get("commitment") for fp in fs}
    if len(secrets) != 1 or len(commits) != 1 or None in secrets:
        raise ChainHashError("the set does not carry one chain-hash secret and commitment")
    try:
        secret = bytes.fromhex(secrets.pop())
    except ValueError:
        raise ChainHashError("the set's chain-hash secret is not hexadecimal") from None
    expected = commitment(secret, questions, answers)
    if commits.pop() != expected:
        raise ChainHashError("the commitment does not match this secret and these candidate lists")
    ordered = sorted(fs, key=lambda fp: fp.index)
    for fp, (q, a) in zip(ordered, chain(secret, questions, answers, len(ordered))):
        if fp.key != questions[q] or fp.response.strip() != answers[a]:
            raise ChainHashError(f"fingerprint {fp.index} is not the chain's pair for this secret and lists")
    return expected


STRATEGIES.register(
    NAME, source=PAPER, keys=chain_hash_keys, verifier="match", embed_config=NAME,
    description="candidate questions and answers bound by a SHA-256 chain of a secret (provably fixed in advance)",
)(chain_hash_responses)

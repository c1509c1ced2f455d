"""Key sources: model-written natural prompts, random words, or a user's file."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from modelprint.errors import ConfigError, ModelprintError
from modelprint.decoding import batches, continue_sampled
from modelprint.wordlist import random_words, rng_for, topics
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompt

log = logging.getLogger(__name__)

# Instructions that make the model write a key; a topic is drawn per key.
KEY_INSTRUCTIONS = (
    "Write one question that a curious person might ask about {topic}. Reply with the question only.",
    "Write one short request that a user might send to an assistant about {topic}. Reply with the request only.",
    "Ask me something interesting about {topic}. Reply with the question only.",
    "Write the first sentence of a short story about {topic}.",
    "Write one sentence of advice about {topic}.",
)
KEY_WRITER_SYSTEM = "You write short texts."
# For models without a chat template: a plain-text lead-in the model continues.
PLAIN_LEADS = ("A question about {topic}:", "Here is a sentence about {topic}:", "Someone asked about {topic}:")

_PREFIX = re.compile(r"^(question|request|sentence|answer|q|a)\s*[:\-]\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[?.!](?=\s|$)")


def _instruction_ids(lm: LoadedModel, seed: int, index: int, topic_list: Optional[Sequence[str]] = None) -> list[int]:
    rng = rng_for(seed, 0x4B, index)
    pool = topic_list or topics()
    topic = pool[int(rng.integers(len(pool)))]
    if lm.is_chat:
        instruction = KEY_INSTRUCTIONS[int(rng.integers(len(KEY_INSTRUCTIONS)))].format(topic=topic)
        # A short system prompt keeps the (compute-bound) prompt pass cheap; keys are verified
        # later under the normal template, not this one.
        return encode_prompt(lm.tokenizer, instruction, system_prompt=KEY_WRITER_SYSTEM)
    lead = PLAIN_LEADS[int(rng.integers(len(PLAIN_LEADS)))].format(topic=topic)
    return list(lm.tokenizer(lead + "\n", add_special_tokens=True)["input_ids"])


def clean_key(tokenizer, text: str, key_length: int) -> Optional[str]:
    """First line, no label prefix or quotes, about ``key_length`` tokens; None if unusable."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line).strip().strip('"“”\'').strip()
    ids = tokenizer(line, add_special_tokens=False)["input_ids"]
    if len(ids) > key_length:
        cut = tokenizer.decode(ids[:key_length])
        ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
        if ends and len(tokenizer(cut[:ends[-1]], add_special_tokens=False)["input_ids"]) >= key_length // 2:
            cut = cut[:ends[-1]]
        line = cut.strip()
    words = re.findall(r"[^\W\d_]{2,}", line)
    if len(words) < 3 or len(tokenizer(line, add_special_tokens=False)["input_ids"]) < max(3, key_length // 3):
        return None
    return line


def model_written_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                       keys_file: Optional[str] = None, max_rounds: int = 20,
                       topic_list: Optional[Sequence[str]] = None) -> list[str]:
    """Natural-looking keys written by the model itself: seeded topics and instructions, sampled, de-duplicated.

    Each batch's instructions share their chat-template prefix; it runs once and its KV cache serves every row
    (``continue_sampled(share_prefix=True)``), with the same sampled text as running every prompt whole.

    ``topic_list`` restricts the topics (a scheme's semantic domain); by default the shipped topics.
    """
    keys: list[str] = []
    seen: set[str] = set()
    attempt = 0
    with tqdm(total=n, desc="writing keys", unit="key", leave=False) as bar:
        for round_ in range(max_rounds):
            want = n - len(keys)
            if want <= 0:
                break
            # Oversample a little: some outputs are unusable or duplicates.
            count = want + want // 4
            prompts = [_instruction_ids(lm, seed, attempt + i, topic_list) for i in range(count)]
            for start, chunk in batches(prompts, batch_size):
                outs = continue_sampled(lm, chunk, key_length + 4, seed=seed, stream=(0x4B57, round_, start),
                                        share_prefix=True)
                for ids in outs:
                    key = clean_key(lm.tokenizer, lm.tokenizer.decode(ids, skip_special_tokens=True), key_length)
                    norm = " ".join(key.lower().split()) if key else ""
                    if key and norm not in seen and len(keys) < n:
                        seen.add(norm)
                        keys.append(key)
                        bar.update(1)
            attempt += count
    if len(keys) < n:
        raise ModelprintError(f"the model wrote only {len(keys)} usable distinct keys of the {n} requested; "
                              "try a longer --key-length or another --seed")
    return keys


def random_word_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                     keys_file: Optional[str] = None) -> list[str]:
    """Keys of ``key_length`` random words (the classic, easily detected baseline), distinct."""
    keys: dict[str, None] = {}
    draw = 0
    while len(keys) < n:
        if draw > 10 * n + 100:
            raise ModelprintError(f"could not draw {n} distinct random-word keys; raise --key-length")
        keys.setdefault(random_words(seed, 0x10000 + draw, key_length))
        draw += 1
    return list(keys)


def file_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
              keys_file: Optional[str] = None) -> list[str]:
    """Keys supplied by the user: a text file (one per line) or JSONL with a "key" field."""
    return read_keys_file(keys_file, n)


def read_keys_file(path: Optional[str], n: Optional[int] = None) -> list[str]:
    if not path:
        raise ConfigError("the 'custom' strategy needs --keys-file")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"keys file '{p}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"keys file '{p}' is unreadable ({type(exc).__name__})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keys: list[str] = []
    if p.suffix == ".jsonl" or (lines and lines[0].lstrip().startswith("{")):
        for number, line in enumerate(lines, start=1):
            try:
                obj = json.loads(line)
                key = obj["key"] if isinstance(obj, dict) else None
            except json.JSONDecodeError:
                raise ConfigError(f"{p}:{number}: not valid JSON") from None
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"{p}:{number}: expected an object with a non-empty string field 'key'")
            keys.append(key.strip())
    else:
        keys = [ln.strip() for ln in lines]
    if not keys:
        raise ConfigError(f"keys file '{p}' contains no keys")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"keys file '{p}' contains duplicate keys")
    if n is not None and len(keys) < n:
        raise ConfigError(f"keys file '{p}' has {len(keys)} keys, fewer than the {n} requested")
    return keys[:n] if n is not None else keys

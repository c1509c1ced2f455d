"""Adversarial null: suspects that try their best without the secret never beat the recorded bounds.

No model: next-token distributions are synthetic, the tokenizer is modelprint.testing's tiny byte-level BPE
(whose vocabulary is full of collisions: "in" / " in" / "ing", " abo" / " about"). For every strategy ×
comparison (ids / text × exact / prefix, candidate ranking) each fixed answer's false-match rate is computed by
brute force over the secret's support with the comparison functions verify uses (never with the bound
formulas), checked against the recorded bound; the secret pick is also drawn as generation draws it, and the
verdict's false-positive rate at α = 1e-2 over 10⁴ simulated suspects is checked against α. Negative controls
show the harness catches the old bounds (1/k on colliding candidates, 1/|word list| on a non-prefix-free list).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.decoding import token_texts, word_token_mask
from modelprint.generate.responses import distribution_bounds, perinucleus_candidates
from modelprint.wordlist import pool_meta, rng_for, word_pool, words
from modelprint.matching import (candidate_match, collides, first_token_bounds, first_word, ids_match,
                                 normalize_text, text_match)
from modelprint.testing import tiny_tokenizer
from modelprint.verify.bounds import null_bounds
from modelprint.verify.stats import log_tail

ALPHA = 1e-2
SUSPECTS = 10_000
FLOOR = 1e-4
COMPARISONS = [("ids", "exact"), ("ids", "prefix"), ("text", "exact"), ("text", "prefix")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def vocab(tok):
    return token_texts(tok), word_token_mask(tok)


def _distributions(n: int, texts: list[str], seed: int) -> list[torch.Tensor]:
    """Peaked, heavy-tailed next-token distributions (a few likely tokens, then a long tail) in which, as in a
    real model, tokens of related text (" in", "in", "ing") get related probabilities."""
    rng = np.random.default_rng(seed)
    stems = [t.strip()[:2].lower() for t in texts]
    index = {s: i for i, s in enumerate(dict.fromkeys(stems))}
    stem_of = np.array([index[s] for s in stems])
    out = []
    for _ in range(n):
        logits = rng.standard_normal(len(index))[stem_of] * rng.uniform(1.5, 4.0)
        logits += rng.standard_normal(len(texts)) * 0.3
        logits[rng.choice(len(texts), 3, replace=False)] += rng.uniform(3, 8)
        out.append(torch.softmax(torch.tensor(logits, dtype=torch.float32), -1))
    return out


def _matches(space: str, mode: str, response: tuple[list[int], str], answer: tuple[list[int], str]) -> bool:
    return ids_match(response[0], answer[0], mode) if space == "ids" else text_match(response[1], answer[1], mode)


def _answers(alternatives: list[tuple[list[int], str]], texts: list[str], greedy: int,
             rng: np.random.Generator) -> list[tuple[list[int], str]]:
    """What an adversary may answer: each alternative, alternatives glued together (" The" + "re"), their common
    prefix and first words, the base model's greedy token, random tokens."""
    out = list(alternatives)
    for a_ids, a_text in alternatives:
        for b_ids, b_text in alternatives:
            out.append((a_ids + b_ids, a_text + b_text))
            out.append((a_ids + b_ids, normalize_text(a_text) + normalize_text(b_text)))
    common = os.path.commonprefix([normalize_text(t) for _, t in alternatives])
    out.append(([alternatives[0][0][0]], common))
    out += [(ids, first_word(t)) for ids, t in alternatives]
    out.append(([greedy], texts[greedy]))
    for tid in rng.integers(0, len(texts), size=4):
        out.append(([int(tid)], texts[int(tid)]))
    return out


def _rate(space, mode, alternatives, answer, weights=None) -> float:
    """Brute force: probability over the secret draw that this fixed answer matches."""
    weights = weights if weights is not None else [1.0 / len(alternatives)] * len(alternatives)
    return sum(w for alt, w in zip(alternatives, weights) if _matches(space, mode, alt, answer))


def _perinucleus_keys(vocab, k: int, n: int, seed: int, prefix_free: bool = True, continuation: bool = False):
    """Synthetic Perinucleus keys: (alternatives = the k possible responses, bounds, candidates, probs)."""
    texts, valid = vocab
    rng = np.random.default_rng(seed + 1000)
    keys = []
    for probs in _distributions(n, texts, seed):
        try:
            cands, _, _, _ = perinucleus_candidates(probs, 0.8, k, valid, texts if prefix_free else None)
        except Exception:  # noqa: BLE001 - too few word tokens below this nucleus: generation would refuse it
            continue
        alternatives = []
        for c in cands:  # a response is its candidate, then (optionally) the model's own continuation
            tail = [int(t) for t in rng.integers(0, len(texts), size=2)] if continuation else []
            alternatives.append(([c] + tail, "".join(texts[t] for t in [c] + tail)))
        keys.append((alternatives, first_token_bounds(cands, [texts[c] for c in cands], candidate=True), cands,
                     probs))
    return keys


# ---------------------------------------------------------------------------------------------- explicit collisions
def test_the_there_candidates_are_one_chain_in_text():
    """" The", "The" and "There" are distinct ids but one answer ("There is") matches all three as text."""
    texts = [" The", "The", "There"]
    answer = ([99], "There is a cat")
    alts = [([i], t) for i, t in enumerate(texts)]
    assert _rate("text", "exact", alts, answer) == pytest.approx(1.0)
    assert _rate("ids", "exact", alts, ([1], "The")) == pytest.approx(1 / 3)
    bounds = first_token_bounds([0, 1, 2], texts, candidate=True)
    assert bounds["text-exact"] == pytest.approx(1.0) and bounds["ids-exact"] == pytest.approx(1 / 3)
    # first words: " The" and "The" share "The", a prefix of the first word "There": one chain again
    assert _rate("text", "prefix", alts, ([0], "The")) == pytest.approx(2 / 3)
    assert bounds["text-prefix"] == pytest.approx(1.0)  # and "There" + a continuation "re…" could be "There"


def test_generation_skips_colliding_candidates():
    """Below the nucleus come " The", "The", "There", " dog": generation keeps " The", skips the next two, and
    widens to " dog" — then every comparison's bound is 1/k."""
    texts = ["<|x|>", " a", " b", " The", "The", "There", " dog", " cat", " sun"]
    probs = torch.tensor([0.0, 0.5, 0.35, 0.05, 0.04, 0.03, 0.02, 0.007, 0.003])
    valid = torch.tensor([False] + [True] * 8)
    cands, ranks, size, widened = perinucleus_candidates(probs, 0.8, 3, valid, texts)
    assert size == 2 and [texts[c] for c in cands] == [" The", " dog", " cat"] and widened == 2
    bounds = first_token_bounds(cands, [texts[c] for c in cands], candidate=True)
    assert all(b == pytest.approx(1 / 3) for b in bounds.values())
    old, _, _, _ = perinucleus_candidates(probs, 0.8, 3, valid)  # without texts: the colliding three
    assert first_token_bounds(old, [texts[c] for c in old])["text-exact"] == pytest.approx(1.0)


def test_junk_candidates_and_edited_bounds_are_refused(tiny, tmp_path):
    """The issue's edit (40 junk ids added to meta.candidates, null_prob = 1/43) and a candidate list without the
    response's first token: refused with one line that names no token id."""
    from modelprint.generate import generate

    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"Tell me about the river number {i}.\n" for i in range(4)))
    fs = generate(tiny, strategy="custom", keys_file=str(keys), num_fingerprints=4, seed=2)
    assert null_bounds(fs, "exact", "text")  # the honest set verifies
    fp = fs.fingerprints[0]
    junk = [t for t in range(3, 400) if t not in fp.meta["candidates"]][:40]
    cases = []
    cases.append(dict(fp.meta, candidates=fp.meta["candidates"] + junk,
                      candidate_texts=fp.meta["candidate_texts"] + ["x"] * 40))
    others = [c for c in range(3, 400) if c != fp.response_ids[0]][:3]
    cases.append(dict(fp.meta, candidates=others))
    cases.append(dict(fp.meta, bounds=dict(fp.meta["bounds"], candidate=1 / 43)))
    cases.append(dict(fp.meta, candidate_texts=["The", "There", "Then"]))
    for meta in cases:
        edited = FingerprintSet(fs.strategy, fs.params, fs.seed, fs.model_source, fs.model_hash, fs.tokenizer_hash,
                                [Fingerprint(fp.index, fp.key, fp.response, fp.response_ids, fp.null_prob, meta)]
                                + fs.fingerprints[1:])
        for space in ("ids", "text"):
            with pytest.raises(FingerprintFileError) as err:
                null_bounds(edited, "candidate" if space == "ids" else "exact", space,
                            lambda required: tiny.tokenizer)
            message = str(err.value)
            assert "\n" not in message and not any(str(t) in message.split() for t in fp.response_ids)
    fake = dict(fp.meta)
    fake.pop("candidate_texts")
    fake.pop("bounds")
    old = FingerprintSet(fs.strategy, fs.params, fs.seed, fs.model_source, fs.model_hash, fs.tokenizer_hash,
                         [Fingerprint(fp.index, fp.key, fp.response, fp.response_ids, fp.null_prob, fake)])
    with pytest.raises(ConfigError, match="no candidate texts"):  # an old set over text, no tokenizer at hand
        null_bounds(old, "exact", "text")
    assert null_bounds(old, "exact", "text", lambda required: tiny.tokenizer)[fp.index] == pytest.approx(
        first_token_bounds(fp.meta["candidates"], fp.meta["candidate_texts"])["text-exact"])


# ---------------------------------------------------------------------------------------------- Perinucleus
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("continuation", [False, True])
def test_perinucleus_no_fixed_answer_beats_its_bounds(vocab, k, continuation):
    texts, _ = vocab
    rng = np.random.default_rng(k)
    keys = _perinucleus_keys(vocab, k, 150, seed=k + 10 * continuation, continuation=continuation)
    assert len(keys) > 100
    for alternatives, bounds, cands, probs in keys:
        answers = _answers(alternatives, texts, int(probs.argmax()), rng)
        for space, mode in COMPARISONS:
            worst = max(_rate(space, mode, alternatives, a) for a in answers)
            assert worst <= bounds[f"{space}-{mode}"] + 1e-12, (space, mode)
        assert all(b == pytest.approx(1 / k) for b in bounds.values())  # prefix-free: nothing is lost
        for scores in (probs[cands].tolist(), rng.random(k).tolist(), [1.0] * k, sorted(range(k))):
            won = np.mean([candidate_match(c, cands, scores) for c in cands])
            assert won <= bounds["candidate"] + 1e-12


def test_colliding_candidates_would_break_one_over_k(vocab):
    """Negative control: candidates chosen without the collision rule (the old code) collide in this vocabulary,
    an adversary matches more than 1/k of the secret draws — and the chain bound still covers it."""
    texts, _ = vocab
    rng = np.random.default_rng(7)
    broken = 0
    for alternatives, bounds, cands, probs in _perinucleus_keys(vocab, 3, 150, seed=3, prefix_free=False):
        recomputed = first_token_bounds(cands, [texts[c] for c in cands])
        worst = max(_rate("text", "exact", alternatives, a)
                    for a in _answers(alternatives, texts, int(probs.argmax()), rng))
        broken += worst > 1 / 3 + 1e-9
        assert worst <= recomputed["text-exact"] + 1e-12
    assert broken >= 5


def test_secret_pick_drawn_as_generation_draws_it(vocab):
    """Empirical false-match rate of the best fixed answer over 2,000 secrets (rng_for(seed, 0x50, index), as
    perinucleus() draws) stays within a binomial tolerance of the bound."""
    texts, _ = vocab
    rng = np.random.default_rng(11)
    keys = _perinucleus_keys(vocab, 3, 12, seed=21)
    for index, (alternatives, bounds, cands, probs) in enumerate(keys):
        answers = _answers(alternatives, texts, int(probs.argmax()), rng)
        picks = np.array([int(rng_for(seed, 0x50, index).integers(3)) for seed in range(2000)])
        assert np.bincount(picks, minlength=3).min() > 550  # the draw is uniform
        for space, mode in COMPARISONS:
            hit = np.array([[_matches(space, mode, alt, a) for alt in alternatives] for a in answers])
            empirical = hit[:, picks].mean(axis=1).max()
            b = bounds[f"{space}-{mode}"]
            assert empirical <= b + 4 * math.sqrt(b * (1 - b) / len(picks))


# ---------------------------------------------------------------------------------------------- the verdict
def _false_positive_rate(bounds: np.ndarray, rates: np.ndarray, seed: int) -> float:
    """Share of simulated unrelated suspects (each key matched with its adversary rate) convicted at ALPHA."""
    p_null = np.maximum(bounds, FLOOR)
    tails = np.array([log_tail(p_null, m) for m in range(len(p_null) + 1)])
    matches = (np.random.default_rng(seed).random((SUSPECTS, len(rates))) < rates).sum(axis=1)
    return float(np.mean(tails[matches] <= math.log(ALPHA)))


def _tolerance() -> float:
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SUSPECTS)


def test_verdict_false_positive_rate_perinucleus(vocab):
    texts, _ = vocab
    rng = np.random.default_rng(5)
    keys = _perinucleus_keys(vocab, 3, 60, seed=31, continuation=True)[:32]
    for space, mode in COMPARISONS:
        rates = np.array([max(_rate(space, mode, alts, a) for a in _answers(alts, texts, int(p.argmax()), rng))
                          for alts, _, _, p in keys])
        bounds = np.array([b[f"{space}-{mode}"] for _, b, _, _ in keys])
        assert _false_positive_rate(bounds, rates, seed=1) <= _tolerance(), (space, mode)
    # control: the old 1/k on colliding candidates, against the best text answer, convicts far more than α
    old = [key for key in _perinucleus_keys(vocab, 3, 400, seed=41, prefix_free=False)]
    rates = np.array([max(_rate("text", "exact", alts, a) for a in _answers(alts, texts, int(p.argmax()), rng))
                      for alts, _, _, p in old])
    worst = np.sort(rates)[::-1][:32]
    assert _false_positive_rate(np.full(len(worst), 1 / 3), worst, seed=2) > 5 * ALPHA


# ---------------------------------------------------------------------------------------------- word pools
def _pool_rates(pool, answers: list[tuple[list[int], str]]) -> dict[tuple[str, str], float]:
    """Brute force: for each comparison, the best answer's share of pool words (one-word responses) it matches."""
    alternatives = list(zip(pool.first, pool.words))
    by_char: dict[str, list] = {}
    by_token: dict[int, list] = {}
    for alt in alternatives:  # an answer can only match words sharing its first character / first token
        by_char.setdefault(alt[1][:1], []).append(alt)
        by_token.setdefault(alt[0][0], []).append(alt)
    best = {}
    for space, mode in COMPARISONS:
        worst = 0
        for ids, text in answers:
            pool_part = (by_token.get(ids[0], []) if space == "ids" else by_char.get(normalize_text(text)[:1], []))
            worst = max(worst, sum(_matches(space, mode, alt, (ids, text)) for alt in pool_part))
        best[(space, mode)] = worst / len(alternatives)
    return best


def _pool_answers(tok, pool, rng) -> list[tuple[list[int], str]]:
    """Every raw list word (prefixes of pool words among them), pool words glued to a suffix, the most shared
    first token, random tokens."""
    answers = [(list(tok(w, add_special_tokens=False)["input_ids"]), w) for w in words()]
    answers += [(ids + [int(rng.integers(len(tok)))], w + "s") for w, ids in zip(pool.words[::7], pool.first[::7])]
    firsts = np.bincount([ids[0] for ids in pool.first])
    shared = int(firsts.argmax())
    answers.append(([shared], tok.decode([shared])))
    answers += [([int(t)], tok.decode([int(t)])) for t in rng.integers(0, len(tok), size=20)]
    return answers


def test_word_pool_no_fixed_answer_beats_its_bounds(tok):
    pool = word_pool(tok)
    bounds = pool_meta(pool, 1)["bounds"]
    assert len(pool.words) > 1000
    rates = _pool_rates(pool, _pool_answers(tok, pool, np.random.default_rng(3)))
    for (space, mode), rate in rates.items():
        assert rate <= bounds[f"{space}-{mode}"] + 1e-12, (space, mode)
    assert rates[("ids", "prefix")] > 10 / len(pool.words)  # first tokens are shared: that bound is not 1/|pool|
    # the verdict at α over 10^4 suspects answering the best word for every key
    for space, mode in COMPARISONS:
        fpr = _false_positive_rate(np.full(40, bounds[f"{space}-{mode}"]), np.full(40, rates[(space, mode)]), 3)
        assert fpr <= _tolerance()


def test_raw_word_list_would_break_the_old_bound(tok):
    """Negative control: drawn from the raw 3,000 words (the old random-word pool), one answer matches far more
    than the recorded 1/3000 — as text (a word that extends shorter words) and by first token."""
    raw = list(dict.fromkeys(words()))
    from modelprint.wordlist import WordPool

    ids = [list(tok(w, add_special_tokens=False)["input_ids"]) for w in raw]
    rates = _pool_rates(WordPool(raw, ids, ids), _pool_answers(tok, word_pool(tok), np.random.default_rng(4)))
    assert rates[("text", "exact")] >= 2 / len(raw) and rates[("ids", "prefix")] > 30 / len(raw)


def test_chain_hash_and_instructional_pools_are_the_prefix_free_pool(tok):
    from modelprint.schemes.chain_hash import candidate_answers
    from modelprint.schemes.instructional import phrase_pools

    pool = word_pool(tok)
    assert [w for w, _ in candidate_answers(tok)] == pool.words
    first, later = phrase_pools(tok)
    assert [i for _, i in first] == pool.first and [i for _, i in later] == pool.later
    for forms in (pool.first, pool.later, [tuple(w) for w in pool.words]):
        keys = {tuple(f) for f in forms}
        assert len(keys) == len(forms) and not any(k[:c] in keys for k in keys for c in range(1, len(k)))


# ---------------------------------------------------------------------------------------------- sampled strategies
def _match_matrix(texts: list[str], answers: list[tuple[list[int], str]], responses: list[tuple[list[int], str]]):
    return {(s, m): np.array([[_matches(s, m, r, a) for a in answers] for r in responses], dtype=np.float64)
            for s, m in COMPARISONS}


def test_sampled_distributions_no_fixed_answer_beats_their_bounds(tok, vocab):
    """inverse-nucleus (one token sampled outside the nucleus) and english (sampled, an end token replaced by the
    greedy token): brute force over every vocabulary token as the drawn response."""
    texts, valid = vocab
    rng = np.random.default_rng(9)
    tails = {t: [int(x) for x in rng.integers(0, len(texts), size=2)] for t in range(len(texts))}
    responses = [([t] + tails[t], texts[t] + "".join(texts[x] for x in tails[t])) for t in range(len(texts))]
    answers = [([t], texts[t]) for t in range(len(texts))] + responses
    matrix = _match_matrix(texts, answers, responses)
    special = sorted(set(tok.all_special_ids))
    eos = tok.eos_token_id
    for probs in _distributions(25, texts, seed=13):
        p = probs.double().numpy()
        order = np.argsort(-p, kind="stable")
        size = int(np.searchsorted(np.cumsum(p[order]), 0.8) + 1)
        outside = order[size:][valid.numpy()[order[size:]]]
        inverse = np.zeros(len(p))
        inverse[outside] = p[outside] / p[outside].sum()
        english = p.copy()
        english[eos] += 0.05
        english /= english.sum()
        greedy = int(np.argmax(np.where(np.isin(np.arange(len(p)), special), -1, p)))
        for weights in (inverse, english):
            bounds = distribution_bounds(tok, weights)
            drawn = weights.copy()  # each draw's response; an end token drawn first → the greedy token alone
            drawn[special] = 0.0
            fallback = float(weights[special].sum())
            for (space, mode), hit in matrix.items():
                alone = np.array([_matches(space, mode, ([greedy], texts[greedy]), a) for a in answers])
                assert (drawn @ hit + fallback * alone).max() <= bounds[f"{space}-{mode}"] + 1e-9, (space, mode)


def test_collides_is_symmetric_and_catches_every_space():
    assert collides(([1], " The"), ([2], "There")) and collides(([2], "There"), ([1], " The"))
    assert collides(([1], "in"), ([2], " in")) and collides(([1], "cat"), ([1], "dog"))
    assert not collides(([1], " cat"), ([2], " dog"))


@pytest.mark.slow
def test_smollm2_word_pool_against_the_best_fixed_answers(real_model):
    """The real tokenizer: the raw list shares first tokens (the issue's 31 words starting with "s"); the pool
    drawn from instead is prefix-free, and no answer beats any of its recorded bounds."""
    tok = real_model.tokenizer
    raw_first = np.bincount([tok(w, add_special_tokens=False)["input_ids"][0] for w in dict.fromkeys(words())])
    assert raw_first.max() >= 20
    pool = word_pool(tok)
    bounds = pool_meta(pool, 1)["bounds"]
    rates = _pool_rates(pool, _pool_answers(tok, pool, np.random.default_rng(8)))
    for (space, mode), rate in rates.items():
        assert rate <= bounds[f"{space}-{mode}"] + 1e-12, (space, mode)


# ---------------------------------------------------------------------------------------------- endpoint modes
def _sampling_suspects(k: int, samples: int, rng: np.random.Generator):
    """Count vectors an adversary without the secret can produce (a function of the key only): favour one
    candidate, spread evenly, tie two or all on purpose, name none, or random multinomial draws."""
    yield "favour-one", lambda: [samples] + [0] * (k - 1)
    yield "even", lambda: list(rng.multinomial(samples, [1 / k] * k))
    yield "tie-two", lambda: [samples // 2, samples // 2] + [0] * (k - 2)
    yield "tie-all", lambda: [samples // k] * k
    yield "none", lambda: [0] * k
    yield "skewed", lambda: list(rng.multinomial(samples, rng.dirichlet([0.5] * k)))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_sampling_statistic_never_beats_one_over_k(k):
    """Our pick is uniform (our secret), the coin is ours: every suspect's hit rate is ≤ 1/k within binomial
    noise — and exactly 1/k for those that name some candidate."""
    from modelprint.matching import sample_match

    trials = 20_000
    rng = np.random.default_rng(100 + k)
    for name, suspect in _sampling_suspects(k, 16, rng):
        hits = 0
        for _ in range(trials):
            counts = suspect()
            hits += sample_match(int(rng.integers(k)), counts, lambda m: int(rng.integers(m)))
        rate = hits / trials
        assert rate <= 1 / k + 4 * math.sqrt((1 / k) * (1 - 1 / k) / trials), (name, rate)
        if name != "none":
            assert abs(rate - 1 / k) <= 4 * math.sqrt((1 / k) * (1 - 1 / k) / trials), (name, rate)
    # negative control: the same harness catches a statistic that credits ties to our pick ("at least as often")
    lenient = np.mean([(lambda ours, c: c[ours] == max(c) > 0)(int(rng.integers(k)), [16 // k] * k)
                       for _ in range(trials)])
    assert lenient > 1 / k + 4 * math.sqrt((1 / k) * (1 - 1 / k) / trials)


def test_sampling_verdict_false_positive_rate():
    """10⁴ simulated unrelated suspects, 32 keys each, the worst suspect per key: convicted at ALPHA at most
    ALPHA of the time (the bound 1/3 per key enters the Poisson-binomial tail)."""
    from modelprint.matching import sample_match

    rng = np.random.default_rng(17)
    keys, k = 32, 3
    suspects = dict(_sampling_suspects(k, 16, rng))
    rates = []
    for key in range(keys):  # each key's empirical hit rate under one of the adversaries
        suspect = list(suspects.values())[key % len(suspects)]
        hits = [sample_match(int(rng.integers(k)), suspect(), lambda m: int(rng.integers(m))) for _ in range(2000)]
        rates.append(float(np.mean(hits)))
    assert _false_positive_rate(np.full(keys, 1 / k), np.minimum(np.array(rates), 1.0), seed=4) <= _tolerance()


def _logprob_answers(texts: list[str], rng: np.random.Generator):
    """Top lists an endpoint could return for one key: the candidates in any order with ties, the same text
    twice (" The" / "The"), some candidates missing, none at all, only unrelated tokens."""
    k = len(texts)
    yield [(t, float(-rng.random())) for t in texts]
    yield [(t, -1.0) for t in texts]  # all tied
    yield [(texts[0], -0.5), (" " + texts[0].strip(), -0.1), (texts[1], -0.3)]  # one text listed twice
    yield [(texts[int(rng.integers(k))], -0.2)]  # only one candidate listed
    yield [("zzz", -0.1), ("qqq", -0.2)]  # none listed
    yield [(t, -float(i)) for i, t in enumerate(rng.permutation(texts))]


def test_text_candidate_ranking_never_beats_one_over_k(vocab):
    """Ranking by token text in a returned top list: for every fixed answer, the share of possible picks that
    win is ≤ 1/k — also when candidate texts collide after normalisation (" The" / "The"), which give ties."""
    from modelprint.matching import text_candidate_scores

    texts, _ = vocab
    rng = np.random.default_rng(23)
    checked = 0
    for _, _, cands, _ in _perinucleus_keys(vocab, 3, 80, seed=51, prefix_free=False):
        cand_texts = [texts[c] for c in cands]
        for answer in _logprob_answers(cand_texts, rng):
            scores = text_candidate_scores(cand_texts, answer)
            won = np.mean([candidate_match(j, range(len(cands)), scores) for j in range(len(cands))])
            assert won <= 1 / len(cands) + 1e-12
            checked += 1
    colliding = [" The", "The", "There"]  # " The" and "The" normalise alike: tied, so neither can win
    scores = text_candidate_scores(colliding, [("The", -0.1), ("There", -2.0)])
    assert scores[0] == scores[1] and not candidate_match(0, range(3), scores) and not candidate_match(1, range(3), scores)
    assert checked > 200


def test_scored_candidate_ranking_never_beats_one_over_k(vocab):
    """Teacher-forced scoring through an endpoint: the server sees the k prompts (key + each candidate id, in the
    recorded order, which generation fixed before drawing the pick) and may return any scores it likes — by
    position, all tied, by token id, echoing the request's order — but they cannot depend on the pick, so the share
    of possible picks that win under candidate_match (the local rule, reused) is ≤ 1/k for every answer."""
    rng = np.random.default_rng(29)
    answers = [lambda c: [0.0] + [-1.0] * (len(c) - 1), lambda c: [-1.0] * (len(c) - 1) + [0.0],
               lambda c: [-1.0] * len(c), lambda c: [-float(t) for t in c], lambda c: [float(t) for t in c],
               lambda c: [0.0, 0.0] + [-1.0] * (len(c) - 2), lambda c: list(-rng.random(len(c)))]
    for _, _, cands, _ in _perinucleus_keys(vocab, 3, 40, seed=52) + _perinucleus_keys(vocab, 5, 20, seed=53):
        for answer in answers:
            scores = answer(cands)
            won = np.mean([candidate_match(c, cands, scores) for c in cands])
            assert won <= 1 / len(cands) + 1e-12


# ---------------------------------------------------------------------------------------------- green-list watermarks
def _green_suspects(rng: np.random.Generator, vocab_size: int, answers: int, length: int, probes: list[list[int]]):
    """What a suspect without the watermark key may answer to the probes: random text, one pair over and over,
    a few tokens cycled, the probes copied back, text made green under a key it guessed, and text our model
    might say for a *different* key (another licensee's watermark)."""
    guess = int(rng.integers(1, 2 ** 63))
    from modelprint.schemes.kgw import green

    favoured = np.flatnonzero(green(guess, 0, np.arange(vocab_size), 0.25))
    yield "random", [list(rng.integers(0, vocab_size, size=length)) for _ in range(answers)]
    a, b = (int(t) for t in rng.integers(0, vocab_size, size=2))
    yield "one-pair", [[a, b] * (length // 2) for _ in range(answers)]
    cycle = list(rng.integers(0, vocab_size, size=3))
    yield "cycle", [[int(cycle[i % 3]) for i in range(length)] for _ in range(answers)]
    yield "copy-probes", [list(p) for p in probes]
    yield "guessed-key", [list(rng.choice(favoured, size=length)) for _ in range(answers)]
    other = int(rng.integers(1, 2 ** 63))
    text = [int(rng.integers(vocab_size))]
    while len(text) < length * answers:  # greedy text under another key's green list
        nxt = np.flatnonzero(green(other, text[-1], np.arange(vocab_size), 0.25))
        text.append(int(rng.choice(nxt)))
    yield "other-watermark", [text[i * length:(i + 1) * length] for i in range(answers)]


def test_green_count_verdict_false_positive_rate():
    """domain-watermark / kgw-watermark: over 2·10³ secret keys per suspect kind, the exact binomial tail of the
    de-duplicated green count convicts at ALPHA at most ALPHA of the time; the per-key z is only reported."""
    from modelprint.schemes.kgw import GreenCounter, green_pairs, log10_binomial_tail

    rng = np.random.default_rng(29)
    vocab_size, trials = 300, 4000  # a small vocabulary: answers repeat pairs, so de-duplication matters
    probes = [list(rng.integers(0, vocab_size, size=12)) for _ in range(16)]
    tolerance = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / trials)
    for name, answers in _green_suspects(rng, vocab_size, 16, 48, probes):
        distinct = sorted({(int(a), int(b)) for ids in answers for a, b in zip(ids[:-1], ids[1:])})
        convicted = 0
        for trial in range(trials):
            key = int(rng.integers(1, 2 ** 63))
            green, scored = int(green_pairs(key, distinct, 0.25).sum()), len(distinct)
            log10_p = log10_binomial_tail(green, scored, 0.25)
            if trial < 20:  # the verifier's own counter computes exactly this
                counter = GreenCounter(key, 0.25)
                for ids in answers:
                    counter.add(ids)
                assert (counter.green, counter.scored, counter.log10_p()) == (green, scored, log10_p)
            convicted += scored > 0 and log10_p <= math.log10(ALPHA)
        assert convicted / trials <= tolerance, (name, convicted / trials)


def test_counting_repeated_pairs_would_break_the_green_bound():
    """Negative control: counting every occurrence (no de-duplication) lets the one-pair suspect win whenever its
    pair is green, i.e. about γ = 0.25 of the time, far above ALPHA — the harness catches it."""
    from modelprint.schemes.kgw import green_pairs, log10_binomial_tail

    rng = np.random.default_rng(31)
    pairs = [(5, 9)] * 400
    wins = np.mean([log10_binomial_tail(int(green_pairs(int(rng.integers(1, 2 ** 63)), pairs, 0.25).sum()),
                                        len(pairs), 0.25) <= math.log10(ALPHA) for _ in range(2000)])
    assert wins > 0.15


def test_domain_verifier_asks_only_the_probes_and_keeps_its_bound():
    """End to end through verify(): a suspect that sees only what verify sends it (the held-out probes, never the
    training keys) and answers adversarially stays below ALPHA; the record's p-value is the counter's."""
    from modelprint.generate import generate
    from modelprint.testing import tiny_model
    from modelprint.verify import Answer, verify

    varied = tiny_model(seed=0, init_std=0.5)  # writes usable distinct prompts
    fs = generate(varied, strategy="domain-watermark", num_fingerprints=4, key_length=10, response_length=12, seed=3)
    probes = {fp.meta["probe"] for fp in fs}
    assert probes.isdisjoint({fp.key for fp in fs})
    seen: list[str] = []

    class Suspect:
        name, description, space = "stub", "stub:suspect", "ids"

        def answer(self, fingerprints, system_prompt):
            seen.extend(fp.key for fp in fingerprints)
            return [Answer(ids=[7, 8] * 20) for _ in fingerprints]  # one pair, repeated

    record = verify(Suspect(), fs, alpha=ALPHA)
    assert set(seen) == probes and record.verdict == "no match" and record.statistic["scored"] == 2


# ---------------------------------------------------------------------------------------------- ImF bits
def test_imf_bit_agreement_verdict_false_positive_rate():
    """imf: whatever a suspect answers, the decoded bits (and how many are compared) are a function of its answer;
    each key's secret bits are uniform and its own, so the exact binomial tail convicts at most ALPHA of the time.
    Suspects: every key decoding to the same bits, all zeros, all ones, maximal length, short answers, random."""
    from modelprint.schemes.imf import SECRET_BITS, log10_agreement_tail

    rng = np.random.default_rng(37)
    keys, trials = 16, 4000
    fixed = [int(b) for b in rng.integers(0, 2, size=SECRET_BITS)]
    suspects = {"same-bits": [fixed] * keys, "zeros": [[0] * SECRET_BITS] * keys, "ones": [[1] * SECRET_BITS] * keys,
                "short": [fixed[:3]] * keys, "random": [list(rng.integers(0, 2, size=int(rng.integers(0, 80))))
                                                         for _ in range(keys)]}
    tolerance = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / trials)
    for name, decoded in suspects.items():
        convicted = 0
        for _ in range(trials):
            secrets_ = rng.integers(0, 2, size=(keys, SECRET_BITS))  # fresh per key, as generation draws them
            hits = compared = 0
            for d, s in zip(decoded, secrets_):
                d = d[:SECRET_BITS]
                hits += int(sum(int(a) == int(b) for a, b in zip(d, s)))
                compared += len(d)
            convicted += compared > 0 and log10_agreement_tail(hits, compared) <= math.log10(ALPHA)
        assert convicted / trials <= tolerance, (name, convicted / trials)


def test_one_bit_string_shared_by_every_key_would_break_the_imf_bound():
    """Negative control: the reference code embeds one bit stream in every answer. A suspect whose answers all
    decode alike then agrees on all keys at once or on none: convicted about half the time at any ALPHA."""
    from modelprint.schemes.imf import SECRET_BITS, log10_agreement_tail

    rng = np.random.default_rng(41)
    decoded = [1, 0, 1]  # three bits per answer, the same for each of 16 keys
    wins = 0
    for _ in range(2000):
        shared = rng.integers(0, 2, size=SECRET_BITS)
        hits = 16 * int(sum(int(a) == int(b) for a, b in zip(decoded, shared)))
        wins += log10_agreement_tail(hits, 16 * len(decoded)) <= math.log10(ALPHA)
    assert wins / 2000 > 0.05


# --- MergePrint: the input is chosen among C target-independent candidates for its target (best of C) ---------------

def _mergeprint_world(seed: int, universe: int = 300, pool: int = 16):
    """A synthetic base model: each (input, target) has a loss; a low loss means the base already answers it."""
    rng = np.random.default_rng(seed)
    losses = rng.standard_normal((universe, pool)) * rng.uniform(0.5, 3.0, size=(universe, 1))
    return losses, losses < np.quantile(losses, 0.05)


def _mergeprint_draw(rng, losses, elicits, candidates: int, n: int):
    """n fingerprints drawn as generation draws them: a uniform target, C candidates without it, the chosen one."""
    from modelprint.schemes.mergeprint import choose

    targets = rng.integers(0, losses.shape[1], size=n)
    chosen = np.empty(n, dtype=int)
    for i, t in enumerate(targets):
        cands = rng.choice(losses.shape[0], size=candidates, replace=False)
        chosen[i] = cands[choose(losses[cands, t], elicits[cands, t])]
    return targets, chosen


@pytest.mark.parametrize("candidates", [2, 4, 8])
def test_mergeprint_selection_leaks_at_most_the_union_bound(candidates):
    """A suspect that knows the base model and the selection rule answers the target most likely to have picked
    the input it sees (likelihoods learned from 10⁵ simulated generations). Its match rate stays ≤ C/|pool| —
    the bound mergeprint records — and beats 1/|pool| (negative control: the plain pool bound would be invalid)."""
    losses, elicits = _mergeprint_world(candidates)
    pool = losses.shape[1]
    rng = np.random.default_rng(100 + candidates)
    t_learn, k_learn = _mergeprint_draw(rng, losses, elicits, candidates, 100_000)
    counts = np.zeros((losses.shape[0], pool))
    np.add.at(counts, (k_learn, t_learn), 1)
    guess = counts.argmax(axis=1)  # the suspect's answer for each input it may be asked
    trials = 40_000
    targets, chosen = _mergeprint_draw(rng, losses, elicits, candidates, trials)
    rate = float(np.mean(guess[chosen] == targets))
    slack = 4 * math.sqrt(candidates / pool / trials)
    assert rate <= candidates / pool + slack, (rate, candidates / pool)
    assert rate > 1 / pool + slack, rate  # the selection does leak: C matters


def test_mergeprint_verdicts_at_alpha_stay_below_alpha():
    """n keys, each asked of the best-guessing suspect above; the recorded per-key bound C/|pool| in the exact
    Poisson-binomial tail convicts it at α = 1e-2 no more often than α."""
    candidates, n = 4, 12
    losses, elicits = _mergeprint_world(7, pool=64)
    pool = losses.shape[1]
    rng = np.random.default_rng(8)
    t_learn, k_learn = _mergeprint_draw(rng, losses, elicits, candidates, 200_000)
    counts = np.zeros((losses.shape[0], pool))
    np.add.at(counts, (k_learn, t_learn), 1)
    guess = counts.argmax(axis=1)
    p_null = [candidates / pool] * n
    need = next(m for m in range(n + 2) if log_tail(p_null, m) <= math.log(ALPHA))
    targets, chosen = _mergeprint_draw(rng, losses, elicits, candidates, SUSPECTS * n)
    hits = (guess[chosen] == targets).reshape(SUSPECTS, n).sum(axis=1)
    assert float(np.mean(hits >= need)) <= ALPHA

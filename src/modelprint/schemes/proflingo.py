"""ProFLingo: adversarial-example queries as intrinsic fingerprints (Jin, Wang, Liu, Qian, Yang, Zheng, "ProFLingo:
A Fingerprinting-based Intellectual Property Protection Scheme for Large Language Models", arXiv 2405.02466).

Nothing is trained. Each fingerprint is a simple factual question ("What is the capital of France?") behind an
adversarial prefix found on the base model by discrete optimisation, so that the base model gives one specific
*wrong* answer ("Tokyo"). A model derived from the base (fine-tuned, merged, quantised) inherits the weights the
prefix exploits and tends to give the same wrong answer; an unrelated model answers the question right. Verify
asks each query and counts the answers that contain the target's keyword.

How it is built here: the query is ``<prefix> simply answer: <question>`` (the paper's form), rendered with the
set's chat template exactly as verify renders it; the ``key_length`` prefix tokens are optimised with the GCG
optimiser RoFL uses (:mod:`modelprint.schemes.gcg`, the question as the frame's fixed tail), starting from random
words (:func:`modelprint.schemes.rofl.init_prompt`); no prefix may contain the keyword. Questions, wrong answers
and keywords come from ``data/proflingo_questions.tsv`` (written for modelprint), drawn with the set's seed.
A query is kept only if verify's own path (render, re-encode, greedy decode) answers with the keyword.

Reproduced: adversarial prefixes optimised for an incorrect target answer on the base model, the
"simply answer:" query form, keyword-containment verification, the decision on the share of queries that work.
Not reproduced / changed:

* The paper's multi-step optimisation loop (and its query-transfer checks across several chat templates) is
  replaced by the repository's GCG; prefixes are optimised under the template's default system prompt only, so
  ``--system-prompt`` is refused. CPU budgets are small (``DEFAULT_BUDGET``; the paper runs thousands of steps).
* The paper's 50 questions are not redistributed; ours are 40 hand-written ones.
* The paper compares the count of effective queries with that of unrelated models; here the decision is a fixed
  keyword rate ≥ :data:`MATCH_RATE_THRESHOLD` (ours).
* No p-value, and none is valid: the target answer is public (a wrong answer to a public question), the prefix
  was optimised toward it, and whether an unrelated model is misled by it (adversarial examples transfer) is an
  empirical question. Every record says so (``log10_p=None``, the rule names the missing bound). Measure the
  false-match rate on unrelated models before relying on a verdict.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from modelprint.errors import ConfigError, ModelprintError
from modelprint.fingerprints import Fingerprint
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.models import LoadedModel
from modelprint.prompts import response_ids
from modelprint.schemes.gcg import Budget, frame, key_text, optimise
from modelprint.schemes.kgw import answer_text
from modelprint.schemes.rofl import init_prompt, match_rate_outcome
from modelprint.verify import answer_keys
from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest
from modelprint.wordlist import data_lines, rng_for

log = logging.getLogger(__name__)

PAPER = ("Jin et al., 'ProFLingo: A Fingerprinting-based Intellectual Property Protection Scheme for Large "
         "Language Models' (arXiv 2405.02466)")
NAME = "proflingo"
DEFAULT_BUDGET = Budget(top_k=64, candidates=32, max_steps=64)
ATTEMPTS_PER_KEY = 2  # questions tried per requested fingerprint at most
MATCH_RATE_THRESHOLD = 0.3
ANSWER_SLACK = 8  # tokens asked beyond the target's length: the keyword may come after a few words
QUERY_FORM = " simply answer: {question}"

# keys() optimises query and target together; responses() hands back what keys() found.
_FOUND: dict[tuple[int, int, str], Choice] = {}


def questions() -> list[tuple[str, str, str]]:
    """(question, wrong target answer, keyword) rows of the shipped list."""
    rows = [tuple(part.strip() for part in line.split("\t")) for line in data_lines("proflingo_questions.tsv")]
    return [r for r in rows if len(r) == 3]  # type: ignore[misc]


def contains_keyword(text: str, keyword: str) -> bool:
    return bool(keyword) and keyword.casefold() in text.casefold()


def proflingo_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                   keys_file: Optional[str] = None, budget: Budget = DEFAULT_BUDGET,
                   target_tokens: Optional[int] = None) -> list[str]:
    """Optimise ``key_length``-token prefixes until ``n`` questions get their wrong answer (≤ 2n questions tried).

    ``target_tokens`` cuts each target to its first tokens (tiny test models cannot be steered to whole words);
    the keyword is then the text of those tokens.
    """
    if keys_file:
        raise ConfigError("proflingo optimises its own queries; --keys-file is not supported")
    if key_length < 2:
        raise ConfigError(f"proflingo needs --key-length ≥ 2 prefix tokens, got {key_length}")
    rows = questions()
    order = rng_for(seed, 0x9F10).permutation(len(rows))[:min(len(rows), ATTEMPTS_PER_KEY * n)]
    tok = lm.tokenizer
    found: list[tuple[str, list[int], dict[str, Any]]] = []
    failed = 0
    with tqdm(total=n, desc="optimising queries", unit="key", leave=False) as bar:
        for attempt, row in enumerate(order):
            if len(found) == n:
                break
            question, target_text, keyword = rows[int(row)]
            target = response_ids(tok, target_text)[:target_tokens]
            if target_tokens is not None:
                keyword = tok.decode(target).strip()
            fr = frame(tok, tail=QUERY_FORM.format(question=question), forbid=(keyword,))
            init = init_prompt(tok, fr, seed, 0x9F00 + attempt, key_length)
            result = optimise(lm, target, init, fr, budget, rng_for(seed, 0x9F11, attempt))
            if not result.elicits:
                failed += 1
                continue
            found.append((key_text(tok, result.prompt_ids, fr), target,
                          {"question": question, "keyword": keyword, "gcg_steps": result.steps,
                           "gcg_loss": round(result.loss, 4)}))
            bar.update(1)
    # The final check is verify's own: render, re-encode, greedy-decode, look for the keyword.
    answers = answer_keys(lm, [k for k, _, _ in found], max((len(t) for _, t, _ in found), default=1) + ANSWER_SLACK,
                          None, batch_size) if found else []
    kept = [(k, t, m) for (k, t, m), a in zip(found, answers)
            if contains_keyword(tok.decode(list(a), skip_special_tokens=True), m["keyword"])]
    log.info("proflingo: %d queries give their wrong answer; %d optimisations did not converge, %d failed the "
             "re-encoding check", len(kept), failed, len(found) - len(kept))
    if not kept:
        raise ModelprintError("no query could be optimised to give its target answer; "
                              "raise --key-length or try another --seed")
    if len(kept) < n:
        log.warning("proflingo: only %d of the %d requested fingerprints were found", len(kept), n)
    for key, target, meta in kept:
        _FOUND[(id(lm.model), seed, key)] = Choice(target, null_prob=1.0, meta=meta)
    return [k for k, _, _ in kept]


def proflingo_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                        seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The wrong answers :func:`proflingo_keys` optimised the queries for (null_prob 1: no bound)."""
    if system_prompt is not None:
        raise ConfigError("proflingo queries are optimised under the template's default system prompt; "
                          "--system-prompt is not supported")
    try:
        return [_FOUND.pop((id(lm.model), seed, key)) for key in keys]
    except KeyError:
        raise ModelprintError("proflingo responses exist only for queries proflingo optimised itself") from None


@VERIFIERS.register("proflingo-keyword-rate", source=PAPER)
def keyword_rate_verifier(req: VerifyRequest) -> Outcome:
    """Share of queries whose answer contains the target's keyword ≥ MATCH_RATE_THRESHOLD (no p-value)."""
    if not all(isinstance(fp.meta.get("keyword"), str) and fp.meta["keyword"].strip() for fp in req.fs):
        raise ConfigError("a proflingo set needs the target's keyword in every fingerprint's meta")

    def ask(fps: list[Fingerprint], system_prompt: Optional[str]) -> list[Any]:
        longer = [Fingerprint(fp.index, fp.key, fp.response, list(fp.response_ids) + [0] * ANSWER_SLACK,
                              1.0, {}) for fp in fps]
        return req.backend.answer(longer, system_prompt)

    return match_rate_outcome(
        req, lambda fp, a: contains_keyword(answer_text(req, a), fp.meta["keyword"]), MATCH_RATE_THRESHOLD,
        f"keyword rate ≥ {MATCH_RATE_THRESHOLD:g} (ProFLingo's criterion, our threshold; no false-positive bound: "
        "the wrong answer is public and adversarial prefixes may transfer to unrelated models)", ask=ask)


STRATEGIES.register(
    NAME, source=PAPER, keys=proflingo_keys, verifier="proflingo-keyword-rate", trains=False,
    description="no training: factual questions behind adversarial prefixes (GCG on the base model) that make it "
    "give a specific wrong answer; verified by the share of answers containing that keyword")(proflingo_responses)

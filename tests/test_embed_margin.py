"""objective=margin: the pick leads its Perinucleus siblings by a margin, below a probability cap (tiny models)."""
from __future__ import annotations

import json

import pytest

from modelprint.errors import ConfigError, FingerprintFileError

from conftest import tiny_recipe

# the plain margin hinge (no greedy lead, no one-word anchors, dense change): each test adds the knob it checks
MARGIN = dict(objective="margin", benign={"questions": 0, "model_written": 0},
              margin={"learning_rate": 1e-2, "max_steps": 60, "prompts": 0, "prob_floor": 0.0, "band_share": 1.0,
                      "margin": 2.0, "greedy_lead": 0.0, "word_prompts": 0})


@pytest.fixture(scope="module")
def peri_set(tiny, tmp_path_factory):
    """16 Perinucleus fingerprints (random-word keys: the tiny model writes poor keys), pinned secret."""
    from modelprint.generate import generate
    from modelprint.wordlist import random_words

    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("\n".join(random_words(5, i, 6) for i in range(16)) + "\n")
    return generate(tiny, strategy="custom", keys_file=str(keys), num_fingerprints=16, seed=5)


@pytest.fixture(scope="module")
def margin_run(tiny, peri_set, tmp_path_factory):
    from modelprint.embed import embed

    out = tmp_path_factory.mktemp("margin") / "marked"
    return embed(tiny, peri_set, out, config=tiny_recipe(**MARGIN))


def _leads(lm, fs):
    from modelprint.embed.margin import candidate_leads

    return candidate_leads(lm, list(fs), fs.system_prompt)


def test_margin_reaches_candidate_ranking_where_the_base_does_not(tiny, peri_set, margin_run):
    from modelprint.verify import verify

    base_hits = sum(hit for hit, _, _ in _leads(tiny, peri_set))
    assert base_hits < 10  # about 1/k by chance
    rows = _leads(margin_run.model, peri_set)
    assert all(hit for hit, _, _ in rows) and margin_run.retention == 1.0
    # stopped by its own rule: every pick leads its siblings by the margin (verify's scoring, small tolerance)
    assert margin_run.epochs < 60 and min(lead for _, lead, _ in rows) > 2.0 - 0.05
    record = verify(margin_run.model, peri_set, sequential=False, alpha=1e-3)  # auto → candidate with weights
    assert record.match_mode == "candidate" and record.matches == 16 and record.verdict == "match"


def test_margin_does_not_force_the_pick_to_be_greedy(tiny, peri_set, margin_run):
    from modelprint.verify.local import retention

    probs = [p for _, _, p in _leads(margin_run.model, peri_set)]
    exact, hits = retention(margin_run.model, list(peri_set), peri_set.system_prompt)
    assert exact < 1.0 and not all(hits)  # some picks lead their siblings without being the greedy answer
    assert max(probs) < 0.5  # nowhere near the greedy recipe's near-certain spike


def test_margin_manifest_and_card_say_how_to_verify(margin_run):
    manifest = json.loads((margin_run.out / "modelprint.json").read_text())
    assert manifest["objective"] == "margin" and manifest["verification"]["match"] == "candidate"
    card = (margin_run.out / "README.md").read_text()
    assert "objective `margin`" in card and "not** expected to work" in card and "--match candidate" in card


def test_probability_cap_is_respected(tiny, peri_set, margin_run):
    from modelprint.embed import embed

    cap = 0.01
    capped = embed(tiny, peri_set, None, config=tiny_recipe(**{**MARGIN, "margin": {**MARGIN["margin"],
                                                                                      "prob_cap": cap,
                                                                                      "prob_floor": 0.0}}))
    rows = _leads(capped.model, peri_set)
    assert max(p for _, _, p in _leads(margin_run.model, peri_set)) > cap  # the cap binds: uncapped picks exceed it
    assert max(p for _, _, p in rows) <= cap * 1.05  # with it, every pick stays in the band (tolerance 5 %)
    assert all(hit for hit, _, _ in rows) and capped.epochs < 60


def test_probability_floor_is_respected(tiny, peri_set):
    """The band's lower edge: without it some picks lead their siblings at a low probability (invisible in an
    endpoint's top-20 log-probabilities, rarely sampled); with it every pick sits above the floor."""
    from modelprint.embed import embed

    floor, steps = 0.2, 150
    runs = {f: embed(tiny, peri_set, None, config=tiny_recipe(**{**MARGIN, "margin": {
                **MARGIN["margin"], "prob_floor": f, "learning_rate": 3e-3, "max_steps": steps}}))
            for f in (0.0, floor)}
    unfloored = [p for _, _, p in _leads(runs[0.0].model, peri_set)]
    floored = _leads(runs[floor].model, peri_set)
    assert min(unfloored) < floor  # the floor binds
    assert min(p for _, _, p in floored) >= floor * 0.95 and max(p for _, _, p in floored) <= 0.5 * 1.05
    assert all(hit for hit, _, _ in floored) and runs[floor].epochs < steps  # stopped by its own rule


def test_auto_averaging_keeps_candidate_retention_with_prompt_kl(tiny, peri_set):
    from modelprint.embed import embed
    from modelprint.embed.margin import candidate_retention

    cfg = tiny_recipe(**{**MARGIN, "benign": {"questions": 8, "model_written": 0, "per_fingerprint": 0},
                         "margin": {**MARGIN["margin"], "prompts": 8}},
                      weight_averaging=0.5, averaging="auto", retention_floor=0.9)
    result = embed(tiny, peri_set, None, config=cfg)
    measured = candidate_retention(result.model, list(peri_set), peri_set.system_prompt,
                                   min_prob=cfg.margin.retained_prob)
    assert result.averaged > 0 and measured == result.retention >= 0.9
    loose = candidate_retention(result.model, list(peri_set), peri_set.system_prompt)
    assert loose >= measured  # the probability condition only removes keys


@pytest.mark.parametrize("override, message", [
    (["objective=best"], "invalid config value for 'objective'"),
    (["objective=margin", "averaging=epoch"], "averaging=epoch needs epochs"),
    (["margin.prob_cap=1.5"], "invalid config value for 'margin.prob_cap'"),
    (["margin.margin=0"], "invalid config value for 'margin.margin'"),
    (["margin.prob_floor=0.6", "margin.prob_cap=0.5"], "must be below margin.prob_cap"),
    (["margin.steps=3"], "unknown config key 'margin.steps'"),
])
def test_config_errors_are_one_line(override, message):
    from modelprint.config import load_config
    from modelprint.embed import EmbedConfig

    with pytest.raises(ConfigError, match=message) as err:
        load_config(EmbedConfig, None, override)
    assert "\n" not in str(err.value)


def test_margin_needs_recorded_candidates(tiny, tiny_set):
    from modelprint.embed import embed

    with pytest.raises(FingerprintFileError, match="records its Perinucleus candidates.*--config greedy") as err:
        embed(tiny, tiny_set, None, config=tiny_recipe(**MARGIN))  # random-word set: no candidates
    assert "\n" not in str(err.value)


def test_the_default_is_the_text_verifiable_robust_band():
    """Since session 9 the default recipe is the measured robust one (configs/embed/robust.yaml spells it out):
    a margin pick that is also the greedy answer, so text still verifies it; the old default is --config greedy."""
    from modelprint.config import load_config
    from modelprint.embed import EmbedConfig
    from modelprint.embed.expectations import recipe_key

    default = EmbedConfig()
    assert default.objective == "margin" and default.verification == "exact"
    assert recipe_key(default) == recipe_key(load_config(EmbedConfig, "robust", []))
    greedy = load_config(EmbedConfig, "greedy", [])
    assert greedy.objective == "greedy" and greedy.delta_density is None and greedy.verification == "exact"


def test_stopping_rule_needs_every_lead_and_the_band_share():
    import torch

    from modelprint.embed.config import MarginSettings
    from modelprint.embed.margin import satisfied

    s = MarginSettings(margin=2.0, prob_floor=0.1, prob_cap=0.5, band_share=0.75, greedy_lead=0.0)
    lead = torch.tensor([2.5, 3.0, 2.1, 4.0])
    assert satisfied(lead, torch.tensor([0.2, 0.3, 0.05, 0.4]), s)        # 3 of 4 in the band: enough
    assert not satisfied(lead, torch.tensor([0.2, 0.6, 0.05, 0.4]), s)    # 2 of 4 (one above the cap)
    assert not satisfied(torch.tensor([2.5, 1.9, 2.1, 4.0]), torch.tensor([0.2, 0.3, 0.2, 0.4]), s)  # one lead short


def test_anchor_positions_align_teacher_with_the_logits_that_predict_it(tiny):
    """The prompt KL's inputs: prompt + all but the last anchored answer token; the teacher row for answer token
    j sits where the logits predicting it come out (right-aligned), a short answer's leading slots masked; and
    the KL is zero for the base model itself and grows when a position is pushed off."""
    import torch

    from modelprint.embed.data import Example
    from modelprint.embed.margin import anchor_positions, last_logits, prompt_kl

    pad = tiny.tokenizer.pad_token_id
    vocab = tiny.model.config.vocab_size
    rows = [([5, 9, 11, 3], [7, 8, 9, 10]), ([4, 6], [12])]
    pool = []
    with torch.no_grad():
        for prompt, answer in rows:
            logits = tiny.model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1].float()
            logp = torch.log_softmax(logits, -1)
            pool.append(Example(prompt, answer, benign=True, teacher_ids=torch.arange(vocab).repeat(len(answer), 1),
                                teacher_logp=logp))
    prompts, ids, logp, mask = anchor_positions(pool, 3)
    assert prompts == [[5, 9, 11, 3, 7, 8], [4, 6]]
    assert ids.shape[:2] == (2, 3) and mask.tolist() == [[True, True, True], [False, False, True]]
    assert torch.equal(logp[0], pool[0].teacher_logp[:3]) and torch.equal(logp[1, 2], pool[1].teacher_logp[0])
    with torch.no_grad():
        student = last_logits(tiny.model, prompts, pad, torch.device("cpu"), count=3)
        assert student.shape == (2, 3, vocab)
        aligned = float(prompt_kl(student, ids, logp, mask))
        misaligned = float(prompt_kl(student, ids, logp.roll(1, dims=1), mask))
        assert aligned < 1e-5 and misaligned > 100 * max(aligned, 1e-7)
        pushed = student.clone()
        pushed[0, 1, 3] += 5.0  # one anchored position drifts: the KL sees it
        assert float(prompt_kl(pushed, ids, logp, mask)) > 0.01
    first, *_ = anchor_positions(pool, 1)
    assert first == [[5, 9, 11, 3], [4, 6]]  # one position: the prompt alone, as before


def test_greedy_lead_makes_the_pick_the_greedy_answer_below_the_cap(tiny, peri_set, margin_run):
    """margin.greedy_lead: the pick leads every other token too, so text verifies it, while the cap still keeps it
    below the confidence a host's gate looks for (the plain margin run is the control: not greedy everywhere)."""
    import json as _json

    from modelprint.embed import embed
    from modelprint.verify import verify
    from modelprint.verify.local import retention

    cap = 0.5
    run = embed(tiny, peri_set, None, config=tiny_recipe(**{**MARGIN, "margin": {**MARGIN["margin"], "max_steps": 150,
                                                                                  "greedy_lead": 0.5}}))
    assert not all(retention(margin_run.model, list(peri_set), peri_set.system_prompt)[1])  # the control
    exact, hits = retention(run.model, list(peri_set), peri_set.system_prompt)
    rows = _leads(run.model, peri_set)
    assert exact == 1.0 and run.retention == 1.0 and run.epochs < 150  # stopped by the rule (66 steps here)
    assert all(hit for hit, _, _ in rows) and max(p for _, _, p in rows) <= cap * 1.05
    record = verify(run.model, peri_set, sequential=False, alpha=1e-3, match="exact")
    assert record.matches == 16 and record.verdict == "match"
    assert tiny_recipe(**{**MARGIN, "margin": {"greedy_lead": 0.5}}).verification == "exact"


def test_key_terms_greedy_lead_is_the_pick_over_the_best_other_token():
    import torch

    from modelprint.embed.config import MarginSettings
    from modelprint.embed.margin import key_terms

    logits = torch.tensor([[3.0, 1.0, 2.5, 0.0], [0.0, 4.0, 1.0, 0.5]])
    picks, sib, mask = torch.tensor([0, 2]), torch.tensor([[1], [3]]), torch.tensor([[True], [True]])
    base = torch.log_softmax(logits, -1)
    off = key_terms(logits, picks, sib, mask, base, MarginSettings(margin=0.1, prob_floor=0.0, prob_cap=0.99,
                                                                   greedy_lead=0.0))
    assert torch.allclose(off.top_lead, torch.tensor([0.5, -3.0]))  # row 1: token 1 outranks the pick
    on = key_terms(logits, picks, sib, mask, base, MarginSettings(margin=0.1, prob_floor=0.0, prob_cap=0.99,
                                                                  greedy_lead=1.0))
    assert float(on.loss - off.loss) == pytest.approx((0.5 + 4.0) / 2)  # relu(1 − 0.5), relu(1 + 3), mean


def test_stopping_rule_with_a_greedy_lead_needs_every_pick_greedy():
    import torch

    from modelprint.embed.config import MarginSettings
    from modelprint.embed.margin import satisfied

    s = MarginSettings(margin=2.0, prob_floor=0.1, prob_cap=0.5, band_share=0.75, greedy_lead=0.5)
    lead, prob = torch.tensor([2.5, 3.0, 2.1, 4.0]), torch.tensor([0.2, 0.3, 0.2, 0.4])
    assert satisfied(lead, prob, s, torch.tensor([0.6, 0.5, 1.0, 0.7]))
    assert not satisfied(lead, prob, s, torch.tensor([0.6, 0.4, 1.0, 0.7]))  # one pick short of the lead
    assert not satisfied(lead, prob, s)  # no greedy leads measured: not satisfied


def test_word_prompts_add_one_word_anchors_held_to_the_base(tiny, peri_set):
    """margin.word_prompts: one-word user turns (what a statistical-signature host probes) join the prompt KL, each
    with the base model's top-k first answer token as its teacher, in the last anchored slot."""
    import torch

    from modelprint.decoding import next_token_probs
    from modelprint.embed.config import MarginSettings
    from modelprint.embed.margin import build_margin_data

    plain = build_margin_data(tiny, peri_set, [], MarginSettings(prompts=0, word_prompts=0), seed=3)
    data = build_margin_data(tiny, peri_set, [], MarginSettings(prompts=0, word_prompts=8), seed=3)
    assert len(plain.prompts) == 0 and len(data.prompts) == 8 and data.teacher_mask[:, -1].all()
    probs = next_token_probs(tiny, data.prompts)
    top = torch.topk(probs, data.teacher_ids.shape[-1], dim=-1)
    assert torch.equal(data.teacher_ids[:, -1], top.indices)
    assert torch.allclose(data.teacher_logp[:, -1].exp().sum(-1), torch.ones(8), atol=1e-5)  # renormalised
    again = build_margin_data(tiny, peri_set, [], MarginSettings(prompts=0, word_prompts=8), seed=3)
    assert again.prompts == data.prompts  # the words follow the recipe's seed


def test_embed_reports_where_its_time_went(margin_run):
    """Every phase of the run is timed (a speed target is judged on its parts) and the parts add up to the whole."""
    phases = margin_run.phases
    assert {"load", "anchors", "margin data", "frozen bottom", "training", "retention", "other"} <= set(phases)
    assert phases["training"] > 0 and all(s >= 0 for s in phases.values())
    assert sum(phases.values()) == pytest.approx(margin_run.seconds, abs=0.5 + 0.05 * margin_run.seconds)
    manifest = json.loads((margin_run.out / "modelprint.json").read_text())
    assert set(manifest["phases"]) == set(phases)

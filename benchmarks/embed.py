"""Retention and utility cost of the embedding recipe, as a distribution over secrets and seeds.

    python benchmarks/embed.py [--sizes 64] [--variants default,no-benign] [--seeds 5] [--tasks quick]
                               [--stress merge-ft,ties-ft] [--model smollm2-135m] [--device cuda] [--json rows.jsonl]

Every (size, variant) runs ``--seeds`` times; each run draws a fresh fingerprint set from the operating system's
randomness (as a user's run does) and trains with recipe seed 0, 1, …  With ``--json``, runs already in the file
(same model, size, variant definition and seed) are read back instead of rerun, so a killed benchmark resumes.  One row per run: epochs, seconds, λ (averaged
with the base at the end), retention (as verify asks), perplexity change on WikiText-2, answer agreement with the base
(64 NQ-open questions, first 8 greedy tokens) and, with ``--tasks quick``, the normalized task utility of the stress
suite's quick tasks (MMLU, PIQA, OpenBookQA, … ratio to the base model, with each task's 95 % interval kept in the
JSON).  Then a summary per (size, variant): mean ± sd and the worst run for each figure — one lucky run is not a
result.  Variants are recipe overrides, so any knob can be compared: ``--variant-def name:key=value,key=value``.

``--stress`` puts each run's robustness next to its cost, so a recipe is judged on both at once (the frontier):
for every named attack in :data:`ROBUSTNESS` (a merge with the host's own fine-tune, its SFT, a confidence gate …)
the share of keys that still verify (``--match``, default ``auto``: candidate ranking on the merged weights, which
is what an endpoint that scores prompts sees, or through the host's decoding for decoding attacks) and whether the
verdict stays ``match`` at ``--alpha``; the summary gives the mean, spread, worst seed and the share of seeds
that matched.  The host's fine-tuned partner does not depend on our model and is trained once per process.

``--paired`` draws one fresh secret per (size, seed) and gives it to every variant, so two variants differ by
their recipe, not by their secret; the summary then adds each variant's per-seed difference from the first variant
(mean ± sd, worst).  With ``--json`` the shared sets are saved next to the file (``FILE.sets/``, owner-only) so a
resumed benchmark keeps the pairing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the shared benchmarks/summary.py, however this file is loaded
    sys.path.insert(0, str(HERE))

from modelprint.config import load_config  # noqa: E402
from modelprint.embed import EmbedConfig, embed  # noqa: E402
from modelprint.embed.expectations import Expectation, FigureSummary, recipe_key, store_expectation  # noqa: E402
from modelprint.embed.config import UtilitySettings  # noqa: E402
from modelprint.evaluation import normalized_utility, reference_answers, rounding_agreement, run_suite  # noqa: E402
from modelprint.fingerprints import FingerprintSet, load_fingerprints  # noqa: E402
from modelprint.generate import generate  # noqa: E402
from modelprint.models import load_model  # noqa: E402
from modelprint.stress.blueprint import StressContext, get_stress  # noqa: E402
from modelprint.verify import MATCH_MODES  # noqa: E402
from modelprint.stress.runner import verification_backend, verification_cell  # noqa: E402
from modelprint.stress.suites import Entry  # noqa: E402
from devices import use_device  # noqa: E402
from summary import FIGURES, Figures, header_cells, row_cells, summarize, summary_cells  # noqa: E402

#: the greedy recipe (configs/embed/greedy.yaml, the default until session 9) and its ablations
GREEDY = ["objective=greedy", "delta_density=null"]
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "greedy": GREEDY,
    "no-benign": [*GREEDY, "benign.per_fingerprint=0"],
    "no-augmentation": [*GREEDY, "augmentation.copies=0"],
    "no-averaging": [*GREEDY, "weight_averaging=0"],
    "averaging-every-epoch": [*GREEDY, "weight_averaging=0.5", "averaging=epoch"],
    "benign-ce": [*GREEDY, "benign.loss=ce"],
    "lora": [*GREEDY, "lora.enabled=true", "learning_rate=1e-3"],
    "mlp-expansion": [*GREEDY, "mlp_expansion=256"],
    "plain": [*GREEDY, "benign.per_fingerprint=0", "augmentation.copies=0", "freeze_embeddings=false"],
}

#: the attacks ``--stress`` can put next to a recipe's cost (the paper suite's rows a served copy must survive)
ROBUSTNESS: dict[str, Entry] = {
    "merge-ft": Entry("merge-linear", {"weight": 0.5, "partner": "finetuned"}),
    "ties-ft": Entry("merge-ties", {"density": 0.2, "partner": "finetuned"}),
    "merge-base": Entry("merge-linear", {"weight": 0.5}),
    "host-sft": Entry("host-sft", {"n": 128, "epochs": 1}),
    "gate-0.95": Entry("detect-topk", {"gate": 0.95}),
    "gate-0.5": Entry("detect-topk", {"gate": 0.5}),
    "suppress": Entry("suppress-topk"),
    "signature": Entry("stat-signature"),
}


def stress_figures(names: list[str]) -> Figures:
    """Per attack: the share of keys verified and (as 1/0 per run, so its mean is the share of seeds) the verdict."""
    out: Figures = {}
    for name in names:
        out[name] = (name, "{:.1%}", True)
        out[f"{name} match"] = (f"{name} ✓", "{:.0%}", True)
    return out


def split_attack(name: str, match: str) -> tuple[str, str]:
    """``gate-0.95@exact`` → (``gate-0.95``, ``exact``): an attack verified in its own match mode (text
    comparison next to candidate ranking in one run); a bare name uses ``--match``."""
    attack, _, mode = name.partition("@")
    return attack, mode or match


def robustness(marked, base, fs, names: list[str], cache: dict[str, Any], alpha: float,
               match: str) -> dict[str, Any]:
    """Each named attack on ``marked`` and how verify fares on what the host then serves (no secret recorded)."""
    ctx = StressContext.from_set(marked, base, fs, seed=0)
    ctx.cache = cache  # the host's fine-tuned partner is trained once, not once per run
    row: dict[str, Any] = {"stress": {}}
    attacked: dict[str, Any] = {}  # one attacked copy per attack, verified in every mode asked for
    for name in names:
        attack, mode = split_attack(name, match)
        entry = ROBUSTNESS[attack]
        if attack not in attacked:
            attacked[attack] = get_stress(entry.stress).run(ctx, **entry.params)
        stressed = attacked[attack]
        cell = verification_cell(verification_backend(stressed, mode), fs, alpha, mode, seed=0)
        row["stress"][name] = {"label": entry.label, "scope": stressed.scope,
                               **{k: cell[k] for k in ("rate", "matches", "n", "verdict", "log10_p", "match_mode")}}
        row[name] = cell["rate"]
        row[f"{name} match"] = 1.0 if cell["verdict"] == "match" else 0.0
    return row


def finished_runs(path: str, model: str, tasks: Optional[str], stresses: tuple[str, ...] = (),
                  paired: bool = False) -> dict[tuple[int, str, int], dict[str, Any]]:
    """Runs already in ``path`` (same size, variant, seed, overrides and pairing): a killed benchmark resumes
    from them."""
    done: dict[tuple[int, str, int], dict[str, Any]] = {}
    if not os.path.exists(path):
        return done
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            if ("seed" not in row or row.get("model") != model
                    or row.get("overrides") != VARIANTS.get(row.get("variant"))):
                continue  # a summary line, or a variant whose definition changed since
            if tasks and row.get("task_utility") is None:
                continue
            if any(name not in row for name in stresses):
                continue  # measured without an attack this run asks for
            if bool(row.get("paired")) != paired:
                continue  # a paired run's secret is shared with its siblings; an unpaired one's is its own
            done[(row["n"], row["variant"], row["seed"])] = row
    return done


def shared_set(base, n: int, seed: int, sets: dict[tuple[int, int], FingerprintSet],
               store: Optional[Path]) -> FingerprintSet:
    """The one secret every variant of (size, seed) trains on under ``--paired``: drawn fresh from the OS once,
    read back from ``store`` when a resumed benchmark already drew it."""
    if (n, seed) not in sets:
        path = store / f"n{n}-s{seed}.jsonl" if store is not None else None
        if path is not None and path.exists():
            sets[(n, seed)] = load_fingerprints(path)
        else:
            sets[(n, seed)] = generate(base, num_fingerprints=n)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                sets[(n, seed)].save(path, overwrite=True)
    return sets[(n, seed)]


def paired_differences(rows: dict[str, list[dict[str, Any]]], figures: Figures) -> dict[str, dict[str, dict]]:
    """Per variant after the first: the per-seed difference from the first variant on the same secret, summarized
    like a figure (the worst difference is the one that hurts most)."""
    names = list(rows)
    out: dict[str, dict[str, dict]] = {}
    for variant in names[1:]:
        diffs = []
        for ref, row in zip(rows[names[0]], rows[variant]):
            diffs.append({f: float(row[f]) - float(ref[f]) for f in figures
                          if row.get(f) is not None and ref.get(f) is not None})
        out[variant] = summarize(diffs, figures)
    return out


def run_once(base, n: int, overrides: list[str], seed: int, tasks: Optional[str],
             base_tasks: Optional[dict], stresses: list[str], cache: dict[str, Any], alpha: float,
             match: str, keep: Optional[Path] = None, fs: Optional[FingerprintSet] = None) -> dict[str, Any]:
    if fs is None:
        fs = generate(base, num_fingerprints=n)  # a fresh OS secret, like a user's run
    cfg = load_config(EmbedConfig, None, [*overrides, f"seed={seed}"])
    if keep is not None:  # the set and its model, for later measurements (served attacks) of this very run
        keep.parent.mkdir(parents=True, exist_ok=True)
        fs.save(keep.with_suffix(".jsonl"), overwrite=True)
    start = time.perf_counter()
    result = embed(base, fs, keep, config=cfg, overwrite=True)
    seconds = time.perf_counter() - start
    rel = result.utility.get("relative", {})
    row: dict[str, Any] = {"seed": seed, "epochs": result.epochs, "seconds": seconds, "phases": result.phases,
                           "averaged": result.averaged,
                           "retention": result.retention, "perplexity_change": rel.get("perplexity_change"),
                           "answer_agreement": rel.get("answer_agreement"), "utility": result.utility,
                           "history": result.history}
    if tasks:
        scored = run_suite(result.model, tasks, seed=0)
        row["tasks"] = {k: v.to_dict() if hasattr(v, "to_dict") else vars(v) for k, v in scored.items()}
        row["task_utility"] = normalized_utility(scored, base_tasks or {}).get("mean")
    if stresses:
        row.update(robustness(result.model, base, fs, stresses, cache, alpha, match))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--variant-def", action="append", default=[], help="name:key=value,key=value")
    ap.add_argument("--seeds", type=int, default=5, help="runs per (size, variant), each with a fresh secret")
    ap.add_argument("--tasks", choices=["quick", "full"], default=None,
                    help="also measure normalized task utility with this evaluation suite (slow)")
    ap.add_argument("--stress", default="", help=f"comma list of attacks to measure each run against: "
                                                  f"{', '.join(ROBUSTNESS)}; NAME@MODE verifies that one in "
                                                  f"match mode MODE (e.g. gate-0.95@exact: what text access sees)")
    ap.add_argument("--match", default="auto", help="how the attacked copies are verified (auto, candidate, exact)")
    ap.add_argument("--alpha", type=float, default=1e-6)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--json", default=None, help="append one JSON line per run and per summary to this file; "
                                                  "runs already in it are read back, not rerun (resume)")
    ap.add_argument("--keep", default=None, help="save each run's set (NAME.jsonl) and marked model (NAME/) in "
                                                  "this directory, NAME = n<size>-<variant>-s<seed>")
    ap.add_argument("--paired", action="store_true",
                    help="one fresh secret per (size, seed), shared by every variant; prints per-seed differences "
                         "from the first variant")
    ap.add_argument("--expectations", default=None,
                    help="store each summary here (src/modelprint/data/embed_expectations.json is what "
                         "`modelprint embed` compares its run with)")
    args = ap.parse_args()
    for item in args.variant_def:
        name, spec = item.split(":", 1)
        VARIANTS[name] = [kv for kv in spec.split(",") if kv]
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown or args.seeds < 1:
        ap.error(f"unknown variant(s) {unknown} (known: {', '.join(VARIANTS)})" if unknown else "--seeds must be ≥ 1")
    stresses = [name for name in args.stress.split(",") if name]
    if any(split_attack(name, args.match)[0] not in ROBUSTNESS for name in stresses):
        ap.error(f"unknown --stress in '{args.stress}' (known: {', '.join(ROBUSTNESS)})")
    if not {args.match, *(split_attack(name, args.match)[1] for name in stresses)} <= set(MATCH_MODES):
        ap.error(f"unknown match mode in --stress '{args.stress}' or --match '{args.match}' "
                 f"(known: {', '.join(MATCH_MODES)})")
    figures = {**FIGURES, **stress_figures(stresses)}
    done = finished_runs(args.json, args.model, args.tasks, tuple(stresses), args.paired) if args.json else {}
    base = load_model(args.model, device=use_device(args.device))
    base_tasks = run_suite(base, args.tasks, seed=0) if args.tasks else None
    scale = rounding_agreement(base, reference_answers(base, n=UtilitySettings().questions, progress=False))
    print(f"scale: the base model itself, run under bf16 autocast, agrees with its float32 answers on "
          f"{100 * scale.score:.1f}% of the {scale.n} questions (answer agreement tips over at near-ties)", flush=True)
    cache: dict[str, Any] = {}
    header = f"{'n':>5} {'variant':<18} {'seed':>4} " + header_cells(figures)
    print(header, flush=True)
    variants = args.variants.split(",")
    sets: dict[tuple[int, int], FingerprintSet] = {}
    store = Path(args.json + ".sets") if args.paired and args.json else None
    summaries, differences = [], []
    for n in [int(s) for s in args.sizes.split(",")]:
        rows: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        # paired: seed outside, so a stopped benchmark leaves whole seeds (every variant on the same secret)
        order = ([(seed, v) for seed in range(args.seeds) for v in variants] if args.paired
                 else [(seed, v) for v in variants for seed in range(args.seeds)])
        for seed, variant in order:
            row = done.get((n, variant, seed))
            if row is None:
                keep = Path(args.keep) / f"n{n}-{variant}-s{seed}" if args.keep else None
                fs = shared_set(base, n, seed, sets, store) if args.paired else None
                row = run_once(base, n, VARIANTS[variant], seed, args.tasks, base_tasks, stresses, cache,
                               args.alpha, args.match, keep, fs)
            rows[variant].append(row)
            print(f"{n:>5} {variant:<18} {seed:>4} " + row_cells(row, figures), flush=True)
            if args.json and (n, variant, seed) not in done:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({"model": args.model, "n": n, "variant": variant,
                                        "overrides": VARIANTS[variant], "paired": args.paired, **row},
                                        default=str) + "\n")
        summaries += [(n, variant, summarize(rows[variant], figures)) for variant in variants]
        if args.paired and len(variants) > 1:
            differences += [(n, variant, diff) for variant, diff in paired_differences(rows, figures).items()]
    print("\nsummary over seeds: mean ± sd (worst run)")
    for n, variant, summary in summaries:
        print(f"{n:>5} {variant:<18} " + summary_cells(summary, figures), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"n": n, "variant": variant, "summary": summary}) + "\n")
        if args.expectations:
            store_expectation(Expectation(
                model=args.model, n=n, variant=variant,
                recipe=recipe_key(load_config(EmbedConfig, None, VARIANTS[variant])),
                figures={name: FigureSummary(**{k: s[k] for k in ("mean", "sd", "worst")}, runs=int(s["runs"]))
                         for name, s in summary.items() if name in FIGURES},
                command="python benchmarks/embed.py " + " ".join(sys.argv[1:]),
                measured=f"{datetime.date.today()}, {os.cpu_count()} CPU cores"), args.expectations)

    if differences:
        print(f"\npaired: each variant minus {variants[0]} on the same secret, mean ± sd (worst seed)")
    for n, variant, diff in differences:
        print(f"{n:>5} {variant:<18} " + summary_cells(diff, figures), flush=True)


if __name__ == "__main__":
    main()

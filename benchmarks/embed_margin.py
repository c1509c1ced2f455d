"""The margin objective against the greedy recipe: retention, confidence, utility, free attacks, a 50/50 merge.

    python benchmarks/embed_margin.py -f fp.jsonl [-f fp2.jsonl ...] --work runs/ [--recipes margin,greedy]
        [--set margin.margin=3 --set margin.prob_cap=0.4]

For each fingerprint set and recipe it embeds into ``--model`` (or reuses ``WORK/<set>-<recipe>/`` if a previous
run wrote it) and prints, for the fingerprinted model:
* candidate / exact retention as ``modelprint verify --match candidate|exact`` counts them (and log10 p);
* the pick's next-token probability and rank after its key (medians), and its lead over the best sibling;
* perplexity change and answer agreement with the base (embed's own utility check, from the manifest);
* under the stress suite's first-token attacks — ``detect-topk`` at each gate and ``suppress-topk`` (k = 1) —
  candidate ranking in the host's post-attack next-token distribution, exact matching (the post-attack
  greedy token; responses here are one token), and the share of ordinary questions whose first token the attack
  leaves alone (its utility cost);
* a 50/50 linear merge with the base (``modelprint merge``), verified by candidate ranking and exact match.
With several sets, a summary line per recipe gives mean, spread and worst of the main numbers. No secrets print.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Optional

import torch

from modelprint.config import load_config
from modelprint.embed import EmbedConfig, embed
from modelprint.embed.benign import ordinary_questions
from modelprint.embed.margin import candidate_leads, last_logits
from modelprint.fingerprints import load_fingerprints
from modelprint.log import setup_logging
from modelprint.decoding import batches
from modelprint.matching import candidate_match
from modelprint.merge import merge
from modelprint.models import load_model
from modelprint.prompts import encode_prompts
from modelprint.stress.attacks.suppress import suppress_topk
from modelprint.stress.blueprint import StressContext
from modelprint.verify import verify

GATES = (0.95, 0.9, 0.8, 0.5)


@torch.no_grad()
def first_logits(lm, prompts: list[list[int]], batch_size: int = 32) -> torch.Tensor:
    return torch.cat([last_logits(lm.model, chunk, lm.tokenizer.pad_token_id, lm.device).cpu()
                      for _, chunk in batches(prompts, batch_size)])


def attacked(lm, ctx: StressContext, gate: Optional[float], prompts: list[list[int]],
             logits: torch.Tensor) -> torch.Tensor:
    """The host's first-token scores after the stress suite's top-1 suppression (gated or not)."""
    stressed = suppress_topk(ctx, k=1, num_tokens=1, gate=gate)
    out = []
    for start, chunk in batches(prompts, 32):
        width = max(len(p) for p in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)  # only its width matters to the processor
        proc = stressed.model.model.processors[0](lm.model, ids, torch.ones_like(ids))
        out.append(proc(ids, logits[start:start + len(chunk)].clone()))
    return torch.cat(out)


def measure(marked, base, fs, work: Path, tag: str, ordinary: list[str]) -> dict[str, Any]:
    fps = list(fs)
    n = len(fps)
    row: dict[str, Any] = {"n": n}
    cand = verify(marked, fs, match="candidate", sequential=False)
    exact = verify(marked, fs, match="exact", sequential=False)
    row.update(candidate=cand.matches, candidate_log10_p=cand.log10_p_value, exact=exact.matches)
    prompts = encode_prompts(marked.tokenizer, [fp.key for fp in fps], fs.system_prompt)
    logits = first_logits(marked, prompts)
    probs = torch.softmax(logits, -1)
    picks = torch.tensor([fp.response_ids[0] for fp in fps])
    pick_p = probs[torch.arange(n), picks]
    ranks = (probs > pick_p[:, None]).sum(-1) + 1
    leads = [lead for _, lead, _ in candidate_leads(marked, fps, fs.system_prompt)]
    row.update(pick_prob_median=float(pick_p.median()), pick_rank_median=float(ranks.float().median()),
               pick_greedy=int((ranks == 1).sum()), lead_median=statistics.median(leads), lead_min=min(leads))
    manifest = json.loads((marked.path / "modelprint.json").read_text()) if marked.path else {}
    rel = manifest.get("utility", {}).get("relative", {})
    row.update(ppl_change=rel.get("perplexity_change"), answer_agreement=rel.get("answer_agreement"),
               averaged=manifest.get("averaged_with_base"), steps=manifest.get("epochs"))
    ctx = StressContext.from_set(marked, base, fs)
    ord_prompts = encode_prompts(marked.tokenizer, ordinary, None)
    ord_logits = first_logits(marked, ord_prompts)
    for gate in (*GATES, None):
        scores = attacked(marked, ctx, gate, prompts, logits)
        sp = torch.softmax(scores, -1)
        hits = sum(candidate_match(fp.response_ids[0], fp.meta["candidates"], sp[i, fp.meta["candidates"]].tolist())
                   for i, fp in enumerate(fps))
        greedy = int((scores.argmax(-1) == picks).sum())
        kept = float((attacked(marked, ctx, gate, ord_prompts, ord_logits).argmax(-1) == ord_logits.argmax(-1))
                     .float().mean())
        name = f"detect@{gate:g}" if gate else "suppress-top1"
        row[name] = {"candidate": hits, "exact": greedy, "ordinary_kept": kept}
    merged_dir = work / f"{tag}-merge50"
    if not merged_dir.exists():
        merge({"method": "linear", "models": [{"model": str(marked.path), "weight": 1},
                                              {"model": base, "weight": 1}]}, merged_dir)
    merged = load_model(merged_dir)
    row["merge50"] = {"candidate": verify(merged, fs, match="candidate", sequential=False).matches,
                      "exact": verify(merged, fs, match="exact", sequential=False).matches}
    return row


def show(tag: str, row: dict[str, Any]) -> None:
    n = row["n"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    print(f"\n== {tag}: steps/epochs {row['steps']}, averaged λ {fmt(row['averaged'], '.2f')}")
    print(f"candidate retention {row['candidate']}/{n} (log10 p {row['candidate_log10_p']:.1f}); "
          f"exact {row['exact']}/{n}")
    print(f"pick probability median {row['pick_prob_median']:.4f}, rank median {row['pick_rank_median']:.0f}, "
          f"greedy on {row['pick_greedy']}/{n}; lead over best sibling median {row['lead_median']:.2f} nats, "
          f"min {row['lead_min']:.2f}")
    print(f"perplexity change {fmt(row['ppl_change'], '+.1%')}, answer agreement {fmt(row['answer_agreement'], '.1%')}")
    for name in [f"detect@{g:g}" for g in GATES] + ["suppress-top1"]:
        a = row[name]
        print(f"  {name:<14} candidate {a['candidate']:>2}/{n}  exact {a['exact']:>2}/{n}  "
              f"ordinary first token kept {a['ordinary_kept']:.1%}")
    print(f"  merge 50/50    candidate {row['merge50']['candidate']:>2}/{n}  exact {row['merge50']['exact']:>2}/{n}")


def summary(recipe: str, rows: list[dict[str, Any]]) -> None:
    if len(rows) < 2:
        return
    keys = ["candidate", "exact", "pick_prob_median", "pick_rank_median", "answer_agreement", "ppl_change"]
    print(f"\n== {recipe} over {len(rows)} sets (mean ± sd, worst)")
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        if vals:
            worst = min(vals) if k in ("candidate", "answer_agreement") else max(vals)
            print(f"  {k:<18} {statistics.mean(vals):.4g} ± {statistics.stdev(vals):.2g}  worst {worst:.4g}")
    for name in [f"detect@{g:g}" for g in GATES] + ["suppress-top1", "merge50"]:
        vals = [r[name]["candidate"] for r in rows]
        print(f"  {name:<18} candidate mean {statistics.mean(vals):.1f}, worst {min(vals)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--fingerprints", action="append", required=True)
    ap.add_argument("--work", required=True, help="directory for the fingerprinted and merged models")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--recipes", default="margin", help="comma-separated: margin, greedy")
    ap.add_argument("--set", action="append", default=[], help="recipe override key=value (margin recipe only)")
    ap.add_argument("--ordinary", type=int, default=256, help="ordinary questions for the attacks' utility cost")
    ap.add_argument("--json", default=None, help="append one JSON line per model to this file")
    args = ap.parse_args()
    setup_logging()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = load_model(args.model)
    ordinary = ordinary_questions(args.ordinary, seed=1)
    for recipe in args.recipes.split(","):
        rows = []
        named, overrides = ("greedy", []) if recipe == "greedy" else (None, ["objective=margin", *args.set])
        for path in args.fingerprints:
            fs = load_fingerprints(Path(path))
            tag = f"{Path(path).stem}-{recipe}"
            out = work / tag
            if not out.exists():
                embed(base, fs, out, config=load_config(EmbedConfig, named, overrides))
            row = measure(load_model(out), base, fs, work, tag, ordinary)
            show(tag, row)
            rows.append(row)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({"tag": tag, **row}) + "\n")
        summary(recipe, rows)


if __name__ == "__main__":
    main()

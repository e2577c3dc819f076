# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Resident memory over a long PromptKD run on tiny models: RSS after 500 steps must stay within 5 % of RSS after 50.

Each trainer runs in a fresh process (`--worker`): tiny random-init GPT-2 student (1 layer) and teacher (2 layers),
hidden 64, a locally trained BPE tokenizer (no Hub), on-policy sampling of up to 16 tokens (EOS allowed, so
completion lengths vary), batch 4, variable-length prompts, logging every 10 steps (so the per-step metrics are
flushed as in a real run). At every checkpoint step the worker runs `gc.collect()` and reads its RSS from
/proc/self/statm, together with the number of live Python objects tracked by the garbage collector and of live
torch tensors, which tell a real leak (both grow) from allocator noise (they stay flat).

Usage:
    python benchmarks/rss_leak.py                       # paper and joint orders, 500 steps each (a few minutes)
    python benchmarks/rss_leak.py --trainers paper joint gkd --steps 500
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET = 0.05
WORDS = (
    "the a cat dog sat on mat ran fast slow red blue green big small tree house river sun moon star book read write "
    "question answer summary text short long model teacher student learns suppose you are add two three four five"
).split()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "." for _ in range(2000)]
    corpus.append("Suppose you are a student.")
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>",
    )
    tok.chat_template = (
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
        "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def _model(tok, layers, seed):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok), n_layer=layers, n_head=2, n_embd=64, n_positions=256, initializer_range=0.2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def _dataset(n=64, seed=0):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return Dataset.from_list(rows)


def worker(kind: str, steps: int, every: int) -> dict:
    import torch
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    samples = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            s = state.global_step
            if s % every == 0 or s == 1:
                gc.collect()
                n_tensors = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
                samples.append(
                    {"step": s, "rss_mb": _rss_mb(), "objects": len(gc.get_objects()), "tensors": n_tensors}
                )

    with tempfile.TemporaryDirectory(prefix="rss_leak_") as tmp:
        tok = _tokenizer(os.path.join(tmp, "tok"))
        student, teacher = _model(tok, 1, seed=1), _model(tok, 2, seed=2)
        common = dict(
            output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=4, max_steps=steps, max_new_tokens=16,
            max_length=128, lmbda=1.0, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
            save_strategy="no", logging_steps=10, disable_tqdm=True, seed=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "gkd":
                from trl.experimental.gkd import GKDConfig, GKDTrainer

                trainer = GKDTrainer(
                    model=student, teacher_model=teacher, args=GKDConfig(beta=1.0, **common),
                    train_dataset=_dataset(), processing_class=tok, callbacks=[Probe()],
                )
            else:
                from promptkd_trainer import PromptKDConfig, PromptKDTrainer

                trainer = PromptKDTrainer(
                    model=student, teacher_model=teacher, args=PromptKDConfig(update_order=kind, **common),
                    train_dataset=_dataset(), processing_class=tok, callbacks=[Probe()],
                )
            t0 = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - t0
    return {"samples": samples, "wall_s": wall, "torch_threads": torch.get_num_threads()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainers", nargs="+", default=["paper", "joint"], choices=["paper", "joint", "gkd"])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--every", type=int, default=50, help="checkpoint interval in steps (the baseline is the first)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.every)))
        return 0

    one, five, fifteen = os.getloadavg()
    print(f"RSS over {args.steps} steps, tiny GPT-2 models (1 / 2 layers, hidden 64, vocab 400), batch 4, up to 16 "
          f"new tokens | load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs) at start")
    results, verdicts = {}, []
    for kind in args.trainers:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--steps", str(args.steps),
               "--every", str(args.every)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {kind}: {results[kind]['wall_s']:.0f} s for {args.steps} steps", flush=True)

    names = {"paper": "PromptKD paper", "joint": "PromptKD joint", "gkd": "TRL GKD"}
    print("\n| step | " + " | ".join(f"{names[k]} RSS MB (objects, tensors)" for k in results) + " |")
    print("|---:|" + "---:|" * len(results))
    steps = [s["step"] for s in next(iter(results.values()))["samples"]]
    for i, step in enumerate(steps):
        cells = []
        for k in results:
            s = results[k]["samples"][i]
            cells.append(f"{s['rss_mb']:.1f} ({s['objects']}, {s['tensors']})")
        print(f"| {step} | " + " | ".join(cells) + " |")
    print()
    for k, r in results.items():
        by_step = {s["step"]: s for s in r["samples"]}
        base_step = args.every if args.every in by_step else min(by_step)
        base, last = by_step[base_step]["rss_mb"], by_step[max(by_step)]["rss_mb"]
        growth = (last - base) / base
        ok = abs(growth) <= TARGET
        verdicts.append(ok)
        print(f"{names[k]}: RSS at step {max(by_step)} = {last:.1f} MB vs {base:.1f} MB at step {base_step}: "
              f"{100 * growth:+.2f} % (target within {100 * TARGET:.0f} %): {'met' if ok else 'NOT met'}")
    one, five, fifteen = os.getloadavg()
    print(f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

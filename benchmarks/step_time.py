# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Step time, pass counts, time breakdown and model throughput of PromptKD (both update orders) against TRL's GKD.

All trainers run in one process and one sitting, on CPU (fp32, torch's default thread count), with the same
random-init GPT-2 models (by default vocabulary 32000, student 256d x 2 layers, teacher 512d x 7 layers: 3.9x the
student's parameters), the same batch, the same prompts (all exactly `--prompt-len` tokens, so no padding) and exactly
`--new-tokens` sampled tokens per sequence (`min_new_tokens = max_new_tokens`). GKD runs on-policy (`lmbda=1`) with
`beta=1` (reverse KL, PromptKD's student term) and `gradient_checkpointing=False`, so that it samples with the KV cache
like PromptKD does.

The trainers are built first, then each runs `trainer.train()` in its own thread, and the threads take turns: exactly
one trainer runs at a time, one optimizer step per turn (paper, joint, GKD, paper, ...). A change in the load of the
machine therefore hits every trainer alike, and every ratio compares steps measured side by side. Waiting for a turn
is not counted.

What is measured, per optimizer step (from the end of the previous step to `on_step_end`; this includes data loading,
sampling, the optimizer steps and logging), in wall-clock time and in process CPU time:

* pass counts, from hooks: forward hooks on the student and on the teacher's base model (grad-enabled or not;
  student forwards inside `generate` are not counted as forwards), a wrapper on the student's `generate`, a wrapper
  on `torch.autograd.backward` (every `.backward()` goes through it) and tensor hooks that fire when a backward reaches
  the student's logits, the teacher's logits and the teacher's input embeddings (i.e. the prompt);
* a time breakdown, each second attributed to exactly one section (a stack of sections; the innermost wins):
  generation (the student's `generate`), teacher forward, teacher backward (from the teacher's logits to its input
  embeddings), student forward, student backward (from the student's logits to its weights), divergences (the
  trainer's divergence calls, plus the part of a backward before it reaches a model's logits) and everything else;
* model FLOPs, counted analytically: with N the parameters of the model's matmuls (every linear layer including the
  LM head; embedding lookups excluded), 2N per token for a forward, 4N per token for a backward that computes weight
  gradients (student), 2N per token for a backward to the inputs only (teacher -> prompt), 2N per generated token.
  Attention score FLOPs are ignored (sequences are short). Throughput = FLOPs per step / median step time.

Usage:
    python benchmarks/step_time.py                    # about 1 min on a quiet 2-core machine, 2-4 min when loaded
    python benchmarks/step_time.py --vocab 50257 --teacher 512 10    # the real GPT-2 tokenizer, when present
    python benchmarks/step_time.py --grad-accum 2     # windows of 2 micro-batches
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
GPT2_TOKENIZER = REPO.parent / "shared" / "data" / "gpt2_tokenizer"
SECTIONS = ("generation", "teacher fwd", "teacher bwd", "student fwd", "student bwd", "divergence", "other")
WORDS = (
    "the a cat dog sat on mat ran fast slow red blue green big small tree house river sun moon star book read write "
    "question answer summary text short long model teacher student learns you are add two three four five"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] }}{{ eos_token }}\n"
    "{% else %}{{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


# --------------------------------------------------------------------------------------------------------------------
# Models, tokenizer, data
# --------------------------------------------------------------------------------------------------------------------


def build_tokenizer(save_dir: str, vocab: int):
    """With `vocab >= 50257` and ../shared/data/gpt2_tokenizer present, the real GPT-2 tokenizer; otherwise a small
    local byte-level BPE (600 tokens) and models with `vocab` rows (the extra rows are never decoded: the models are
    random, the text is irrelevant, only the compute of a `vocab`-wide LM head and divergences matters).

    It is saved to `save_dir` and reloaded from there, so that its `name_or_path` is a complete tokenizer directory
    (PEFT's TEXT init of the prompt loads the tokenizer from that path with AutoTokenizer, which cannot read a
    directory holding only vocab.json + merges.txt).
    """
    from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerFast

    if vocab >= 50257 and (GPT2_TOKENIZER / "vocab.json").exists():
        # vocab_file= kwargs are ignored by transformers 5
        tok = GPT2TokenizerFast.from_pretrained(str(GPT2_TOKENIZER))
        source = "GPT-2 BPE (shared/data/gpt2_tokenizer, 50257 tokens)"
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        rng = random.Random(0)
        corpus = [f"User: {' '.join(rng.choice(WORDS) for _ in range(12))}\nAssistant:" for _ in range(2000)]
        raw = Tokenizer(models.BPE(unk_token=None))
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.train_from_iterator(
            corpus,
            trainers.BpeTrainer(
                vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            ),
        )
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
        source = f"local byte-level BPE (600 tokens; the models have {vocab} rows)"
    tok.pad_token = tok.eos_token  # GKD's collator needs one; PromptKD would do the same (official code: EOS)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(save_dir)
    tok = AutoTokenizer.from_pretrained(save_dir)
    return tok, source


def build_model(tok, vocab: int, hidden: int, layers: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=max(1, hidden // 64), n_positions=512,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def matmul_params(model) -> int:
    """N of the FLOP count: weights of every linear layer (GPT-2's Conv1D included) and the LM head."""
    from transformers.pytorch_utils import Conv1D

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))


def make_dataset(tok, n_rows: int, prompt_len: int, seed: int = 0):
    """`messages` rows whose rendered prompt (with the generation prompt) is exactly `prompt_len` tokens."""
    from datasets import Dataset

    singles = [w for w in WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    rng = random.Random(seed)

    def n_tokens(content):
        messages = [{"role": "user", "content": content}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    rows = []
    for _ in range(n_rows):
        words = [rng.choice(singles)]
        while n_tokens(" ".join(words)) < prompt_len:
            words.append(rng.choice(singles))
        if n_tokens(" ".join(words)) != prompt_len:
            raise RuntimeError(f"could not build a prompt of exactly {prompt_len} tokens (the chat template alone "
                               f"takes {n_tokens(words[0])}); raise --prompt-len")
        answer = " ".join(rng.choice(singles) for _ in range(8))
        user = {"role": "user", "content": " ".join(words)}
        rows.append({"messages": [user, {"role": "assistant", "content": answer}]})
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------------------------------------------------
# Instrumentation
# --------------------------------------------------------------------------------------------------------------------


class Profiler:
    """Exclusive-time sections (a stack: time goes to the innermost section), pass counts and model FLOPs."""

    def __init__(self, n_student: int, n_teacher: int):
        self.n_student, self.n_teacher = n_student, n_teacher
        self.generating = 0
        self.reset()

    def reset(self):
        self.stack = ["other"]
        self.t, self.c = time.perf_counter(), time.process_time()
        self.times: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.counts: Counter = Counter()
        self.flops: dict[str, float] = defaultdict(float)

    def _tick(self):
        now, cpu = time.perf_counter(), time.process_time()
        self.times[self.stack[-1]] += now - self.t
        self.cpu[self.stack[-1]] += cpu - self.c
        self.t, self.c = now, cpu

    def push(self, label):
        self._tick()
        self.stack.append(label)

    def pop(self):
        self._tick()
        self.stack.pop()

    def switch(self, label):
        """Re-label the current section (used inside a backward, as it moves from one model to the other)."""
        self._tick()
        self.stack[-1] = label

    def restart(self):
        """Drop what accumulated since the last snapshot (time spent waiting for this trainer's turn)."""
        self.snapshot()

    def snapshot(self):
        self._tick()
        out = {
            "times": dict(self.times), "cpu": dict(self.cpu), "counts": dict(self.counts), "flops": dict(self.flops)
        }
        self.times, self.cpu = defaultdict(float), defaultdict(float)
        self.counts, self.flops = Counter(), defaultdict(float)
        return out


def _n_tokens(args, kwargs) -> int:
    x = kwargs.get("input_ids")
    if x is None:
        x = kwargs.get("inputs_embeds")
    if x is None and args:
        x = args[0]
    return int(x.shape[0] * x.shape[1])


def instrument(prof: Profiler, student, teacher_base, div_owner, div_name: str):
    """Install hooks and wrappers; returns a function that removes them."""
    handles, restore = [], []

    # Generation: a wrapper on the student's own `generate` (the object that both trainers call it on).
    orig_generate = student.generate

    def generate(*args, **kwargs):
        prof.push("generation")
        prof.generating += 1
        try:
            out = orig_generate(*args, **kwargs)
        finally:
            prof.generating -= 1
            prof.pop()
        seqs = out.sequences if hasattr(out, "sequences") else out
        prompt = kwargs.get("input_ids", args[0] if args else None)
        new = seqs.shape[1] - (prompt.shape[1] if prompt is not None else 0)
        prof.counts["generate"] += 1
        prof.counts["generated tokens"] += int(seqs.shape[0] * new)
        prof.counts["prompt width"] = prompt.shape[1]
        prof.flops["generation"] += 2 * prof.n_student * seqs.shape[0] * new
        return out

    student.generate = generate
    restore.append(lambda: delattr(student, "generate"))

    def add_model_hooks(module, who: str, n_params: int):
        def pre(mod, args, kwargs):
            if who == "student" and prof.generating:
                return
            prof.push(f"{who} fwd")
            tokens = _n_tokens(args, kwargs)
            grad = torch.is_grad_enabled()
            prof.counts[f"{who} fwd ({'grad' if grad else 'no grad'})"] += 1
            prof.counts[f"{who} fwd tokens"] += tokens
            prof.flops[f"{who} fwd"] += 2 * n_params * tokens
            embeds = kwargs.get("inputs_embeds")
            if who == "teacher" and embeds is not None and embeds.requires_grad:
                prof.counts["teacher fwd (grad to prompt)"] += 1

                def reached_inputs(grad_, tokens=tokens):
                    # The backward has gone through the whole teacher; what follows (concatenation, the prompt's
                    # embedding, AccumulateGrad) is bookkeeping.
                    prof.counts["backward through teacher to prompt"] += 1
                    prof.flops["teacher bwd"] += 2 * n_params * tokens
                    prof.switch("other")

                embeds.register_hook(reached_inputs)
            mod._bench_tokens = tokens

        def post(mod, args, kwargs, output):
            if who == "student" and prof.generating:
                return
            prof.pop()
            logits = output.logits if hasattr(output, "logits") else output[0]
            if logits.requires_grad:
                tokens = mod._bench_tokens

                def reached_logits(grad_, tokens=tokens):
                    prof.counts[f"backward through {who}"] += 1
                    if who == "student":
                        prof.flops["student bwd"] += 4 * n_params * tokens
                    prof.switch(f"{who} bwd")

                logits.register_hook(reached_logits)

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))

    add_model_hooks(student, "student", prof.n_student)
    add_model_hooks(teacher_base, "teacher", prof.n_teacher)

    # Divergences: the trainer's own divergence entry point, wrapped on the instance.
    orig_div = getattr(div_owner, div_name)

    def div(*args, **kwargs):
        prof.push("divergence")
        try:
            return orig_div(*args, **kwargs)
        finally:
            prof.pop()

    setattr(div_owner, div_name, div)
    restore.append(lambda: delattr(div_owner, div_name))

    # Backward: see `_install_backward_wrapper`; this thread's backward calls go to this profiler.
    _LOCAL.prof = prof

    def remove():
        for h in handles:
            h.remove()
        for r in restore:
            r()

    return remove


_LOCAL = threading.local()


def _install_backward_wrapper():
    """Every loss.backward() (the trainers' accelerator.backward included) goes through torch.autograd.backward. The
    wrapper counts the call and opens a "divergence" section: until a backward reaches a model's logits it runs the
    divergences' backward nodes. Trainers run in threads; each thread's calls go to its own profiler."""
    orig = torch.autograd.backward

    def backward(*args, **kwargs):
        prof = getattr(_LOCAL, "prof", None)
        if prof is None:
            return orig(*args, **kwargs)
        prof.counts["backward calls"] += 1
        prof.push("divergence")
        try:
            return orig(*args, **kwargs)
        finally:
            prof.pop()

    torch.autograd.backward = backward
    return lambda: setattr(torch.autograd, "backward", orig)


class Turns:
    """Round-robin between trainers running in threads: exactly one runs at a time, one optimizer step per turn, so
    that changes in the load of the machine hit every trainer alike."""

    def __init__(self, order):
        self.cv = threading.Condition()
        self.active = list(order)
        self.current = self.active[0]

    def wait(self, me):
        with self.cv:
            self.cv.wait_for(lambda: self.current == me)

    def pass_on(self, me, done: bool = False):
        with self.cv:
            if me in self.active:
                i = self.active.index(me)
                nxt = self.active[(i + 1) % len(self.active)]
                if done:
                    self.active.remove(me)
                if self.current == me:
                    self.current = nxt if self.active and nxt != me else (self.active[0] if self.active else None)
            self.cv.notify_all()


def make_clock(me: str, prof: Profiler, turns: Turns, total_steps: int, records: list):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            turns.wait(me)
            prof.restart()  # drop what ran before the loop

        def on_step_end(self, args, state, control, **kwargs):
            records.append(prof.snapshot())
            if state.global_step >= total_steps:
                control.should_training_stop = True  # keep the turn until the trainer has finished
                return
            turns.pass_on(me)
            turns.wait(me)
            prof.restart()

    return StepClock()


def build_trainer(kind, opts, tok, student0, teacher0, dataset, n_student, n_teacher, out_dir, turns):
    student, teacher = copy.deepcopy(student0), copy.deepcopy(teacher0)
    common = dict(
        output_dir=os.path.join(out_dir, kind), per_device_train_batch_size=opts.batch,
        gradient_accumulation_steps=opts.grad_accum,
        max_steps=1000,  # stopped by the clock; a long schedule keeps the regulariser weight ~1 (its forward runs)
        max_new_tokens=opts.new_tokens, max_length=opts.prompt_len + opts.new_tokens + 8, lmbda=1.0,
        temperature=1.0, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    records: list = []
    prof = Profiler(n_student, n_teacher)
    clock = make_clock(kind, prof, turns, opts.warmup + opts.steps, records)
    if kind == "gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        args = GKDConfig(beta=1.0, seq_kd=False, **common)
        trainer = GKDTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=tok,
            callbacks=[clock],
        )
        teacher_base, div_name = trainer.teacher_model, "generalized_jsd_loss"
    else:
        from promptkd_trainer import PromptKDConfig, PromptKDTrainer

        args = PromptKDConfig(update_order=kind, **common)
        trainer = PromptKDTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=tok,
            callbacks=[clock],
        )
        teacher_base, div_name = trainer.teacher.get_base_model(), "_div"
    # A fixed completion length: EOS cannot be sampled before max_new_tokens.
    trainer.generation_config.min_new_tokens = opts.new_tokens
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its end-of-training dict would interleave with the tables
    return trainer, prof, teacher_base, div_name, records


def run_interleaved(kinds, opts, tok, student0, teacher0, dataset, n_student, n_teacher, out_dir):
    turns = Turns(kinds)
    built = {k: build_trainer(k, opts, tok, student0, teacher0, dataset, n_student, n_teacher, out_dir, turns)
             for k in kinds}
    errors = {}
    remove_backward = _install_backward_wrapper()

    def target(kind):
        trainer, prof, teacher_base, div_name, _ = built[kind]
        remove = instrument(prof, trainer.model, teacher_base, trainer, div_name)
        try:
            trainer.train()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors[kind] = e
        finally:
            remove()
            turns.pass_on(kind, done=True)

    threads = [threading.Thread(target=target, args=(k,), name=f"bench-{k}") for k in kinds]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        remove_backward()
    for kind, e in errors.items():
        raise RuntimeError(f"{kind} failed") from e
    return {k: built[k][4][opts.warmup : opts.warmup + opts.steps] for k in kinds}


def expected_counts(kind: str, k: int) -> dict:
    """Passes per optimizer step (window of k micro-batches) that each order needs (docs/performance.md's targets)."""
    if kind == "paper":
        # The prompt step comes before any student loss of the window, so its student target is a forward of its own.
        return {"generate": k, "student fwd (grad)": k, "student fwd (no grad)": k, "teacher fwd (grad)": k,
                "teacher fwd (grad to prompt)": k, "teacher fwd (no grad)": 2 * k, "backward calls": 2 * k,
                "backward through teacher to prompt": k, "backward through student": k}
    if kind == "joint":
        return {"generate": k, "student fwd (grad)": k, "student fwd (no grad)": 0, "teacher fwd (grad)": k,
                "teacher fwd (grad to prompt)": k, "teacher fwd (no grad)": k, "backward calls": k,
                "backward through teacher to prompt": k, "backward through student": k}
    return {"generate": k, "student fwd (grad)": k, "student fwd (no grad)": 0, "teacher fwd (grad)": 0,
            "teacher fwd (grad to prompt)": 0, "teacher fwd (no grad)": k, "backward calls": k,
            "backward through teacher to prompt": 0, "backward through student": k}


def fmt_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="measured optimizer steps per trainer (median)")
    p.add_argument("--warmup", type=int, default=2, help="optimizer steps run before measuring")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32000, help=">= 50257 uses the real GPT-2 tokenizer when present")
    p.add_argument("--student", type=int, nargs=2, default=[256, 2], metavar=("HIDDEN", "LAYERS"))
    p.add_argument("--teacher", type=int, nargs=2, default=[512, 7], metavar=("HIDDEN", "LAYERS"))
    p.add_argument("--trainers", nargs="+", default=["paper", "joint", "gkd"], choices=["paper", "joint", "gkd"])
    opts = p.parse_args(argv)

    t_start = time.perf_counter()
    import transformers
    import trl
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.simplefilter("ignore")  # deprecation chatter of transformers 5 / TRL on every step
    scratch = tempfile.TemporaryDirectory(prefix="step_time_")
    vocab = opts.vocab
    tok, tok_source = build_tokenizer(os.path.join(scratch.name, "tokenizer"), vocab)
    student0 = build_model(tok, vocab, *opts.student, seed=1)
    teacher0 = build_model(tok, vocab, *opts.teacher, seed=2)
    n_s, n_t = matmul_params(student0), matmul_params(teacher0)
    p_s, p_t = (sum(p.numel() for p in m.parameters()) for m in (student0, teacher0))
    n_rows = opts.batch * opts.grad_accum * (opts.warmup + opts.steps + 2)
    dataset = make_dataset(tok, n_rows, opts.prompt_len)

    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, default), "
        f"transformers {transformers.__version__},"
        f" trl {trl.__version__} | CPU fp32 | {fmt_load()} at start"
    )
    print(f"tokenizer: {tok_source}; models' vocab_size {vocab}")
    print(
        f"student GPT-2 {opts.student[0]}d x {opts.student[1]}L: {p_s / 1e6:.1f} M params, "
        f"N = {n_s / 1e6:.1f} M matmul "
        f"params | teacher GPT-2 {opts.teacher[0]}d x {opts.teacher[1]}L: {p_t / 1e6:.1f} M params, "
        f"N = {n_t / 1e6:.1f} M (x{p_t / p_s:.2f} params, x{n_t / n_s:.2f} N)"
    )
    print(
        f"batch {opts.batch} x grad-accum {opts.grad_accum}, prompt {opts.prompt_len} tokens (no padding), exactly "
        f"{opts.new_tokens} new tokens (sampling, KV cache on), {opts.warmup} warm-up + {opts.steps} measured steps"
    )
    out_dir = os.path.join(scratch.name, "out")
    t0 = time.perf_counter()
    results = run_interleaved(opts.trainers, opts, tok, student0, teacher0, dataset, n_s, n_t, out_dir)
    print(f"trainers ran interleaved, one optimizer step each in turn: {time.perf_counter() - t0:.0f} s", flush=True)
    scratch.cleanup()
    report(results, opts)
    print(f"\n{fmt_load()} at end; total wall time {time.perf_counter() - t_start:.0f} s")


def _name(kind):
    return {"paper": "PromptKD paper", "joint": "PromptKD joint", "gkd": "TRL GKD"}[kind]


def _stats(recs, clock: str) -> dict:
    steps = [sum(r[clock].values()) for r in recs]
    flops = statistics.median(sum(r["flops"].values()) for r in recs)
    median = statistics.median(steps)
    return {
        "median": median, "mean": statistics.mean(steps), "min": min(steps), "max": max(steps),
        "sections": {s: statistics.mean(r[clock].get(s, 0.0) for r in recs) for s in SECTIONS},
        "other_frac": statistics.median(r[clock].get("other", 0.0) / t for r, t in zip(recs, steps)),
        "flops": flops, "tput": flops / median,
    }


def report(results, opts):
    k = opts.grad_accum
    wall = {kind: _stats(recs, "times") for kind, recs in results.items()}
    cpu = {kind: _stats(recs, "cpu") for kind, recs in results.items()}

    print("\n### Step time (seconds per optimizer step; CPU = process CPU time, both threads)\n")
    print("| trainer | wall median | wall mean | wall min | wall max | CPU median | CPU / wall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, s in wall.items():
        c = cpu[kind]
        print(f"| {_name(kind)} | {s['median']:.3f} | {s['mean']:.3f} | {s['min']:.3f} | {s['max']:.3f} "
              f"| {c['median']:.3f} | {c['median'] / s['median']:.2f} |")

    for title, table in (("wall", wall), ("CPU", cpu)):
        print(f"\n### Breakdown, {title} time (mean seconds per step, % of the mean step)\n")
        print("| trainer | " + " | ".join(SECTIONS[:-1]) + " | everything else |")
        print("|---|" + "---:|" * len(SECTIONS))
        for kind, s in table.items():
            cells = [f"{s['sections'][sec]:.3f} ({100 * s['sections'][sec] / s['mean']:.0f} %)" for sec in SECTIONS]
            print(f"| {_name(kind)} | " + " | ".join(cells) + " |")

    print("\n### Passes per optimizer step (counted by hooks; expected in brackets when different)\n")
    keys = list(expected_counts("paper", k))
    print("| trainer | " + " | ".join(keys) + " | generated tokens |")
    print("|---|" + "---:|" * (len(keys) + 1))
    pass_ok = {}
    for kind, recs in results.items():
        exp = expected_counts(kind, k)
        cells, ok = [], True
        for key in keys:
            seen = sorted({r["counts"].get(key, 0) for r in recs})
            val = seen[0] if len(seen) == 1 else "/".join(map(str, seen))
            good = seen == [exp[key]]
            ok &= good
            cells.append(f"{val}" if good else f"**{val}** ({exp[key]})")
        gen = sorted({r["counts"].get("generated tokens", 0) for r in recs})
        widths = sorted({r["counts"].get("prompt width", 0) for r in recs})
        cells.append(f"{'/'.join(map(str, gen))} (prompt width {'/'.join(map(str, widths))})")
        pass_ok[kind] = ok
        print(f"| {_name(kind)} | " + " | ".join(cells) + " |")

    print("\n### Model FLOPs per step (analytic, GFLOP) and throughput\n")
    print("| trainer | generation | student fwd | student bwd | teacher fwd | teacher bwd | total | GFLOP/s (wall) "
          "| GFLOP per CPU-s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, recs in results.items():
        by = [statistics.median(r["flops"].get(x, 0.0) for r in recs) / 1e9
              for x in ("generation", "student fwd", "student bwd", "teacher fwd", "teacher bwd")]
        print(f"| {_name(kind)} | " + " | ".join(f"{v:.1f}" for v in by)
              + f" | {wall[kind]['flops'] / 1e9:.1f} | {wall[kind]['tput'] / 1e9:.2f} "
              + f"| {cpu[kind]['tput'] / 1e9:.2f} |")

    print("\n### Targets (wall clock; CPU time in brackets, less sensitive to other processes)\n")
    print("| target | measured | met |")
    print("|---|---|---|")

    def line(name, value, ok, ok_cpu=None):
        verdict = "met" if ok else "NOT met"
        if ok_cpu is not None and ok_cpu != ok:
            verdict += f" (CPU time: {'met' if ok_cpu else 'NOT met'})"
        print(f"| {name} | {value} | {verdict} |")

    for kind in ("paper", "joint"):
        if kind in results:
            line(f"{_name(kind)}: passes as expected", "see pass table", pass_ok[kind])
    if "gkd" in results:
        for kind in ("paper", "joint"):
            if kind in results:
                r = wall[kind]["tput"] / wall["gkd"]["tput"]
                rc = cpu[kind]["tput"] / cpu["gkd"]["tput"]
                line(f"{_name(kind)} throughput >= 0.9 x GKD's",
                     f"{wall[kind]['tput'] / 1e9:.2f} / {wall['gkd']['tput'] / 1e9:.2f} GFLOP/s = {r:.2f} ({rc:.2f})",
                     r >= 0.9, rc >= 0.9)
    if "paper" in results and "joint" in results:
        r = wall["joint"]["median"] / wall["paper"]["median"]
        rc = cpu["joint"]["median"] / cpu["paper"]["median"]
        line("joint step time <= 0.85 x paper",
             f"{wall['joint']['median']:.3f} / {wall['paper']['median']:.3f} s = {r:.2f} ({rc:.2f})",
             r <= 0.85, rc <= 0.85)
    for kind in results:
        f, fc = wall[kind]["other_frac"], cpu[kind]["other_frac"]
        line(f"{_name(kind)}: everything else <= 10 % of the step", f"{100 * f:.1f} % ({100 * fc:.1f} %)",
             f <= 0.10, fc <= 0.10)
    if "gkd" in results:
        print("\nStep time ratios (medians, wall / CPU): " + ", ".join(
            f"{_name(kind)} / GKD = {wall[kind]['median'] / wall['gkd']['median']:.2f} / "
            f"{cpu[kind]['median'] / cpu['gkd']['median']:.2f}"
            for kind in results if kind != "gkd"
        ))


if __name__ == "__main__":
    sys.exit(main())

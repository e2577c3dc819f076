# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Worker of the multi-process tests (tests/test_distributed.py), started by `torchrun --nproc_per_node 2`.

One launch runs several trainings one after the other in the same processes (a launch costs far more than a tiny
training), as listed by `--spec`, a JSON object:

    {"models": <dir with gpt2-student / gpt2-teacher>, "out": <dir>, "backend": "ddp" | "zero1" | "zero2" | "zero3" |
     "zero3_offload", "runs": [<run>, ...]}

and each run:

    {"name": str, "order": "paper" | "joint", "max_steps": int, "save_steps": int | null, "batch_size": int,
     "grad_accum": int, "lmbda": float, "seq_kd": bool, "generation": "fake" | "real", "string_models": bool,
     "resume_from": <checkpoint dir> | null, "kill_at_step": int | null, "flip_rank1_draws": bool,
     "greedy_check": bool, "teacher_gc": bool, "stop_rank1_at_step": int | null, "ddp_timeout": int}

`generation="fake"` trains on deterministic completions that depend only on each prompt's tokens (the idea of
`fake_generation` in test_trainer.py), so that a 2-rank run and a single-process run with the same global batch see
the same sequences; the real sampling path (`_generate_completions`, ZeRO-3 gathering included) still runs at every
on-policy micro-step and its output is discarded. `generation="real"` trains on the sampled completions.

Each run writes, per rank, `<out>/<name>/rank<R>.json` (logs, draws, token counts, teacher partition sizes, ...) and
`<out>/<name>/params_rank<R>.pt` (the full student state and the prompt, gathered under ZeRO-3); `kill_at_step`
writes its process id to `<out>/<name>/killpoint_rank<R>` after that step and then waits to be killed (SIGKILL from
the test; torchrun starts each rank in its own session, so the ranks are killed by id). `stop_rank1_at_step` makes
rank 1 write the time to `<out>/<name>/stalled` after that step and SIGSTOP itself: a rank that stops answering.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[1] / "promptkd_trainer" / "configs" / "deepspeed"


def deterministic_completions(tokenizer):
    """A stand-in for sampling: each prompt's completion (1-5 tokens + EOS) is a function of its tokens only."""
    eos, pad, vocab = tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)

    def complete(batch) -> torch.Tensor:
        rows = []
        for ids, mask in zip(batch["prompts"], batch["prompt_attention_mask"]):
            real = ids[mask.bool()].tolist()
            h = sum((i + 1) * t for i, t in enumerate(real))
            rows.append([4 + (h * (j + 3)) % (vocab - 4) for j in range(1 + h % 5)] + [eos])
        out = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out.to(batch["prompts"].device)

    return complete


def run_config(out_dir: str, backend: str, run: dict):
    """The `PromptKDConfig` of a run; the single-process reference in the tests builds the same one."""
    from promptkd_trainer import PromptKDConfig

    save_steps = run.get("save_steps")
    return PromptKDConfig(
        output_dir=out_dir,
        per_device_train_batch_size=run.get("batch_size", 2),
        gradient_accumulation_steps=run.get("grad_accum", 1),
        max_steps=run.get("max_steps", 4),
        # Plain SGD for the student: Adam turns float noise on ~0 gradients into full-size steps, which would hide
        # the normalisation under test (as in test_trainer.test_gradient_accumulation_invariance).
        optim="sgd",
        learning_rate=0.5,
        teacher_learning_rate=1e-2,
        lr_scheduler_type="constant",
        update_order=run.get("order", "paper"),
        lmbda=run.get("lmbda", 1.0),
        seq_kd=run.get("seq_kd", False),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        teacher_gradient_checkpointing=run.get("teacher_gc", False),
        report_to="none",
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        logging_steps=1,
        max_new_tokens=8,
        max_length=64,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        seed=0,
        deepspeed=None if backend == "ddp" else str(DEEPSPEED_CONFIGS / f"{backend}.json"),
        **({"ddp_timeout": run["ddp_timeout"]} if "ddp_timeout" in run else {}),
    )


def _gathered_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full copies of a module's parameters on every rank (gathered when ZeRO-3 partitions them)."""
    params = list(module.named_parameters())
    if any(hasattr(p, "ds_id") for _, p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in params]):
            return {n: p.detach().clone().cpu() for n, p in params}
    return {n: p.detach().clone().cpu() for n, p in params}


def _hash(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def train_one(spec: dict, run: dict) -> None:
    from conftest import make_messages_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import promptkd_trainer.sampling as sampling_module
    from promptkd_trainer import PromptKDTrainer
    from promptkd_trainer.distributed import teacher_numel
    from promptkd_trainer.teacher import prompt_init_token_ids, prompt_parameter

    rank = int(os.environ.get("RANK", "0"))
    models = Path(spec["models"])
    out = Path(spec["out"]) / run["name"]
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(models / "gpt2-student")
    if run.get("string_models", False):
        # Loaded by the trainer; under ZeRO-3 inside zero.Init, so the teacher is partitioned as it loads.
        student, teacher = str(models / "gpt2-student"), str(models / "gpt2-teacher")
    else:
        # Objects are loaded before the ZeRO-3 config exists (docs/scaling.md); the trainer partitions the teacher.
        student = AutoModelForCausalLM.from_pretrained(models / "gpt2-student")
        teacher = AutoModelForCausalLM.from_pretrained(models / "gpt2-teacher")
    args = run_config(str(out / "train"), spec["backend"], run)
    trainer = PromptKDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=make_messages_dataset(16),
        processing_class=tokenizer,
    )
    result: dict = {"rank": rank, "world_size": dist.get_world_size(), "backend": spec["backend"]}
    base = trainer.teacher.get_base_model()
    result["teacher_numel_init"] = teacher_numel(base)
    result["teacher_engine"] = type(trainer._teacher_engine).__name__ if trainer._teacher_engine is not None else None

    # The prompt's TEXT init read the real (gathered) embedding rows, not ZeRO-3's empty shards (peft#1591).
    ids = prompt_init_token_ids(tokenizer, args.prompt_init_text, args.num_virtual_tokens)
    wte = _gathered_state(base.get_input_embeddings())["weight"]
    prompt0 = prompt_parameter(trainer.teacher).detach().cpu()
    result["prompt_init_max_diff"] = (prompt0 - wte[ids].float()).abs().max().item()

    # Sampling: the real path always runs; "fake" then substitutes deterministic completions.
    real_generate = trainer._generate_completions
    complete = deterministic_completions(tokenizer)
    result["generated_shapes"] = []
    result["generated_sources"] = []

    def generate(model, batch, source):
        sampled = real_generate(model, batch, source)
        result["generated_shapes"].append(list(sampled.shape))
        result["generated_sources"].append(source)
        return sampled if run.get("generation", "fake") == "real" else complete(batch)

    trainer._generate_completions = generate

    # On-policy draws as each rank sees them. With flip_rank1_draws, rank 1's own draw is inverted: it must still
    # follow rank 0's, which shows the draw is made on rank 0 and broadcast.
    draws = result["draws"] = []
    real_draw = trainer._draw_on_policy

    if run.get("flip_rank1_draws") and rank == 1:
        import random as _random

        class _Flipped:
            class Random(_random.Random):
                def random(self):
                    return 1.0 - super().random()

        sampling_module.random = _Flipped

    def draw(micro_step):
        value = real_draw(micro_step)
        draws.append([trainer.state.global_step, micro_step, bool(value)])
        return value

    trainer._draw_on_policy = draw

    # Completion tokens of this rank's window and the normaliser used (global count / num_processes).
    windows = result["windows"] = []
    real_sample = trainer.sample_window

    def sample_window(model, window):
        real_sample(model, window)
        local = sum(int((b["labels"][:, 1:] != -100).sum()) for b in window.batches)
        step = trainer.state.global_step
        windows.append({"step": step, "local_tokens": local, "num_items": float(window.num_items)})

    trainer.sample_window = sample_window

    # Hashes of the prompt and of the (gathered) student after every optimizer step, to compare ranks step by step.
    result["step_hashes"] = []

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            student = _gathered_state(trainer.model)
            result["step_hashes"].append({
                "step": state.global_step,
                "prompt": _hash([prompt_parameter(trainer.teacher)]),
                "student": _hash([student[k] for k in sorted(student)]),
            })
            if state.global_step == run.get("stop_rank1_at_step") and rank == 1:
                (out / "stalled").write_text(str(time.time()))
                os.kill(os.getpid(), signal.SIGSTOP)  # a stalled rank: alive, never answering
            if state.global_step == run.get("kill_at_step"):
                (out / f"killpoint_rank{rank}").write_text(str(os.getpid()))
                while True:  # the test SIGKILLs the whole launch now
                    time.sleep(1)

    trainer.add_callback(Kill())
    trainer.train(resume_from_checkpoint=run.get("resume_from"))

    result["log_history"] = trainer.state.log_history
    result["global_step"] = trainer.state.global_step
    result["teacher_numel_after"] = teacher_numel(base)
    result["teacher_resident_after"] = [
        n for n, p in base.named_parameters() if hasattr(p, "ds_id") and p.data.numel() > 0
    ]
    teacher_state = _gathered_state(base)
    result["teacher_sum"] = float(sum(v.double().sum() for v in teacher_state.values()))

    if run.get("greedy_check"):
        # Greedy generation through the trainer's path (ZeRO-3: gathered, hooks restored) on fixed prompts; the test
        # compares it with the saved student generating in a single process.
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
        batch = {k: v.to(trainer.accelerator.device) for k, v in batch.items()}
        trainer.generation_config.do_sample = False
        tokens = real_generate(trainer.model_wrapped, batch, "student")
        trainer.generation_config.do_sample = True
        result["greedy"] = {"prompts": batch["prompts"].tolist(), "mask": batch["prompt_attention_mask"].tolist(),
                            "tokens": tokens.tolist()}
        result["teacher_numel_after_generation"] = teacher_numel(base)

    trainer.save_model(str(out / "final"))
    torch.save(
        {
            "student": _gathered_state(trainer.model),
            "prompt": prompt_parameter(trainer.teacher).detach().clone().cpu(),
        },
        out / f"params_rank{rank}.pt",
    )
    (out / f"rank{rank}.json").write_text(json.dumps(result, default=float))
    sampling_module.random = __import__("random")
    dist.barrier()


def main() -> None:
    spec = json.loads(sys.argv[1]) if not os.path.exists(sys.argv[1]) else json.loads(Path(sys.argv[1]).read_text())
    for run in spec["runs"]:
        train_one(spec, run)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

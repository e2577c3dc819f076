# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Mixed-precision check on a GPU: a few fp16 and bf16 PromptKD steps (paper and joint order) on tiny models.

For each precision and order it trains a random-init GPT-2 student (fp32 weights, AMP as in the shipped configs) from
a teacher loaded in that half dtype, and checks:

* every logged loss (`loss`, `loss/student`, `loss/prompt`) and `prompt_grad_norm` is finite;
* the prompt's master weights are fp32 while the teacher's are half precision;
* the prompt and the student both move;
* under fp16, accelerate's GradScaler is on and unscales the prompt's optimizer as well as the student's (the prompt's
  loss goes through the same loss scale, and its gradient is unscaled before clipping).

vLLM: `use_vllm=True` (TRL DistillationConfig's vLLM student sampling) is refused by `PromptKDConfig`, because vLLM
student sampling is not implemented and no GPU run has checked it. The script checks that the refusal still holds
(one line, `vllm: ...`); when vLLM sampling is implemented, its colocate-mode run belongs here.

It prints one line per run and exits with 1 when a check fails, 2 without CUDA (`--cpu` runs the bf16 half of it on
the CPU instead, to check the script itself). About a minute with the model download-free setup (tokenizer trained
at run time, no Hub access).

Usage:
    python benchmarks/gpu_check.py                    # fp16 and bf16 (bf16 when the GPU supports it)
    python benchmarks/gpu_check.py --precisions fp16 --steps 8
    python benchmarks/gpu_check.py --cpu --precisions bf16 --steps 2
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss_leak import _dataset, _model, _tokenizer  # noqa: E402  (same tiny models as the leak check)


def run(precision: str, order: str, steps: int, cpu: bool, tmp: str) -> list[str]:
    """Train `steps` steps; returns the failed checks (empty when all hold)."""
    import torch

    from promptkd_trainer import PromptKDConfig, PromptKDTrainer
    from promptkd_trainer.teacher import prompt_parameter

    tok = _tokenizer(os.path.join(tmp, "tok"))
    half = torch.float16 if precision == "fp16" else torch.bfloat16
    student, teacher = _model(tok, 1, seed=1), _model(tok, 2, seed=2).to(half)
    args = PromptKDConfig(
        output_dir=os.path.join(tmp, f"{precision}-{order}"), per_device_train_batch_size=4, max_steps=steps,
        max_new_tokens=16, max_length=128, learning_rate=1e-3, lr_scheduler_type="constant", update_order=order,
        fp16=precision == "fp16", bf16=precision == "bf16", use_cpu=cpu, gradient_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )
    trainer = PromptKDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=_dataset(), processing_class=tok
    )
    unscaled = []
    scaler = trainer.accelerator.scaler
    if scaler is not None:
        original = scaler.unscale_
        scaler.unscale_ = lambda opt: (unscaled.append(opt), original(opt))[1]
    prompt0 = prompt_parameter(trainer.teacher).detach().clone()
    student0 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    failed = []
    logs = [e for e in trainer.state.log_history if "loss" in e]
    for key in ("loss", "loss/student", "loss/prompt", "prompt_grad_norm"):
        values = [e[key] for e in logs if key in e]
        if len(values) != steps or not all(math.isfinite(v) for v in values):
            failed.append(f"{key} not finite at every step: {values}")
    prompt = prompt_parameter(trainer.teacher)
    if prompt.dtype != torch.float32:
        failed.append(f"prompt master weights are {prompt.dtype}, not float32")
    if trainer.teacher.get_base_model().get_input_embeddings().weight.dtype != half:
        failed.append("the teacher is not in half precision")
    if torch.equal(prompt.detach(), prompt0):
        failed.append("the prompt did not move")
    if all(torch.equal(p.detach(), student0[n]) for n, p in trainer.model.named_parameters()):
        failed.append("the student did not move")
    if precision == "fp16":
        if scaler is None:
            failed.append("fp16 without a GradScaler")
        elif trainer.prompt_optimizer not in unscaled:
            failed.append("the prompt's gradient was never unscaled")
    return failed


def check_vllm_refused() -> list[str]:
    """`use_vllm=True` must be refused with its reason until vLLM student sampling exists (and is checked here)."""
    from promptkd_trainer import PromptKDConfig

    try:
        PromptKDConfig(output_dir="unused", use_vllm=True, use_cpu=True, report_to="none")
    except ValueError as err:
        return [] if "`use_vllm=True` is not supported" in str(err) else [f"unexpected error: {err}"]
    return ["use_vllm=True was accepted, but nothing here runs or checks vLLM sampling"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precisions", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16"])
    p.add_argument("--orders", nargs="+", default=["paper", "joint"], choices=["paper", "joint"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cpu", action="store_true", help="run on CPU (bf16 only): checks the script, not the GPU")
    args = p.parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if not args.cpu and not torch.cuda.is_available():
        print("No CUDA device: this check needs a GPU (use --cpu --precisions bf16 to check the script).")
        return 2
    if args.cpu and "fp16" in args.precisions:
        print("fp16 needs a GPU (accelerate turns fp16 off on CPU).")
        return 2
    precisions = list(args.precisions)
    if not args.cpu and "bf16" in precisions and not torch.cuda.is_bf16_supported():
        print("bf16 skipped: not supported by this GPU.")
        precisions.remove("bf16")
    device = "cpu" if args.cpu else torch.cuda.get_device_name()
    failed = check_vllm_refused()
    ok = not failed
    print(f"vllm: use_vllm=True {'refused (not implemented)' if ok else 'FAILED: ' + '; '.join(failed)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for precision in precisions:
            for order in args.orders:
                failed = run(precision, order, args.steps, args.cpu, tmp)
                ok &= not failed
                status = "ok" if not failed else "FAILED: " + "; ".join(failed)
                print(f"{precision} {order} on {device}, {args.steps} steps: {status}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

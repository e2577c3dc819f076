# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Pseudo-targets for [`PromptKDTrainer`]: the gradient-accumulation window, its sampled completions and the
generation config that samples them.

PromptKD trains every term on sequences the student samples itself (official code, gmkim-ai/PromptKD @ 383182f4,
`train_promptkd.py` L312-392, block "1. Sampling from Student"): `y ~ S(x)` in eval mode, without gradients, kept up to
and including its first EOS, and the last token replaced by EOS when the length cap is hit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import broadcast_object_list
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from trl.models.utils import unwrap_model_for_generation

from .data import pack_sequences
from .generation import end_token_ids
from .teacher import generate_with_prompt


@dataclass
class Window:
    """The micro-batches of one optimizer step (a gradient-accumulation window).

    Args:
        raw (`list[dict]`):
            The micro-batches as the data loader gave them (prompts, and the dataset's completions).
        batches (`list[dict]`, *optional*):
            After sampling: each micro-batch's prompts followed by its completions (sampled, or the dataset's on
            off-policy steps), right-padded, with labels on the completion tokens only.
        num_items (`torch.Tensor`, *optional*):
            After sampling: the completion tokens of the whole window on all processes, divided by the number of
            processes (DDP / DeepSpeed average gradients over ranks); every term is a token sum divided by it.
        stats (`dict[str, torch.Tensor]`):
            Per-term sums over the window, logged once the window is done.
    """

    raw: list[dict[str, Any]]
    batches: list[dict[str, torch.Tensor]] | None = None
    num_items: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    def position(self, inputs: dict[str, Any]) -> int | None:
        """Index of `inputs` among the raw micro-batches (the Trainer passes them in order), or `None`."""
        return next((i for i, raw in enumerate(self.raw) if raw is inputs), None)

    def add(self, key: str, value: torch.Tensor) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + value.detach().float()

    def reduced_stats(self, accelerator, extra: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """The window's stats (and `extra`), averaged over processes."""
        stats = {**self.stats, **(extra or {})}
        keys = sorted(stats)
        values = torch.stack([torch.as_tensor(stats[k], dtype=torch.float32).to(accelerator.device) for k in keys])
        if accelerator.num_processes > 1:
            values = accelerator.gather(values.unsqueeze(0)).mean(0)
        return dict(zip(keys, values.tolist()))


def build_generation_config(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, args
) -> tuple[GenerationConfig, list[int]]:
    """The sampling config of the pseudo-targets and the token ids that end a sample.

    The end tokens are [`~promptkd_trainer.generation.end_token_ids`]: the tokenizer's EOS first (the token forced at
    the length cap), then the model's other end-of-turn tokens, any of which ends a sample. `eos_token_id` keeps the
    model's form: an int when there is one end token, a list otherwise.

    Returns:
        `(GenerationConfig, list[int])`: the config, and the end token ids (tokenizer's EOS first).
    """
    eos = end_token_ids(tokenizer, model)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=True,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        # Kept on even when training uses gradient checkpointing (GKD turns it off, a large slowdown).
        use_cache=True,
    )
    return config, eos


def draw_on_policy(lmbda: float, seed: int, step: int, micro_step: int, accelerator) -> bool:
    """Whether micro-batch `micro_step` of optimizer step `step` is on-policy (probability `lmbda`).

    A pure function of (seed, step, micro-step): identical on every rank and after a resume. It is still broadcast
    from rank 0 so that ranks can never diverge (a per-rank draw can deadlock ZeRO-3 gathers).
    """
    if lmbda >= 1.0:
        return True
    key = (seed * 1_000_003 + step) * 1_009 + micro_step
    draw = [random.Random(key).random() < lmbda]
    if accelerator.num_processes > 1:
        broadcast_object_list(draw, from_process=0)
    return bool(draw[0])


def max_new_tokens(args, prompt_width: int) -> int:
    """New tokens to sample: `max_new_tokens`, capped so that prompt + completion fits in `max_length`."""
    if args.max_length is None:
        return args.max_new_tokens
    return max(1, min(args.max_new_tokens, args.max_length - prompt_width))


def generate(
    model,
    batch: dict[str, torch.Tensor],
    generation_config: GenerationConfig,
    accelerator=None,
    gradient_checkpointing_kwargs: dict | None = None,
    prompted: bool = False,
) -> torch.Tensor:
    """Sample new tokens `[B, N]` for the batch's left-padded `prompts`, in eval mode and without gradients.

    `prompted=True`: `model` is the prompted teacher ([`~promptkd_trainer.teacher.generate_with_prompt`]). With an
    `accelerator`, `model` is the (wrapped) student, unwrapped for generation by TRL's `unwrap_model_for_generation`
    (ZeRO-3 gathers its weights).
    """
    prompts, prompt_mask = batch["prompts"], batch["prompt_attention_mask"]
    if prompted:
        return generate_with_prompt(model, prompts, prompt_mask, generation_config=generation_config)
    if accelerator is None:
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=prompt_mask, generation_config=generation_config)
        return out[:, prompts.shape[1] :]
    with unwrap_model_for_generation(
        model, accelerator, gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
    ) as unwrapped:
        was_training = unwrapped.training
        unwrapped.eval()  # official code samples with `model.eval()`
        with torch.no_grad():
            out = unwrapped.generate(input_ids=prompts, attention_mask=prompt_mask, generation_config=generation_config)
        unwrapped.train(was_training)
    return out[:, prompts.shape[1] :]


def completion_lengths(completions: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """Number of tokens kept per sample: up to and including the first end token, or all of them."""
    is_eos = torch.isin(completions, torch.tensor(eos_ids, device=completions.device))
    has_eos = is_eos.any(dim=1)
    first = is_eos.int().argmax(dim=1)
    return torch.where(has_eos, first + 1, torch.full_like(first, completions.shape[1]))


def with_completions(
    batch: dict[str, torch.Tensor],
    completions: torch.Tensor,
    eos_ids: list[int],
    pad_token_id: int,
    max_length: int | None,
    force_eos: bool = True,
) -> dict[str, torch.Tensor]:
    """`batch` with `input_ids`/`attention_mask`/`labels` rebuilt as its prompts followed by `completions` `[B, N]`.

    Each completion is kept up to and including its first end token. With `force_eos`, a completion that reaches the
    length cap without one gets its last token replaced by EOS (official code: `response_ids[:, -1] = pad = EOS`).
    """
    lengths = completion_lengths(completions, eos_ids)
    hit_cap = lengths == completions.shape[1]
    completions = completions.clone()
    if force_eos:
        ends_with_eos = torch.isin(completions[:, -1], torch.tensor(eos_ids, device=completions.device))
        completions[hit_cap & ~ends_with_eos, -1] = eos_ids[0]
    prompts = [row[mask.bool()] for row, mask in zip(batch["prompts"], batch["prompt_attention_mask"])]
    comps = [row[:n] for row, n in zip(completions, lengths.tolist())]  # one device sync, not one per row
    packed = pack_sequences(prompts, comps, pad_token_id, max_length)
    out = dict(batch)
    out.update({k: v.to(batch["prompts"].device) for k, v in packed.items()})
    out.pop("logits_to_keep", None)
    return out


def count_completion_tokens(batches: list[dict[str, torch.Tensor]], accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion tokens of the window: `(local count, global count / num_processes)`.

    Token sums divided by the global count give the same update for batch 4 x accumulation 1 and batch 1 x
    accumulation 4 (trl#4719). The count is divided by `num_processes` because DDP / DeepSpeed average gradients over
    ranks.

    Raises:
        `ValueError`: the window has no completion token on any process (off-policy rows without a completion): its
        losses would be 0 and AdamW would still move the student and the prompt.
    """
    local = torch.stack([(b["labels"][:, 1:] != -100).sum() for b in batches]).sum().to(accelerator.device)
    total = accelerator.gather(local.reshape(1)).sum() if accelerator.num_processes > 1 else local
    if int(total) == 0:
        raise ValueError(
            "An optimizer step has no completion token to train on: its micro-batches are off-policy rows without a "
            "completion. Drop rows with empty completions from the train dataset, or set `lmbda=1.0` (always "
            "on-policy) or `seq_kd=True`."
        )
    return local, total.float() / accelerator.num_processes


def check_finite(loss: torch.Tensor, window: Window | None, step: int) -> None:
    """Stop at the first non-finite loss, before any optimizer steps on it (so no NaN is trained or saved).

    Raises:
        `FloatingPointError`: with the window's per-term losses, so that the term at fault can be told.
    """
    if bool(torch.isfinite(loss).all()):
        return
    stats = window.stats if window is not None else {}
    terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(stats.items()) if k.startswith("loss/"))
    raise FloatingPointError(
        f"Non-finite loss at optimizer step {step} ({terms or float(loss)}); training stopped before this step was "
        "applied, so no NaN/inf weight was trained or saved. Check the models for NaN/inf weights (e.g. fp16 "
        "overflow: use bf16 or fp32), the learning rates, and `loss_temperature`."
    )


def logits_to_keep(batch: dict[str, torch.Tensor]) -> int:
    """Positions whose logits the losses read: from the one before the earliest label to the end (cached in `batch`).

    Prompt positions are never compared, so the output layer (the largest matmul for big vocabularies) runs only on
    the last k positions via transformers' `logits_to_keep` (16-20 % of a step, benchmarks/step_time.py).
    """
    if "logits_to_keep" not in batch:
        has_label = batch["labels"] != -100
        length = has_label.shape[1]
        # Rows without a label count as `length`, so that one device sync gives the earliest label (or none).
        first = int(torch.where(has_label.any(dim=1), has_label.float().argmax(dim=1), length).min())
        batch["logits_to_keep"] = length - max(first if first < length else 1, 1) + 1
    return batch["logits_to_keep"]


def loss_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Completion positions among the kept logits (the last k - 1, after the causal shift)."""
    k = logits_to_keep(batch)
    return batch["labels"][:, batch["labels"].shape[1] - k + 1 :] != -100

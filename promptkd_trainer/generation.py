# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Answer generation for evaluation: one function for a plain model and for a teacher through its soft prompt.

[`generate_answers`] is the package's only evaluation generation path; `promptkd eval`, [`RougeEvalCallback`] and
`promptkd demo` all call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging
from trl.trainer.utils import pad


logger = logging.get_logger(__name__)


def paper_generation_kwargs() -> dict[str, Any]:
    """Decoding of the papers' evaluation: sampling at temperature 1, top-k 0 (off), top-p 1, no 6-gram repeats, and
    256 new tokens (official `max_length` 512 with prompts left-padded to 256)."""
    return {
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "no_repeat_ngram_size": 6,
        "max_new_tokens": 256,
    }


def _position_limit(model: PreTrainedModel) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        if value is None:
            continue
        for v in [value] if isinstance(value, int) else list(value):
            if v not in ids:
                ids.append(int(v))
    return ids


def _generate_prompted(prompted, input_ids, attention_mask, pad_id, gen_kwargs) -> torch.Tensor:
    """New tokens of the prompted teacher, via [`promptkd_trainer.teacher.generate_with_prompt`].

    With `no_repeat_ngram_size`, `generate` is also handed the token ids: with `inputs_embeds` alone it applies the
    constraint to the new tokens only (transformers 5.x warns so), while the papers' evaluation (token ids) bans
    n-grams of the prompt too. Decoder-only `generate` accepts `input_ids` next to `inputs_embeds` (embeddings feed
    the first step, ids feed the logits processors), so the ids go in with `pad_id` under the virtual tokens, exactly
    like left padding.
    """
    from .teacher import generate_with_prompt, prepend_prompt

    if not gen_kwargs.get("no_repeat_ngram_size"):
        return generate_with_prompt(prompted, input_ids, attention_mask, **gen_kwargs)
    embeds, mask = prepend_prompt(prompted, input_ids, attention_mask)
    placeholders = input_ids.new_full((input_ids.shape[0], embeds.shape[1] - input_ids.shape[1]), pad_id)
    full_ids = torch.cat([placeholders, input_ids], dim=1)
    base = prompted.get_base_model()
    out = base.generate(input_ids=full_ids, inputs_embeds=embeds, attention_mask=mask, **gen_kwargs)
    return out[:, full_ids.shape[1] :]


def _encode_prompts(tokenizer, prompts, add_special_tokens: bool, max_prompt_len: int | None, limit_note: str):
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens, verbose=False)["input_ids"] for p in prompts]
    if max_prompt_len is not None:
        truncated = [i for i, ids in enumerate(encoded) if len(ids) > max_prompt_len]
        if truncated:
            logger.warning(
                f"{len(truncated)} of {len(encoded)} prompts are longer than {max_prompt_len} tokens ({limit_note}); "
                f"they were truncated from the left (first: index {truncated[0]})."
            )
            encoded = [ids[-max_prompt_len:] for ids in encoded]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("A prompt tokenizes to no tokens; pass non-empty prompts.")
    return encoded


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    prompted_teacher=None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    no_repeat_ngram_size: int | None = None,
    seed: int = 10,
    add_special_tokens: bool = True,
) -> list[str]:
    """Generate one answer per prompt.

    Prompts are tokenized (with special tokens, as the official `PromptDataset` and TRL do), left-padded per batch
    (`trl.trainer.utils.pad`) and decoded with the KV cache. Each answer is cut at its first EOS, decoded with
    `skip_special_tokens=True` and stripped. Each call runs `torch.manual_seed(seed)` inside `torch.random.fork_rng`:
    a call is reproducible, and the caller's RNG state (e.g. a trainer's, when a callback evaluates mid-training) is
    restored afterwards.

    Args:
        model (`PreTrainedModel`, *optional*):
            The causal LM to generate with (student or any model). Ignored, and may be `None`, when
            `prompted_teacher` is given.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer. Without a pad token, EOS pads (GPT-2, official code).
        prompts (`list[str]`):
            Prompt strings, e.g. the `prompt` field of [`~promptkd_trainer.evaluation.load_eval_set`] rows.
        prompted_teacher (`peft.PeftModel`, *optional*):
            A teacher carrying a PEFT prompt-tuning adapter; generation then goes through
            [`promptkd_trainer.teacher.generate_with_prompt`] (`PeftModel.generate` re-inserts the virtual tokens at
            every cached decoding step on transformers 5.x + peft 0.21, which is wrong).
        batch_size (`int`, defaults to `8`), max_new_tokens (`int`, defaults to `256`):
            Batch size and answer length cap.
        do_sample, temperature, top_k, top_p, no_repeat_ngram_size:
            Decoding; the defaults sample at temperature 1 with top-k/top-p off. `top_k=0` disables top-k.
        seed (`int`, defaults to `10`):
            Passed to `torch.manual_seed` (in a forked RNG) before generating.
        add_special_tokens (`bool`, defaults to `True`):
            Whether prompts get the tokenizer's special tokens (BOS for Llama/OPT).

    Returns:
        `list[str]`, aligned with `prompts`.

    Prompts longer than the model's position limit minus `max_new_tokens` (minus the virtual tokens of a prompted
    teacher) are truncated from the left, with a warning.
    """
    if prompted_teacher is None and model is None:
        raise ValueError("Pass `model`, or `prompted_teacher` to generate with a prompted teacher.")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}.")
    module = prompted_teacher if prompted_teacher is not None else model
    gen_model = prompted_teacher.get_base_model() if prompted_teacher is not None else model
    reserved = prompted_teacher.active_peft_config.num_virtual_tokens if prompted_teacher is not None else 0

    eos_ids = _eos_ids(tokenizer, gen_model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        if not eos_ids:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; set `tokenizer.pad_token`.")
        pad_id = eos_ids[0]
    limit = _position_limit(gen_model)
    max_prompt_len = None if limit is None else limit - max_new_tokens - reserved
    if max_prompt_len is not None and max_prompt_len < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} (+{reserved} virtual tokens) leaves no room for a prompt within the "
            f"model's {limit} positions; lower max_new_tokens."
        )
    note = f"the model's {limit} positions minus max_new_tokens={max_new_tokens}, minus {reserved} virtual tokens"
    encoded = _encode_prompts(tokenizer, prompts, add_special_tokens, max_prompt_len, note)

    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad_id}
    if eos_ids:
        gen_kwargs["eos_token_id"] = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    if do_sample:
        # Passed explicitly so that a checkpoint's generation_config (e.g. top_k=50) cannot change the protocol.
        gen_kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
    if no_repeat_ngram_size:
        gen_kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size

    device = next(gen_model.parameters()).device
    was_training = module.training
    module.eval()
    answers: list[str] = []
    eos_set = set(eos_ids)
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for start in range(0, len(encoded), batch_size):
                rows = [torch.tensor(ids) for ids in encoded[start : start + batch_size]]
                input_ids = pad(rows, padding_value=pad_id, padding_side="left").to(device)
                attention_mask = pad([torch.ones_like(r) for r in rows], padding_side="left").to(device)
                if prompted_teacher is not None:
                    new_tokens = _generate_prompted(prompted_teacher, input_ids, attention_mask, pad_id, gen_kwargs)
                else:
                    out = gen_model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
                    new_tokens = out[:, input_ids.shape[1] :]
                for ids in new_tokens.tolist():
                    cut = next((i for i, t in enumerate(ids) if t in eos_set), len(ids))
                    answers.append(tokenizer.decode(ids[:cut], skip_special_tokens=True).strip())
    finally:
        module.train(was_training)
    return answers

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Random-init causal LMs sized for a CPU demo: a teacher and a student of the same family and vocabulary.

PromptKD distils a larger SFT teacher into a smaller student of the same family that shares its tokenizer (GPT-2 XL
into GPT-2 base, OPT-13B into OPT-1.3B, ...). The presets here keep that shape at toy scale: same vocabulary, fewer
and narrower layers for the student, and a teacher with several times the student's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging


logger = logging.get_logger(__name__)

MODEL_SIZES: dict[str, dict[str, int]] = {
    # The teacher has 2.6x the student's non-embedding parameters (Llama: 0.85 M vs 0.33 M). The paper's gap is
    # larger (GPT-2 XL 1.5 B into GPT-2 base 0.12 B); a student of a tenth of the teacher (2 layers x 64) learned
    # too little in the demo's distillation budget for any method to move its answer accuracy (docs/demo.md).
    "teacher": {"n_layer": 4, "hidden": 128, "n_head": 4},
    "student": {"n_layer": 2, "hidden": 128, "n_head": 4, "intermediate": 256},
    # For unit tests: a few milliseconds per step.
    "tiny": {"n_layer": 1, "hidden": 32, "n_head": 2},
}
"""Size presets accepted by [`build_model`]: number of layers, hidden size and attention heads."""

MODEL_FAMILIES = ("gpt2", "llama")


def build_model(
    tokenizer,
    size: str | Mapping[str, Any] = "student",
    family: str = "gpt2",
    seed: int = 0,
    *,
    max_positions: int = 256,
):
    """Build a randomly initialised causal LM whose vocabulary and special-token ids match `tokenizer`.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Tokenizer whose `len()`, `eos_token_id`, `bos_token_id` and `pad_token_id` define the model's vocabulary
            and generation settings (e.g. from [`~promptkd_trainer.demo.tokenizer.train_tokenizer`]).
        size (`str` or `Mapping`, *optional*, defaults to `"student"`):
            A key of [`MODEL_SIZES`] (`"teacher"`, `"student"`, `"tiny"`) or a mapping with `n_layer`, `hidden` and
            optionally `n_head` (default `hidden // 32`, at least 1), `intermediate` (MLP width; default
            `4 * hidden` for GPT-2 and `3 * hidden` for Llama's gated MLP, which has three matrices),
            `n_kv_head` (Llama only; default `n_head`).
        family (`str`, *optional*, defaults to `"gpt2"`):
            `"gpt2"` ([`~transformers.GPT2LMHeadModel`], learned positions, GELU MLP) or `"llama"`
            ([`~transformers.LlamaForCausalLM`], RoPE, RMSNorm, SwiGLU).
        seed (`int`, *optional*, defaults to `0`):
            Seed for the weight initialisation (`torch.manual_seed`); the global RNG is restored afterwards.
        max_positions (`int`, *optional*, defaults to `256`):
            Maximum sequence length (prompt + completion, plus PromptKD's virtual tokens).

    Returns:
        [`~transformers.PreTrainedModel`]: The model in train mode, fp32, with dropout 0 and tied input/output
        embeddings; `generation_config` has `pad_token_id`/`eos_token_id` set and greedy decoding.
    """
    if isinstance(size, str):
        if size not in MODEL_SIZES:
            raise ValueError(f"Unknown size {size!r}; pass one of {sorted(MODEL_SIZES)} or a mapping.")
        spec = dict(MODEL_SIZES[size])
    else:
        spec = dict(size)
    if "n_layer" not in spec or "hidden" not in spec:
        raise ValueError(f"A size mapping needs `n_layer` and `hidden`, got {sorted(spec)}.")
    n_layer, hidden = int(spec["n_layer"]), int(spec["hidden"])
    n_head = int(spec.get("n_head", max(1, hidden // 32)))
    if hidden % n_head:
        raise ValueError(f"`hidden` ({hidden}) must be divisible by `n_head` ({n_head}).")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": pad_id}
    vocab_size = len(tokenizer)

    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=hidden,
            n_layer=n_layer,
            n_head=n_head,
            n_inner=int(spec.get("intermediate", 4 * hidden)),
            # GPT-2's tanh-approximated GELU ("gelu_new") as one fused PyTorch op: several times faster on CPU.
            activation_function="gelu_pytorch_tanh",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **ids,
        )
        model_cls = GPT2LMHeadModel
    elif family == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            max_position_embeddings=max_positions,
            hidden_size=hidden,
            intermediate_size=int(spec.get("intermediate", 3 * hidden)),
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=int(spec.get("n_kv_head", n_head)),
            attention_dropout=0.0,
            tie_word_embeddings=True,
            **ids,
        )
        model_cls = LlamaForCausalLM
    else:
        raise ValueError(f"Unknown model family {family!r}; expected one of {MODEL_FAMILIES}.")

    # Seed locally so that building a model does not move the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    # GPT2LMHeadModel's class name matches no entry of transformers' loss mapping, so every loss call would warn
    # "`loss_type=None` ... unrecognized" before falling back to this same causal-LM loss.
    model.loss_type = "ForCausalLM"
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.do_sample = False
    logger.info(f"Built a {family} model ({n_layer} layers x {hidden} hidden): {count_parameters(model):,} parameters")
    return model


def count_parameters(model: torch.nn.Module, embeddings: bool = True) -> int:
    """Number of distinct parameters of `model` (tied weights counted once).

    With `embeddings=False`, the input embedding table (tied to the LM head here) and learned position embeddings
    are left out: the capacity that grows with depth and width, the usual way to compare model sizes.
    """
    skip = set()
    if not embeddings:
        skip.add(id(model.get_input_embeddings().weight))
        skip |= {id(m.weight) for name, m in model.named_modules() if name.endswith("wpe")}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)

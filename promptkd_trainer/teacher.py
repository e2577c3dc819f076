# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The teacher's soft prompt: a PEFT prompt-tuning adapter on a frozen teacher, and the forwards that use it.

One set of teacher weights serves both the prompted and the un-prompted teacher: the prompt is prepended as input
embeddings, and the un-prompted forward calls the same base model without them (no second copy in memory).
"""

from __future__ import annotations

import os

import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from peft.utils.integrations import gather_params_ctx
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging


logger = logging.get_logger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _has_tokenizer(name_or_path: str | None) -> bool:
    """Whether `AutoTokenizer.from_pretrained(name_or_path)` can load a tokenizer from this local directory.

    A bare `vocab.json` + `merges.txt` (e.g. a copied GPT-2 vocabulary) is not enough for AutoTokenizer.
    """
    if not name_or_path or not os.path.isdir(name_or_path):
        return False
    return any(os.path.exists(os.path.join(name_or_path, f)) for f in _TOKENIZER_FILES)


def prompt_init_token_ids(tokenizer: PreTrainedTokenizerBase, text: str, num_virtual_tokens: int) -> list[int]:
    """Token ids that initialise the prompt: `tokenizer(text)["input_ids"]` repeated or truncated to the prompt length.

    This is the official code's rule (`utils.py` L237-270, shared/research/paper.md §1.6) and PEFT's TEXT init.
    """
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise ValueError(f"`prompt_init_text` {text!r} tokenizes to no tokens; pass a non-empty text or None.")
    reps = -(-num_virtual_tokens // len(ids))
    return (ids * reps)[:num_virtual_tokens]


def build_prompted_teacher(
    teacher: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    num_virtual_tokens: int = 7,
    prompt_init_text: str | None = "Suppose you are a student.",
) -> PeftModel:
    """Wrap a frozen teacher with a trainable PEFT prompt-tuning adapter.

    Args:
        teacher (`PreTrainedModel` or `PeftModel`):
            A causal LM, or a `PeftModel` that already carries a prompt-tuning adapter (to continue a run); the latter
            is returned as is, with only its prompt trainable.
        tokenizer (`PreTrainedTokenizerBase`):
            The teacher's tokenizer, used for the TEXT initialisation when the teacher's own directory holds none.
        num_virtual_tokens (`int`, defaults to `7`):
            Prompt length (official code: 7).
        prompt_init_text (`str`, *optional*, defaults to `"Suppose you are a student."`):
            Initialisation text; `None` initialises randomly.

    Returns:
        `PeftModel`: the teacher with its prompt-tuning adapter; every base parameter has `requires_grad=False`.
    """
    if isinstance(teacher, PeftModel):
        cfg = teacher.active_peft_config
        if not isinstance(cfg, PromptTuningConfig):
            raise ValueError(
                f"The teacher carries a {type(cfg).__name__} adapter; PromptKD needs a prompt-tuning adapter. Merge it "
                "(`teacher.merge_and_unload()`) and pass the plain model, or pass a model with a PromptTuningConfig."
            )
        if cfg.num_virtual_tokens != num_virtual_tokens:
            raise ValueError(
                f"The teacher's prompt has {cfg.num_virtual_tokens} virtual tokens but `num_virtual_tokens` is "
                f"{num_virtual_tokens}. Set `num_virtual_tokens={cfg.num_virtual_tokens}` in PromptKDConfig."
            )
        # PEFT loads adapters in inference mode (and refuses `is_trainable=True` for prompt learning): re-enable
        # training of the prompt explicitly.
        cfg.inference_mode = False
        prompted = teacher
    else:
        if prompt_init_text is None:
            peft_config = PromptTuningConfig(
                task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.RANDOM,
            )
        else:
            # PEFT's TEXT init loads the tokenizer from a path; prefer the teacher's own (official code uses the
            # teacher's tokenizer), else the trainer's processing class, which shares the vocabulary.
            candidates = (getattr(teacher, "name_or_path", None), getattr(tokenizer, "name_or_path", None))
            tok_path = next((c for c in candidates if _has_tokenizer(c)), None)
            peft_config = PromptTuningConfig(
                task_type=TaskType.CAUSAL_LM,
                num_virtual_tokens=num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.TEXT if tok_path else PromptTuningInit.RANDOM,
                prompt_tuning_init_text=prompt_init_text,
                tokenizer_name_or_path=tok_path,
            )
        prompted = get_peft_model(teacher, peft_config)
        if prompt_init_text is not None and peft_config.prompt_tuning_init != PromptTuningInit.TEXT:
            # No tokenizer on disk (e.g. an in-memory tokenizer): same rule as PEFT's TEXT init, done here.
            ids = torch.tensor(prompt_init_token_ids(tokenizer, prompt_init_text, num_virtual_tokens))
            embed = prompted.get_base_model().get_input_embeddings()
            # Under ZeRO-3 the table is partitioned (shape [0]) until gathered, as PEFT's own TEXT init does.
            with torch.no_grad(), gather_params_ctx(embed.weight, modifier_rank=None):
                weight = embed(ids.to(embed.weight.device)).detach().float()
                prompt_parameter(prompted).data.copy_(weight)
            peft_config.prompt_tuning_init = PromptTuningInit.TEXT
    for name, param in prompted.named_parameters():
        param.requires_grad_("prompt_encoder" in name)
    return prompted


def prompt_parameter(prompted: PeftModel) -> torch.nn.Parameter:
    """The soft prompt's only trainable tensor, `[num_virtual_tokens, hidden]`."""
    return prompted.prompt_encoder[prompted.active_adapter].embedding.weight


def num_virtual_tokens(prompted: PeftModel) -> int:
    return prompted.active_peft_config.num_virtual_tokens


def prepend_prompt(
    prompted: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings `[prompt; embed(input_ids)]` and the attention mask extended by the virtual tokens.

    Identical to what PEFT's prompt-tuning forward feeds the base model (shared/research/stack.md §4: max abs diff 0),
    without PEFT's forward, which drops `position_ids` with a warning on every call.
    """
    base = prompted.get_base_model()
    embeds = base.get_input_embeddings()(input_ids)
    batch = input_ids.shape[0]
    prompt = prompted.get_prompt(batch_size=batch).to(embeds.dtype)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    prefix_mask = attention_mask.new_ones(batch, prompt.shape[1])
    return torch.cat([prompt, embeds], dim=1), torch.cat([prefix_mask, attention_mask], dim=1)


def slice_prompted_logits(logits: torch.Tensor, n_virtual: int) -> torch.Tensor:
    """Drop the logits of the virtual tokens so that position t lines up with the student's position t.

    The prompted teacher sees `[v_1..v_n, x_1..x_L]`; its logits at index n + t predict x_{t+1}, as the student's at t
    (official code: `logits[:, prompt_len:, :]`, shared/research/paper.md §5.1).
    """
    return logits[:, n_virtual:, :]


def prompted_teacher_logits(
    prompted: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, logits_to_keep: int = 0
) -> torch.Tensor:
    """Logits of the prompted teacher, `[B, L, V]`, aligned with the student's positions.

    Inputs must be right-padded: with left padding the pads would sit between the prompt and the text and shift
    the positions of the real tokens per example (shared/research/paper.md §5.2). `logits_to_keep=k > 0` computes
    only the last k positions' logits (k <= L, so they are all text positions), as transformers' argument does.
    """
    embeds, mask = prepend_prompt(prompted, input_ids, attention_mask)
    kwargs = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
    logits = prompted.get_base_model()(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **kwargs).logits
    return logits if logits_to_keep else slice_prompted_logits(logits, num_virtual_tokens(prompted))


def plain_teacher_logits(
    prompted: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, logits_to_keep: int = 0
) -> torch.Tensor:
    """Logits of the same teacher weights without the prompt (the regulariser's target); `prompted` may also be a
    plain model (no prompt at all)."""
    base = prompted.get_base_model() if isinstance(prompted, PeftModel) else prompted
    kwargs = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
    return base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits


@torch.no_grad()
def generate_with_prompt(
    prompted: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **generate_kwargs
) -> torch.Tensor:
    """Sample from the prompted teacher with the KV cache on; returns only the new tokens `[B, N]`.

    `PeftModel.generate` is wrong for prompt tuning on transformers 5.x + peft 0.21 when the cache is on: the virtual
    tokens are re-inserted at every decoding step (shared/research/stack.md §4). Calling the base model's `generate`
    with the prompt already prepended as input embeddings is correct and keeps the cache. Left-padded prompts are fine
    here: `generate` derives positions from the attention mask.
    """
    embeds, mask = prepend_prompt(prompted, input_ids, attention_mask)
    return prompted.get_base_model().generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)

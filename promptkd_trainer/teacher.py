# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The teacher's soft prompt: a PEFT prompt-tuning adapter on a frozen teacher, and the forwards that use it.

One set of teacher weights serves both the prompted and the un-prompted teacher: the prompt is prepended as input
embeddings, and the un-prompted forward calls the same base model without them (no second copy in memory).
"""

from __future__ import annotations

import inspect
import os

import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from peft.utils.integrations import gather_params_ctx
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, get_scheduler
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.utils import logging
from trl.trainer.utils import disable_dropout_in_model

from .distributed import shard_teacher_zero3, teacher_numel


logger = logging.get_logger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def has_tokenizer(name_or_path: str | None) -> bool:
    """Whether `AutoTokenizer.from_pretrained(name_or_path)` can load a tokenizer from this local directory.

    A bare `vocab.json` + `merges.txt` (e.g. a copied GPT-2 vocabulary) is not enough for AutoTokenizer.
    """
    if not name_or_path or not os.path.isdir(name_or_path):
        return False
    return any(os.path.exists(os.path.join(name_or_path, f)) for f in _TOKENIZER_FILES)


def prompt_init_token_ids(tokenizer: PreTrainedTokenizerBase, text: str, num_virtual_tokens: int) -> list[int]:
    """Token ids that initialise the prompt: `tokenizer(text)["input_ids"]` repeated or truncated to the prompt length.

    This is the official code's rule (gmkim-ai/PromptKD @ 383182f4, `utils.py` L237-270) and PEFT's TEXT init.
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
                f"The teacher carries a {type(cfg).__name__} adapter; PromptKD needs a prompt-tuning adapter. Merge "
                "it (`teacher.merge_and_unload()`) and pass the plain model, or pass a model with a "
                "PromptTuningConfig."
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
            tok_path = next((c for c in candidates if has_tokenizer(c)), None)
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
            # The config stays RANDOM: a TEXT config without a tokenizer path cannot be reloaded by
            # `PeftModel.from_pretrained` (`tokenizer_name_or_path can't be None`); the init text stays recorded.
    for name, param in prompted.named_parameters():
        param.requires_grad_("prompt_encoder" in name)
    prompt = prompt_parameter(prompted)
    if prompt.dtype != torch.float32:
        # fp32 master weights whatever the teacher's dtype (e.g. a prompted teacher cast with `.to(torch.bfloat16)`):
        # the prompt's small AdamW updates would round away in half precision; it is cast to the teacher's dtype
        # where it enters the forward (`prepend_prompt`).
        prompt.data = prompt.data.float()
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

    Identical to what PEFT's prompt-tuning forward feeds the base model (`tests/test_trainer.py` checks the logits).
    It is written here for generation: `PeftModel.generate` with the KV cache on re-inserts the virtual tokens at
    every decoding step on transformers 5.x + peft 0.21 (checked on transformers 5.24.0, peft 0.21.2). transformers
    5 passes the cache to `prepare_inputs_for_generation` as `cache`, while PEFT's
    `PeftModelForCausalLM.prepare_inputs_for_generation` looks for `past_key_values`, finds none and injects the
    prompt again, so each step feeds `num_virtual_tokens + 1` positions. The same symptom (correct output only with
    `use_cache=False`) was reported on transformers 4.x as huggingface/peft#1391 and huggingface/peft#2123.
    [`generate_with_prompt`] and the training forwards share this function so that the prompted teacher is sampled
    and scored on the same inputs.
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
    (official code @ 383182f4, `train_promptkd.py` "2. Training Teacher": `outputs.logits[:, args.prompt_len:, :]`).
    """
    return logits[:, n_virtual:, :]


def prompted_teacher_logits(
    prompted: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, logits_to_keep: int = 0
) -> torch.Tensor:
    """Logits of the prompted teacher, `[B, L, V]`, aligned with the student's positions.

    Inputs must be right-padded: with left padding the pads would sit between the prompt and the text and shift
    the positions of the real tokens per example (the official code right-pads its training sequences for the same
    reason, `train_promptkd.py` "1. Sampling from Student"). `logits_to_keep=k > 0` computes
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
    tokens are re-inserted at every decoding step (see [`prepend_prompt`]; the package's test
    `test_prompted_generation_matches_no_cache_reference` shows it). Calling the base model's `generate` with the
    prompt already prepended as input embeddings is correct and keeps the cache. Left-padded prompts are fine here:
    `generate` derives positions from the attention mask.
    """
    embeds, mask = prepend_prompt(prompted, input_ids, attention_mask)
    return prompted.get_base_model().generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)


# ---------------------------------------------------------------------------------------------- loading and checks


def load_teacher(teacher_model: str | PreTrainedModel | PeftModel | None, args) -> PreTrainedModel | PeftModel:
    """The teacher given to the trainer, loaded with `teacher_model_init_kwargs` when it is a name or a path.

    Args:
        teacher_model (`str`, `PreTrainedModel` or `PeftModel`, *optional*):
            The teacher, or its id / path; defaults to `args.teacher_model_name_or_path`.
        args ([`PromptKDConfig`]):
            The trainer's configuration.
    """
    if teacher_model is None:
        teacher_model = args.teacher_model_name_or_path
    if teacher_model is None:
        raise ValueError("A teacher is required: pass `teacher_model` or set `teacher_model_name_or_path`.")
    if isinstance(teacher_model, str):
        kwargs = dict(args.teacher_model_init_kwargs or {})
        kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        revision = getattr(args, "teacher_model_revision", None)  # DistillationConfig's field
        if revision is not None:
            if kwargs.get("revision") not in (None, revision):
                raise ValueError(
                    f"`teacher_model_revision={revision!r}` and `teacher_model_init_kwargs['revision']="
                    f"{kwargs['revision']!r}` disagree: set the teacher's revision in one place."
                )
            kwargs["revision"] = revision
        dtype = kwargs.get("dtype")
        if isinstance(dtype, str) and dtype != "auto":
            kwargs["dtype"] = getattr(torch, dtype)
        try:
            return AutoModelForCausalLM.from_pretrained(teacher_model, **kwargs)
        except (OSError, ValueError) as err:
            if os.path.exists(teacher_model):
                raise
            raise OSError(
                f"Cannot load the teacher {teacher_model!r}: there is no such local folder, and it could not be "
                f"loaded as a Hugging Face Hub model id either ({type(err).__name__}: {err}). Check the path "
                "(`teacher_model` / `teacher_model_name_or_path`)."
            ) from err
    if getattr(args, "teacher_model_revision", None) is not None:
        raise ValueError(
            "`teacher_model_revision` only applies when the teacher is given as a string; the teacher passed is "
            "already instantiated. Remove `teacher_model_revision`."
        )
    if args.teacher_model_init_kwargs:
        raise ValueError(
            "`teacher_model_init_kwargs` only applies when the teacher is given as a string; the teacher passed is "
            "already instantiated. Remove `teacher_model_init_kwargs`."
        )
    return teacher_model


def base_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The transformers model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM's forward takes `logits_to_keep` (PEFT wrappers forward it to their base model)."""
    return "logits_to_keep" in inspect.signature(base_model(model).forward).parameters


def has_active_dropout(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def check_can_carry_prompt(teacher) -> None:
    """Refuse, with the trainer's "not causal" error, a teacher that PEFT's causal-LM prompt wrapper cannot take.

    A model without `prepare_inputs_for_generation` (an encoder such as `BertForMaskedLM` passed as an object; from a
    folder, `AutoModelForCausalLM` loads a `BertLMHeadModel`, which has it) would otherwise fail inside
    `get_peft_model` with a bare `AttributeError`.
    """
    base = base_model(teacher)
    if hasattr(base, "prepare_inputs_for_generation"):
        return
    from .checks import check_causal  # checks.py imports this module

    check_causal(base, "teacher")
    raise ValueError(
        f"The teacher ({type(base).__name__}) cannot generate (it has no `prepare_inputs_for_generation`). PromptKD "
        "needs causal decoder-only language models (GPT-2, OPT, Llama, Qwen, ...) as teacher, loaded with "
        "`AutoModelForCausalLM`."
    )


def prepare_teacher(teacher, tokenizer: PreTrainedTokenizerBase, args, accelerator):
    """Frozen teacher with its soft prompt, placed (or ZeRO-3 partitioned) and set up for the prompt's backward.

    Steps: drop dropout (`disable_dropout`); wrap with the prompt-tuning adapter (none when `num_virtual_tokens=0`);
    partition across ranks under ZeRO-3, else move to the device (DDP / ZeRO-1/2 keep a full teacher on every rank,
    as the official runs do); enable gradient checkpointing for the backward to the prompt.

    Returns:
        `(teacher, engine, train_mode)`: the teacher (`PeftModel` with the prompt, or the plain frozen model), the
        ZeRO-3 engine that partitions it (keep a reference; `None` otherwise), and whether the forward that
        back-propagates to the prompt runs in train mode.
    """
    if args.disable_dropout:
        disable_dropout_in_model(teacher)
    if args.num_virtual_tokens > 0:
        check_can_carry_prompt(teacher)
        teacher = build_prompted_teacher(teacher, tokenizer, args.num_virtual_tokens, args.prompt_init_text)
    elif isinstance(teacher, PeftModel):
        raise ValueError("`num_virtual_tokens=0` turns the prompt off; pass the teacher without its adapter.")
    else:
        teacher.requires_grad_(False)
    engine = None
    if is_deepspeed_zero3_enabled():
        engine = shard_teacher_zero3(teacher, accelerator)
        logger.info(f"Teacher partitioned by ZeRO-3: {teacher_numel(base_model(teacher))}")
    else:
        teacher.to(accelerator.device)
    teacher.eval()
    checkpointing = args.gradient_checkpointing
    if args.teacher_gradient_checkpointing is not None:
        checkpointing = args.teacher_gradient_checkpointing
    # Without a prompt nothing back-propagates through the teacher.
    checkpointing = checkpointing and args.num_virtual_tokens > 0
    if checkpointing:
        # The backward to the prompt runs through the whole frozen teacher; without checkpointing it keeps all of
        # the teacher's activations (the official OPT/Llama scripts checkpoint both models). The prompt makes the
        # input embeddings require grad, which reentrant checkpointing needs.
        base_model(teacher).gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs or {"use_reentrant": False}
        )
    # transformers checkpoints only in train mode, and the official code runs the prompted teacher in train mode in
    # the prompt step ("2. Training Teacher": `teacher_model.train()`); with dropout off, train mode changes nothing
    # else.
    return teacher, engine, checkpointing or has_active_dropout(teacher)


# ---------------------------------------------------------------------------------------------- the prompt's optimizer


def create_prompt_optimizer(prompt: torch.nn.Parameter, args, num_training_steps: int):
    """The prompt's own AdamW and scheduler, as the official code gives the teacher engine its own optimizer (weight
    decay 0.01, the prompt decayed) and the student's warm-up / constant schedule.

    Returns:
        `(torch.optim.AdamW, LambdaLR)`.
    """
    lr = args.learning_rate if args.teacher_learning_rate is None else args.teacher_learning_rate
    optimizer = torch.optim.AdamW(
        [prompt],
        lr=lr,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.teacher_weight_decay,
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.get_warmup_steps(num_training_steps),
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )
    return optimizer, scheduler


def backward_prompt_loss(loss: torch.Tensor, accelerator) -> None:
    """Back-propagate the prompt's own loss (paper order) through the student's fp16 loss scaler when there is one.

    The scaler is accelerate's `GradScaler` (fp16 without DeepSpeed); not `accelerator.backward`, which would also
    divide by the accumulation steps and, under DeepSpeed, run the student engine's backward. Under fp16 the
    teacher's activations' gradients would underflow without it, as the student's would.
    """
    scaler = getattr(accelerator, "scaler", None)
    (scaler.scale(loss) if scaler is not None else loss).backward()


def step_prompt(teacher: PeftModel, optimizer, scheduler, accelerator, args) -> torch.Tensor | None:
    """All-reduce, unscale, clip and apply the prompt's accumulated gradient, then advance its scheduler.

    Under fp16 the gradient carries the loss scale (from [`backward_prompt_loss`], or from `accelerator.backward` in
    joint order): it is unscaled before clipping, and an update with an inf/NaN gradient is skipped by the scaler, as
    the student's is. This runs before the student's `scaler.update()`, which lowers the scale after an overflow.

    Returns:
        `torch.Tensor` or `None`: the prompt's gradient norm before clipping (`None` without `max_grad_norm`).
    """
    param = prompt_parameter(teacher)
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    if accelerator.num_processes > 1:
        # The prompt lives outside the DDP/DeepSpeed engine; each rank's loss is its token sum over the global count
        # divided by num_processes, so the mean over ranks is the global gradient (as DDP would compute).
        torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
        param.grad.div_(accelerator.num_processes)
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    if args.max_grad_norm is not None and args.max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_([param], args.max_grad_norm).detach().float()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skips the update on an inf/NaN gradient
    # The schedule follows the optimizer steps of the run, skipped or not, as the student's does with the Trainer's
    # default fused AdamW (whose skipped steps accelerate does not see).
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm

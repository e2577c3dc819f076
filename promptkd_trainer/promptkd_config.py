# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Configuration of [`PromptKDTrainer`]."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any

from transformers.utils import is_torch_bf16_gpu_available, logging
from trl import SFTConfig

from .distributed import init_cpu_process_group
from .divergences import DIVERGENCE_TYPES


logger = logging.get_logger(__name__)

# Citations used in help texts: the official code, github.com/gmkim-ai/PromptKD @ 383182f (its `arguments.py` and
# `scripts/{gpt2,opt,llama}/promptkd/*.sh`).
_PKD = "official PromptKD code (gmkim-ai/PromptKD)"

UPDATE_ORDERS = ("paper", "joint")

# The official code samples with top_k=0, top_p=1.0, temperature 1.0 (`train_promptkd.py`, block "1. Sampling from
# Student"): the student's own distribution. Any other value of these fields samples from a different distribution.
PAPER_SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": None, "repetition_penalty": 1.0}

DEFAULT_COMPLETION_LENGTH = 256  # official max_length 512 - max_prompt_length 256

# The plain KLs are the end points of the generalized JSD (GKD, Agarwal et al. 2024, and DistillationConfig's `beta`).
BETA_OF_KL = {"forward_kl": 0.0, "reverse_kl": 1.0}

# `generation_kwargs` keys that leave the sampled distribution as it is (everything else may change it).
SAMPLING_NEUTRAL_KWARGS = {"cache_implementation", "use_cache", "disable_compile", "compile_config", "bos_token_id"}

# `generation_kwargs` keys that would break the sampled batches or duplicate a field that is the single source of a
# value (the completion budget, the end and pad tokens that also cut and pad the samples).
GENERATION_KWARGS_REFUSED = {
    "max_new_tokens": "set `max_completion_length` (or its alias `max_new_tokens`) instead",
    "max_length": "set `max_completion_length` (and `max_length` for prompt + completion) instead",
    "num_return_sequences": "PromptKD samples one completion per prompt",
    "return_dict_in_generate": "the trainer reads the generated token ids",
    "eos_token_id": "the end tokens are the tokenizer's and the model's generation config's, and also cut the samples",
    "pad_token_id": "the pad token is the tokenizer's, and also pads the training batches",
}

# DistillationConfig's vLLM block (TRL >= 1.10), with TRL's defaults: accepted so that TRL configs parse, refused when
# `use_vllm=True` (see `_validate_vllm`).
VLLM_DEFAULTS = {
    "vllm_mode": "colocate",
    "vllm_model_impl": "vllm",
    "vllm_enable_sleep_mode": False,
    "vllm_structured_outputs_regex": None,
    "vllm_server_base_url": None,
    "vllm_server_host": "0.0.0.0",
    "vllm_server_port": 8000,
    "vllm_server_timeout": 240.0,
    "vllm_group_port": 51216,
    "vllm_gpu_memory_utilization": 0.3,
    "vllm_max_model_length": None,
    "vllm_tensor_parallel_size": 1,
}


def _is_int(value) -> bool:  # bool is an int subclass: `num_virtual_tokens=True` must not pass as 1
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:  # a finite number: inf and nan pass every `>=` / `>` test otherwise
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class PromptKDConfig(SFTConfig):
    r"""
    Configuration class for [`PromptKDTrainer`].

    PromptKD (Kim, Jang, Yang, Findings of EMNLP 2024, [arXiv 2402.12842](https://huggingface.co/papers/2402.12842))
    trains a soft prompt of a few virtual tokens on a frozen teacher together with the student. Each step:

    1. the student samples completions to the batch's prompts (on-policy, `top_k=0`, `top_p=1.0`, `temperature=1.0`);
    2. the prompt is trained with *student guidance*:
       `D_prompt(prompted teacher, student) + w(t) * D_reg(prompted teacher, teacher without prompt)`,
       with `w(t) = reg_coef * (1 - (global_step + 1) / max_steps)` (the official code counts the step being
       computed from 1: `global_step = 1` at the first update);
    3. the student is trained with `D_student(student, prompted teacher)` on the same sampled sequences.

    Each divergence is named from the point of view of its *trainable* distribution P (the prompted teacher for the
    prompt and regulariser terms, the student for the student term) and its fixed target Q: `"reverse_kl"` is
    KL(P || Q), `"forward_kl"` is KL(Q || P). The defaults (`"reverse_kl"` everywhere) are the official code's:
    KL(prompted teacher || student), KL(prompted teacher || teacher) and KL(student || prompted teacher).

    This class only holds the parameters specific to PromptKD; see [`~trl.SFTConfig`] and
    [`~transformers.TrainingArguments`] for the rest. Fields shared with TRL's `GKDConfig` (`trl.experimental.gkd`) and
    `DistillationConfig` (`trl`, stable since TRL 1.10) keep their names and meanings, so a GKD or DistillationTrainer
    script can switch by changing its imports. Settings that cannot apply to PromptKD (`use_vllm=True`,
    `max_tool_calling_iterations`) are refused with the reason. These shared fields keep the paper's defaults instead
    of TRL's, so a script that relies on TRL's defaults trains differently after the switch; set them explicitly to
    keep TRL's behaviour:

    | field | `GKDConfig` | `DistillationConfig` | `PromptKDConfig` | why (official code) |
    |---|---|---|---|---|
    | `lmbda` | `0.5` | none | `1.0` | always on-policy |
    | `beta` | `0.5` | `1.0` | `1.0` | student term KL(student \|\| prompted teacher) |
    | `temperature` | `0.9` | `1.0` | `1.0` | sampling temperature 1 (sampling only, see below) |
    | `max_new_tokens` | `128` | `512` | `256` | `max_length` 512 - `max_prompt_length` 256 |
    | `learning_rate` | `2e-5` | `1e-6` | `5e-5` | GPT-2 base script (others: 1e-5, 5e-6) |
    | `max_length` | `1024` | none | `512` | `max_length` 512 (prompt + completion) |
    | `disable_dropout` | `True` | `False` | `False` | both models train with their dropout |
    | `shuffle_dataset` | `False` | `True` | `True` | the training set is shuffled every epoch |

    `max_new_tokens` is `max_completion_length` in `DistillationConfig` (both names are accepted and hold one
    value); a completion is cut so that prompt + completion fits in `max_length`, which `DistillationConfig` does not
    have. `temperature` applies to sampling only, as in GKD; `DistillationConfig` also divides the loss's logits by
    it, which `loss_temperature` does here. `lmbda` does not exist in `DistillationConfig` (always on-policy).
    `shuffle_dataset` has `DistillationConfig`'s meaning (`False` reads the training set in order); `GKDConfig`'s
    `False` only skips a pre-shuffle, and its sampler still shuffles.

    `beta` is the one knob of the student term, as in `DistillationConfig` and GKD's generalized JSD: `0.0` is the
    forward KL KL(prompted teacher || student), `1.0` the reverse KL KL(student || prompted teacher) (the default),
    values in between the generalized JSD. `student_loss_type` is resolved from it (and the other way round); setting
    both to values that disagree is an error. Sampling settings other than the official ones (`temperature` 1,
    `top_k` 0, `top_p` 1, no `min_p`, no `repetition_penalty`, no sampling `generation_kwargs`) make the student sample
    from a distribution other than its own: the run is then no longer on-policy distillation as in the paper, and a
    warning says so.

    Parameters:
        > Parameters that control the teacher and its soft prompt

        teacher_model_name_or_path (`str`, *optional*):
            Teacher model id or local path, used when `teacher_model` is not passed to the trainer.
        teacher_model_revision (`str`, *optional*):
            Revision (branch, tag or commit) of the teacher when it is loaded from a string.
        teacher_model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the teacher is loaded from a string.
        num_virtual_tokens (`int`, *optional*, defaults to `7`):
            Length of the teacher's soft prompt (official code: `prompt_len=7`). `0` turns the prompt off: plain
            on-policy distillation from the frozen teacher (GKD with `lmbda=1`, `beta=1`), PromptKD's ablation
            baseline.
        prompt_init_text (`str`, *optional*, defaults to `"Suppose you are a student."`):
            Text whose token embeddings initialise the soft prompt (PEFT `PromptTuningInit.TEXT`; ids repeated or
            truncated to `num_virtual_tokens`). `None` initialises randomly; an empty text is an error.
        teacher_learning_rate (`float`, *optional*):
            Learning rate of the soft prompt. Defaults to `learning_rate` (the official scripts use the same value).
        teacher_weight_decay (`float`, *optional*, defaults to `0.01`):
            AdamW weight decay of the soft prompt (official code: 0.01, the prompt is decayed).
        teacher_gradient_checkpointing (`bool`, *optional*):
            Checkpoint the teacher's activations in the forward that back-propagates to the prompt; defaults to
            `gradient_checkpointing`. The backward to the prompt otherwise keeps all of the teacher's activations.

        > Parameters that control the losses

        student_loss_type (`str`, *optional*):
            Divergence of the student term. Defaults to the one `beta` names (`"reverse_kl"` at `beta=1`, the default;
            `"forward_kl"` at 0; `"jsd"` in between). `"reverse_kl"` / `"forward_kl"` with a `beta` other than 1 / 0
            is an error; the `"skew_*"` types take no `beta`.
        prompt_loss_type (`str`, *optional*, defaults to `"reverse_kl"`):
            Divergence of the prompt term, KL(prompted teacher || student) by default.
        reg_loss_type (`str`, *optional*, defaults to `"reverse_kl"`):
            Divergence of the regulariser, KL(prompted teacher || teacher without prompt) by default.
        reg_coef (`float`, *optional*, defaults to `1.0`):
            Regulariser coefficient; its weight decays linearly, `reg_coef * (1 - (global_step + 1) / max_steps)`,
            from `reg_coef * (1 - 1 / max_steps)` at the first step to 0 at the last.
        beta (`float`, *optional*, defaults to `1.0`):
            The student term's divergence, as `DistillationConfig.beta`: generalized JSD interpolation, `0.0` forward
            KL, `1.0` reverse KL (the paper's), JSD in between. Defaults to the value `student_loss_type` implies
            (0.5 for `"jsd"`); stays `None` with a `"skew_*"` student term, which takes no `beta`.
        prompt_beta (`float`, *optional*, defaults to `0.5`):
            Generalized JSD interpolation of `"jsd"` prompt and regulariser terms (a warning is logged when it is set
            while no such term is in use).
        skew_alpha (`float`, *optional*, defaults to `0.1`):
            Mixing weight of the skew KL losses (DistiLLM's alpha).
        loss_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature applied to the logits inside every divergence; independent of the sampling `temperature`.
        update_order (`str`, *optional*, defaults to `"paper"`):
            `"paper"`: prompt loss, backward and prompt step first, then the student loss with the updated prompt
            (official code). `"joint"`: one backward for both terms with the pre-update prompt (faster, opt-in).
        divergence_chunk_size (`int`, *optional*):
            Number of token positions processed at once by the divergences (bounds their extra memory). Defaults to
            one fp32 chunk of ~32 MB, `2**23 // vocab_size` positions.
        truncate_vocab (`bool`, *optional*, defaults to `False`):
            Compare the distributions on the shared vocabulary when teacher and student vocab sizes differ.
        save_on_signal (`bool`, *optional*, defaults to `True`):
            On SIGTERM (sent by cluster schedulers before they preempt a job) or SIGINT (Ctrl-C), finish the current
            optimizer step, save a checkpoint (whatever `save_strategy`) and exit with status 128 + the signal's
            number; `resume_from_checkpoint=True` continues from it. `False` keeps Python's default handling.

        > Parameters that control generation

        lmbda (`float`, *optional*, defaults to `1.0`):
            Probability of a step being on-policy (student samples); otherwise the dataset's completions are used.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of on-policy generation.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k of on-policy generation (0 disables it).
        top_p (`float`, *optional*, defaults to `1.0`):
            Top-p of on-policy generation.
        max_completion_length (`int`, *optional*, defaults to `256`):
            Maximum number of sampled tokens, `DistillationConfig`'s name (official code: max_length 512 -
            max_prompt_length 256). Capped per batch so that prompt + completion fits in `max_length`.
        max_new_tokens (`int`, *optional*, defaults to `256`):
            GKD's name of `max_completion_length`; the two always hold the same value (setting both to different
            values is an error).
        min_p (`float`, *optional*):
            Minimum token probability relative to the most likely token, for on-policy sampling (not the paper's).
        repetition_penalty (`float`, *optional*, defaults to `1.0`):
            Repetition penalty of on-policy sampling (1.0: none, the paper's).
        generation_kwargs (`dict[str, Any]`, *optional*):
            More [`~transformers.GenerationConfig`] fields for on-policy sampling; they override the fields above.
            Keys that would change the batch layout or duplicate a single source are refused (`max_new_tokens`,
            `max_length`, `num_return_sequences`, `return_dict_in_generate`, `eos_token_id`, `pad_token_id`).
        cache_implementation (`str`, *optional*):
            `cache_implementation` of on-policy sampling (`GenerationConfig`).
        chat_template_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments of `apply_chat_template` when conversational prompts are rendered (e.g.
            `{"enable_thinking": False}`).
        ds3_gather_for_generation (`bool`, *optional*, defaults to `True`):
            Under DeepSpeed ZeRO-3, gather the student's weights for sampling (faster); `False` samples with the
            partitioned weights, for students that do not fit on one device.
        use_vllm (`bool`, *optional*, defaults to `False`):
            `True` is refused: vLLM student sampling is not implemented. The `vllm_*` fields of `DistillationConfig`
            are accepted so that TRL configs parse; a non-default value logs a warning that it is unused.
        max_tool_calling_iterations (`int`, *optional*):
            Refused when set: PromptKD samples single-turn completions without tools.
        log_completions (`bool`, *optional*, defaults to `False`):
            Log the on-policy (prompt, completion) pairs of the latest optimizer step at every logging step, as
            `DistillationTrainer` does: printed with `rich` if installed, written to
            `output_dir/completions/completions_<step>.parquet`, and sent to wandb / trackio when they are in
            `report_to`.
        num_completions_to_print (`int`, *optional*):
            Number of those pairs printed with `rich`; all when `None`.
        log_unique_prompts (`bool`, *optional*, defaults to `False`):
            Send each prompt once to wandb / trackio.
        eval_on_policy (`bool`, *optional*):
            What `eval_loss` (the student term) is measured on. `True`: completions the student samples for the eval
            prompts, as `DistillationTrainer` evaluates. `False`: the eval set's own completions; rows without one are
            an error. `None` (default): the eval set's completions when its rows have them, student samples when it
            is prompt-only; a set that mixes both is an error (for a streamed set, when the first batch of the other
            kind is read).
        force_eos (`bool`, *optional*, defaults to `True`):
            When a sample reaches `max_new_tokens` without EOS, replace its last token by EOS (official code).
        seq_kd (`bool`, *optional*, defaults to `False`):
            On off-policy steps, train on completions sampled from the prompted teacher instead of the dataset's.
        disable_dropout (`bool`, *optional*, defaults to `False`):
            Disable dropout in student and teacher (GKD's default is `True`, DistillationConfig's `False`). With
            dropout on (the official code's setting), the targets are computed in eval mode, as in the official code.
        shuffle_dataset (`bool`, *optional*, defaults to `True`):
            Shuffle the training set (a streamed one through a buffer), as `DistillationConfig`; `False` reads it in
            order.
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + [
        "teacher_model_init_kwargs",
        "generation_kwargs",
        "chat_template_kwargs",
    ]

    # Overridden defaults.
    learning_rate: float = field(
        default=5e-5, metadata={"help": f"Student learning rate (GPT-2 base script of the {_PKD}: 5e-5)."}
    )
    max_length: int | None = field(
        default=512,
        metadata={"help": f"Maximum length of prompt + completion in tokens ({_PKD}: max_length=512)."},
    )
    shuffle_dataset: bool = field(
        default=True,
        metadata={
            "help": f"Shuffle the training set, as DistillationConfig (default True; {_PKD}: shuffled every epoch). "
            "False reads it in order."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Use bf16 mixed precision. Defaults to True when a bf16-capable accelerator is present, else "
            "False (TRL defaults to True, which fails on CPU)."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Checkpoint the student's activations. None: TRL's default, True (unless transformers' "
            "`activation_checkpointing` is set), without the FutureWarning that transformers 5.x gives for the old "
            "name; setting this field still warns there."
        },
    )

    # Teacher and prompt.
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher model id or path, used when the trainer is not given a teacher model (GKD)."},
    )
    teacher_model_revision: str | None = field(
        default=None,
        metadata={"help": "Teacher revision (branch, tag or commit) when loaded from a string (DistillationConfig)."},
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for AutoModelForCausalLM.from_pretrained of the teacher (GKD)."},
    )
    num_virtual_tokens: int = field(
        default=7,
        metadata={
            "help": f"Number of virtual tokens of the teacher's soft prompt ({_PKD}: prompt_len=7). 0 turns the "
            "prompt off (plain on-policy distillation, the ablation baseline)."
        },
    )
    prompt_init_text: str | None = field(
        default="Suppose you are a student.",
        metadata={
            "help": f"Text that initialises the soft prompt ({_PKD}: --prompt-init-text). None: random init."
        },
    )
    teacher_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": f"Learning rate of the soft prompt. None: same as learning_rate ({_PKD}: teacher-lr = lr)."
        },
    )
    teacher_weight_decay: float = field(
        default=0.01, metadata={"help": f"AdamW weight decay of the soft prompt ({_PKD}: 0.01, prompt decayed)."}
    )
    teacher_gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Checkpoint the teacher's activations in the forward that back-propagates to the prompt. None: "
            f"follow `gradient_checkpointing` ({_PKD}: both models checkpointed for OPT/Llama)."
        },
    )

    # Losses.
    student_loss_type: str | None = field(
        default=None,
        metadata={
            "help": f"Student term, one of {DIVERGENCE_TYPES}; reverse_kl = KL(student || prompted teacher) "
            f"({_PKD}: hard-wired reverse KL). None: the divergence `beta` names (reverse_kl at the default beta=1).",
        },
    )
    prompt_loss_type: str = field(
        default="reverse_kl",
        metadata={
            "help": f"Prompt term, one of {DIVERGENCE_TYPES}; reverse_kl = KL(prompted teacher || student) "
            f"({_PKD}: --teacher-kld-type reverse).",
        },
    )
    reg_loss_type: str = field(
        default="reverse_kl",
        metadata={
            "help": f"Regulariser, one of {DIVERGENCE_TYPES}; reverse_kl = KL(prompted teacher || teacher without "
            f"prompt) ({_PKD}: --base-kld-type reverse).",
        },
    )
    reg_coef: float = field(
        default=1.0,
        metadata={
            "help": f"Regulariser coefficient; weight = reg_coef * (1 - (global_step + 1) / max_steps) ({_PKD}: "
            "--base-coef 1.0, linear decay)."
        },
    )
    beta: float | None = field(
        default=None,
        metadata={
            "help": "The student term's divergence, as DistillationConfig's beta: 0.0 forward KL, 1.0 reverse KL "
            f"(default; {_PKD}), generalized JSD in between. None: the value student_loss_type implies (1.0 by "
            "default; none for the skew types)."
        },
    )
    prompt_beta: float = field(
        default=0.5,
        metadata={
            "help": "Generalized JSD interpolation of 'jsd' prompt and regulariser terms (GKD's default 0.5); the "
            "student term's is `beta`."
        },
    )
    skew_alpha: float = field(
        default=0.1, metadata={"help": "Skew KL mixing weight for the 'skew_*' loss types (DistiLLM: 0.1)."}
    )
    loss_temperature: float = field(
        default=1.0,
        metadata={
            "help": f"Temperature of the logits inside the divergences, separate from sampling ({_PKD}: none, 1.0)."
        },
    )
    update_order: str = field(
        default="paper",
        metadata={
            "help": f"'paper': prompt step first, then the student loss with the updated prompt ({_PKD}). "
            "'joint': one backward for both terms with the pre-update prompt (opt-in speed mode)."
        },
    )
    divergence_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Token positions per chunk inside the divergences; bounds their extra memory. None: one fp32 "
            "chunk of ~32 MB (2**23 // vocab_size positions)."
        },
    )
    truncate_vocab: bool = field(
        default=False,
        metadata={
            "help": "When teacher and student vocab sizes differ, compare logits on the shared leading vocabulary "
            "(opt-in; the default raises)."
        },
    )
    save_on_signal: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM or SIGINT, finish the optimizer step, save a checkpoint and exit (status 128 + "
            "signal number), so that resume_from_checkpoint=True continues the run. False: Python's default handling."
        },
    )

    # Generation.
    lmbda: float = field(
        default=1.0,
        metadata={
            "help": f"Probability of an on-policy step (GKD's lmbda, whose default is 0.5; {_PKD}: always "
            "on-policy, 1.0)."
        },
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": f"Sampling temperature of the student (GKD default 0.9; {_PKD}: 1.0)."},
    )
    top_k: int = field(default=0, metadata={"help": f"Sampling top-k, 0 disables ({_PKD}: top_k=0)."})
    top_p: float = field(default=1.0, metadata={"help": f"Sampling top-p ({_PKD}: top_p=1.0)."})
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": f"Maximum sampled tokens (DistillationConfig's name, default 512 there; {_PKD}: max_length 512 - "
            "max_prompt_length 256 = 256, the default). Same value as max_new_tokens."
        },
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "GKD's name of max_completion_length (GKD default 128); the two always hold the same value "
            "(default 256)."
        },
    )
    min_p: float | None = field(
        default=None, metadata={"help": f"Sampling min-p (DistillationConfig; {_PKD}: none)."}
    )
    repetition_penalty: float = field(
        default=1.0, metadata={"help": f"Sampling repetition penalty (DistillationConfig; {_PKD}: none, 1.0)."}
    )
    generation_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "More GenerationConfig fields for on-policy sampling; they override the sampling fields "
            "(DistillationConfig)."
        },
    )
    cache_implementation: str | None = field(
        default=None, metadata={"help": "cache_implementation of on-policy sampling (DistillationConfig)."}
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of apply_chat_template for conversational prompts (DistillationConfig)."},
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={
            "help": "Under ZeRO-3, gather the student's weights for sampling (faster); False samples with the "
            "partitioned weights (DistillationConfig)."
        },
    )
    force_eos: bool = field(
        default=True,
        metadata={
            "help": f"Replace the last token of a sample that hit max_new_tokens without EOS by EOS ({_PKD})."
        },
    )
    seq_kd: bool = field(
        default=False,
        metadata={"help": "Off-policy steps train on prompted-teacher samples instead of the dataset (GKD)."},
    )
    disable_dropout: bool = field(
        default=False,
        metadata={
            "help": "Disable dropout in student and teacher (GKD default True, DistillationConfig False; "
            f"{_PKD}: dropout on)."
        },
    )
    eval_on_policy: bool | None = field(
        default=None,
        metadata={
            "help": "eval_loss on student samples for the eval prompts (True, as DistillationTrainer), on the eval "
            "set's completions (False), or None: completions when the rows have them, samples for a prompt-only set."
        },
    )

    # DistillationConfig (TRL >= 1.10) fields that PromptKD cannot use: accepted so that TRL configs parse, refused
    # when set to act (see `_validate_trl_distillation`).
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Refused when True: vLLM student sampling is not implemented (DistillationConfig)."},
    )
    vllm_mode: str = field(default="colocate", metadata={"help": "Unused (use_vllm is refused)."})
    vllm_model_impl: str = field(default="vllm", metadata={"help": "Unused (use_vllm is refused)."})
    vllm_enable_sleep_mode: bool = field(default=False, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_structured_outputs_regex: str | None = field(default=None, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "Unused (use_vllm is refused)."})
    vllm_server_port: int = field(default=8000, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_server_timeout: float = field(default=240.0, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_group_port: int = field(default=51216, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_max_model_length: int | None = field(default=None, metadata={"help": "Unused (use_vllm is refused)."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "Unused (use_vllm is refused)."})
    max_tool_calling_iterations: int | None = field(
        default=None, metadata={"help": "Refused when set: PromptKD samples single-turn completions without tools."}
    )

    # Logging of sampled completions (DistillationConfig).
    log_completions: bool = field(
        default=False,
        metadata={
            "help": "Log the latest step's on-policy (prompt, completion) pairs at every logging step: printed with "
            "rich, written to output_dir/completions/*.parquet, sent to wandb/trackio (DistillationConfig)."
        },
    )
    num_completions_to_print: int | None = field(
        default=None, metadata={"help": "Pairs printed with rich; all when None (DistillationConfig)."}
    )
    log_unique_prompts: bool = field(
        default=False, metadata={"help": "Send each prompt once to wandb/trackio (DistillationConfig)."}
    )

    def __post_init__(self):
        if self.bf16 is None:
            # transformers' own check (CUDA, XPU, NPU, HPU, MPS, ...), the one TrainingArguments validates bf16 with.
            self.bf16 = is_torch_bf16_gpu_available() and not self.fp16 and not self.use_cpu
        if self.gradient_checkpointing is None:
            # TRL's default (True) under the name this transformers reads: releases that renamed the field to
            # `activation_checkpointing` (5.24 has it, 5.5.4 not) warn whenever `gradient_checkpointing` is set.
            if not hasattr(self, "activation_checkpointing"):
                self.gradient_checkpointing = True
            elif self.activation_checkpointing is None:
                self.activation_checkpointing = True
        init_cpu_process_group(self)  # with `ddp_timeout`, which TrainingArguments drops under use_cpu
        super().__post_init__()
        for name in ("teacher_model_init_kwargs", "generation_kwargs", "chat_template_kwargs"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"`{name}` must be a dict or a JSON string of a dict, got {value!r}.")
        self._resolve_completion_length()
        self._resolve_student_divergence()
        self._validate()
        self._validate_trl_distillation()
        self._warn_unused_prompt_beta()
        self._warn_off_policy_sampling()

    def _resolve_completion_length(self) -> None:
        """`max_completion_length` (DistillationConfig) and `max_new_tokens` (GKD) are one setting: both end up with
        the same value, and two different values are an error."""
        names = ("max_completion_length", "max_new_tokens")
        given = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        for name, value in given.items():
            if not _is_int(value):
                raise ValueError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__}).")
        if len(set(given.values())) > 1:
            raise ValueError(
                f"`max_completion_length={self.max_completion_length}` and `max_new_tokens={self.max_new_tokens}` "
                "disagree: they are DistillationConfig's and GKD's names of one setting, the number of sampled "
                "tokens. Set only one of them."
            )
        value = next(iter(given.values()), DEFAULT_COMPLETION_LENGTH)
        self.max_completion_length = self.max_new_tokens = value

    def _resolve_student_divergence(self) -> None:
        """`beta` and `student_loss_type` name the student term's divergence together (one knob, see the class
        docstring); fill in the one that is not set and refuse two that disagree."""
        loss_type, beta = self.student_loss_type, self.beta
        if beta is not None and not (_is_real(beta) and 0.0 <= beta <= 1.0):
            raise ValueError(
                f"`beta` must be in [0, 1] (0 forward KL, 1 reverse KL, generalized JSD in between), got {beta!r}."
            )
        if loss_type is not None and loss_type not in DIVERGENCE_TYPES:
            raise ValueError(f"`student_loss_type` must be one of {DIVERGENCE_TYPES} or None, got {loss_type!r}.")
        if loss_type is None:
            beta = 1.0 if beta is None else float(beta)
            loss_type = "forward_kl" if beta == 0.0 else "reverse_kl" if beta == 1.0 else "jsd"
        elif loss_type in BETA_OF_KL:
            if beta is None:
                beta = BETA_OF_KL[loss_type]
            elif beta != BETA_OF_KL[loss_type]:
                raise ValueError(
                    f"`student_loss_type={loss_type!r}` is `beta={BETA_OF_KL[loss_type]}`, but `beta={beta}` is set: "
                    "`beta` chooses the student's divergence (0 forward KL, 1 reverse KL, JSD in between, as in "
                    "DistillationConfig). Set only one of them."
                )
        elif loss_type == "jsd":
            beta = 0.5 if beta is None else float(beta)
        elif beta is not None:  # skew KLs
            raise ValueError(
                f"`beta={beta}` has no effect with `student_loss_type={loss_type!r}`: the skew KLs are set by "
                "`skew_alpha`. Drop `beta` (or use `student_loss_type='jsd'`)."
            )
        self.student_loss_type, self.beta = loss_type, beta

    def check_consistency(self) -> None:
        """Raise if fields that hold one setting were changed apart after `__post_init__` (the trainer calls it)."""
        if self.max_completion_length != self.max_new_tokens:
            raise ValueError(
                f"`max_completion_length={self.max_completion_length}` and `max_new_tokens={self.max_new_tokens}` "
                "disagree: they are one setting. Change both, or build a new config."
            )
        implied = BETA_OF_KL.get(self.student_loss_type)
        if implied is not None and self.beta != implied:
            raise ValueError(
                f"`beta={self.beta}` disagrees with `student_loss_type={self.student_loss_type!r}` (beta={implied}): "
                "they are one setting. Change both, or build a new config."
            )

    def _validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        is_int, is_real = _is_int, _is_real
        for name in ("lmbda", "prompt_beta", "skew_alpha", "reg_coef", "teacher_weight_decay", "temperature",
                     "loss_temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            check(is_real(value), f"`{name}` must be a finite number, got {value!r}.")
        check(
            self.teacher_learning_rate is None or is_real(self.teacher_learning_rate),
            f"`teacher_learning_rate` must be a finite number or None, got {self.teacher_learning_rate!r}.",
        )
        for name in ("num_virtual_tokens", "top_k", "max_new_tokens"):
            value = getattr(self, name)
            check(is_int(value), f"`{name}` must be an integer, got {value!r} ({type(value).__name__}).")
        for name in ("divergence_chunk_size", "max_length"):
            value = getattr(self, name)
            check(value is None or is_int(value), f"`{name}` must be an integer or None, got {value!r}.")

        check(
            0.0 <= self.lmbda <= 1.0,
            f"`lmbda` must be in [0, 1] (probability of an on-policy step), got {self.lmbda}.",
        )
        check(
            0.0 <= self.prompt_beta <= 1.0,
            f"`prompt_beta` must be in [0, 1] (generalized JSD interpolation), got {self.prompt_beta}.",
        )
        check(
            self.min_p is None or (is_real(self.min_p) and 0.0 <= self.min_p <= 1.0),
            f"`min_p` must be in [0, 1] or None, got {self.min_p!r}.",
        )
        check(self.repetition_penalty > 0.0, f"`repetition_penalty` must be > 0, got {self.repetition_penalty}.")
        check(
            self.num_completions_to_print is None
            or (is_int(self.num_completions_to_print) and self.num_completions_to_print >= 1),
            f"`num_completions_to_print` must be an integer >= 1 or None, got {self.num_completions_to_print!r}.",
        )
        check(
            self.eval_on_policy in (None, True, False),
            f"`eval_on_policy` must be True, False or None, got {self.eval_on_policy!r}.",
        )
        check(
            0.0 < self.skew_alpha < 1.0,
            f"`skew_alpha` must be in (0, 1) (DistiLLM uses 0.1), got {self.skew_alpha}.",
        )
        check(
            self.num_virtual_tokens >= 0,
            "`num_virtual_tokens` must be an integer >= 0 (the official code uses 7; 0 turns the prompt off), got "
            f"{self.num_virtual_tokens}.",
        )
        if self.num_virtual_tokens > 0 and self.prompt_init_text is not None:
            check(
                isinstance(self.prompt_init_text, str) and self.prompt_init_text.strip() != "",
                f"`prompt_init_text` must be a non-empty text (it initialises the soft prompt from its tokens), got "
                f"{self.prompt_init_text!r}. Use None for a random initialisation.",
            )
        check(self.reg_coef >= 0.0, f"`reg_coef` must be >= 0 (0 disables the regulariser), got {self.reg_coef}.")
        check(
            self.teacher_learning_rate is None or self.teacher_learning_rate >= 0.0,
            "`teacher_learning_rate` must be >= 0 or None (None reuses learning_rate), got "
            f"{self.teacher_learning_rate}.",
        )
        check(
            self.teacher_weight_decay >= 0.0, f"`teacher_weight_decay` must be >= 0, got {self.teacher_weight_decay}."
        )
        for name in ("prompt_loss_type", "reg_loss_type"):
            value = getattr(self, name)
            check(value in DIVERGENCE_TYPES, f"`{name}` must be one of {DIVERGENCE_TYPES}, got {value!r}.")
        check(
            self.update_order in UPDATE_ORDERS,
            f"`update_order` must be one of {UPDATE_ORDERS}, got {self.update_order!r}.",
        )
        check(self.temperature > 0.0, f"`temperature` (sampling) must be > 0, got {self.temperature}.")
        check(self.loss_temperature > 0.0, f"`loss_temperature` must be > 0, got {self.loss_temperature}.")
        check(self.top_k >= 0, f"`top_k` must be >= 0 (0 disables top-k), got {self.top_k}.")
        check(0.0 < self.top_p <= 1.0, f"`top_p` must be in (0, 1], got {self.top_p}.")
        check(self.max_new_tokens >= 1, f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")
        check(
            self.divergence_chunk_size is None or self.divergence_chunk_size >= 1,
            f"`divergence_chunk_size` must be >= 1 or None, got {self.divergence_chunk_size}.",
        )
        check(
            self.max_length is None or self.max_length >= 2,
            f"`max_length` must be >= 2 or None, got {self.max_length}.",
        )
        check(
            not self.packing and not self.padding_free,
            "PromptKD samples completions per prompt, which cannot be packed: set `packing=False` and "
            "`padding_free=False`.",
        )

    def jsd_terms(self) -> list[str]:
        """The loss-type fields that use the generalized JSD with this configuration (the student term with `beta`,
        the prompt and regulariser terms with `prompt_beta`)."""
        terms = ["student_loss_type"]
        if self.num_virtual_tokens > 0:  # without a prompt, only the student term is computed
            terms.append("prompt_loss_type")
            if self.reg_coef > 0:
                terms.append("reg_loss_type")
        return [name for name in terms if getattr(self, name) == "jsd"]

    def _warn_unused_prompt_beta(self) -> None:
        default = type(self).__dataclass_fields__["prompt_beta"].default
        if self.prompt_beta != default and not set(self.jsd_terms()) - {"student_loss_type"}:
            logger.warning(
                f"`prompt_beta={self.prompt_beta}` is set but has no effect: neither the prompt nor the regulariser "
                f"term uses the generalized JSD (prompt_loss_type={self.prompt_loss_type!r}, "
                f"reg_loss_type={self.reg_loss_type!r}, reg_coef={self.reg_coef}, "
                f"num_virtual_tokens={self.num_virtual_tokens}). The student term's divergence is `beta`."
            )

    def _validate_trl_distillation(self) -> None:
        """DistillationConfig settings that PromptKD cannot honour are refused, and unused ones are named."""
        if self.use_vllm:
            installed = importlib.util.find_spec("vllm") is not None
            raise ValueError(
                "`use_vllm=True` is not supported: PromptKDTrainer samples the student with transformers' `generate` "
                "only. vLLM student sampling (TRL's colocate mode, with a weight sync every step) is not implemented "
                f"in this package yet, so it is refused rather than run untested (vLLM is "
                f"{'installed' if installed else 'not installed'} here). Set `use_vllm=False`."
            )
        unused = [f"{k}={getattr(self, k)!r}" for k, v in VLLM_DEFAULTS.items() if getattr(self, k) != v]
        if unused:
            logger.warning(f"{', '.join(unused)} has no effect: `use_vllm` is False (vLLM is not supported).")
        if self.max_tool_calling_iterations is not None:
            raise ValueError(
                f"`max_tool_calling_iterations={self.max_tool_calling_iterations}` is not supported: PromptKDTrainer "
                "does not call tools (PromptKD samples single-turn completions; the trainer takes no `tools`). "
                "Remove it."
            )
        if not self.log_completions and (self.num_completions_to_print is not None or self.log_unique_prompts):
            logger.warning(
                "`num_completions_to_print` / `log_unique_prompts` have no effect without `log_completions=True`."
            )
        for key, reason in GENERATION_KWARGS_REFUSED.items():
            if key in (self.generation_kwargs or {}):
                raise ValueError(f"`generation_kwargs` must not set `{key}`: {reason}.")
        if self.generation_kwargs:
            from transformers import GenerationConfig

            known = set(GenerationConfig().to_dict())
            unknown = sorted(set(self.generation_kwargs) - known)
            if unknown:
                raise ValueError(
                    f"`generation_kwargs` has keys that are not GenerationConfig fields: {unknown} (they would be "
                    "ignored)."
                )

    def off_policy_sampling(self) -> dict[str, Any]:
        """The sampling settings that differ from the official code's (student samples from its own distribution):
        `{name: value}`, empty for the paper's sampling."""
        departures = {k: getattr(self, k) for k, v in PAPER_SAMPLING.items() if getattr(self, k) != v}
        for key, value in (self.generation_kwargs or {}).items():
            if key in PAPER_SAMPLING or key not in SAMPLING_NEUTRAL_KWARGS:
                departures[f"generation_kwargs[{key!r}]"] = value
        return departures

    def _warn_off_policy_sampling(self) -> None:
        departures = self.off_policy_sampling()
        if departures:
            shown = ", ".join(f"{k}={v!r}" for k, v in departures.items())
            logger.warning(
                f"On-policy sampling departs from PromptKD's ({shown}; official: temperature 1, top_k 0, top_p 1, no "
                "min_p or repetition penalty): the student's samples no longer come from its own distribution, so "
                "the run is not the paper's on-policy distillation. Intended for ablations."
            )
        if self.temperature != 1.0 and self.loss_temperature == 1.0:
            logger.warning(
                f"`temperature={self.temperature}` applies to sampling only (as in GKD); DistillationConfig also "
                "divides the loss's logits by it. Set `loss_temperature` to the same value to do the same."
            )

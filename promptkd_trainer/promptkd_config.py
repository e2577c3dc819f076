# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Configuration of [`PromptKDTrainer`]."""

from __future__ import annotations

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


@dataclass
class PromptKDConfig(SFTConfig):
    r"""
    Configuration class for [`PromptKDTrainer`].

    PromptKD (Kim, Jang, Yang, Findings of EMNLP 2024, [arXiv 2402.12842](https://huggingface.co/papers/2402.12842))
    trains a soft prompt of a few virtual tokens on a frozen teacher together with the student. Each step:

    1. the student samples completions to the batch's prompts (on-policy, `top_k=0`, `top_p=1.0`, `temperature=1.0`);
    2. the prompt is trained with *student guidance*:
       `D_prompt(prompted teacher, student) + w(t) * D_reg(prompted teacher, teacher without prompt)`,
       with `w(t) = reg_coef * (1 - global_step / max_steps)`;
    3. the student is trained with `D_student(student, prompted teacher)` on the same sampled sequences.

    Each divergence is named from the point of view of its *trainable* distribution P (the prompted teacher for the
    prompt and regulariser terms, the student for the student term) and its fixed target Q: `"reverse_kl"` is
    KL(P || Q), `"forward_kl"` is KL(Q || P). The defaults (`"reverse_kl"` everywhere) are the official code's:
    KL(prompted teacher || student), KL(prompted teacher || teacher) and KL(student || prompted teacher).

    This class only holds the parameters specific to PromptKD; see [`~trl.SFTConfig`] and
    [`~transformers.TrainingArguments`] for the rest. Fields shared with TRL's `GKDConfig` keep GKD's names and
    meanings (`lmbda`, `beta`, `temperature`, `max_new_tokens`, `seq_kd`, `teacher_model_name_or_path`,
    `teacher_model_init_kwargs`, `disable_dropout`), so a GKD script can switch by changing its imports. Five of them
    keep the paper's defaults instead of GKD's, so a GKD script that relies on GKD's defaults trains differently after
    the switch; set them explicitly to keep GKD's behaviour:

    | field | `GKDConfig` default | `PromptKDConfig` default | why |
    |---|---|---|---|
    | `lmbda` | `0.5` | `1.0` | PromptKD is always on-policy: the student samples every completion (official code). |
    | `temperature` | `0.9` | `1.0` | The official code samples at temperature 1.0 (with `top_k=0`, `top_p=1.0`). |
    | `max_new_tokens` | `128` | `256` | Official `max_length` 512 minus `max_prompt_length` 256. |
    | `learning_rate` | `2e-5` | `5e-5` | Official GPT-2 base script (the other setups use 1e-5 or 5e-6). |
    | `max_length` | `1024` | `512` | Official `max_length` 512 (prompt + completion). |

    `beta` has GKD's default (0.5) but only acts through the `"jsd"` loss types; the defaults are reverse KL, where GKD
    uses its generalized JSD for every `beta`. Setting `beta` without a `"jsd"` term logs a warning.

    Parameters:
        > Parameters that control the teacher and its soft prompt

        teacher_model_name_or_path (`str`, *optional*):
            Teacher model id or local path, used when `teacher_model` is not passed to the trainer.
        teacher_model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the teacher is loaded from a string.
        num_virtual_tokens (`int`, *optional*, defaults to `7`):
            Length of the teacher's soft prompt (official code: `prompt_len=7`). `0` turns the prompt off: plain
            on-policy distillation from the frozen teacher (GKD with `lmbda=1`, `beta=1`), PromptKD's ablation baseline.
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

        student_loss_type (`str`, *optional*, defaults to `"reverse_kl"`):
            Divergence of the student term, KL(student || prompted teacher) by default.
        prompt_loss_type (`str`, *optional*, defaults to `"reverse_kl"`):
            Divergence of the prompt term, KL(prompted teacher || student) by default.
        reg_loss_type (`str`, *optional*, defaults to `"reverse_kl"`):
            Divergence of the regulariser, KL(prompted teacher || teacher without prompt) by default.
        reg_coef (`float`, *optional*, defaults to `1.0`):
            Regulariser coefficient; its weight decays linearly, `reg_coef * (1 - global_step / max_steps)`.
        beta (`float`, *optional*, defaults to `0.5`):
            Interpolation of the generalized JSD (GKD's `beta`), used only by the `"jsd"` loss types (a warning is
            logged when it is set while no `"jsd"` term is in use).
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
        max_new_tokens (`int`, *optional*, defaults to `256`):
            Maximum number of sampled tokens (official code: max_length 512 - max_prompt_length 256).
        force_eos (`bool`, *optional*, defaults to `True`):
            When a sample reaches `max_new_tokens` without EOS, replace its last token by EOS (official code).
        seq_kd (`bool`, *optional*, defaults to `False`):
            On off-policy steps, train on completions sampled from the prompted teacher instead of the dataset's.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Disable dropout in student and teacher (GKD's default). With dropout on, the targets are computed in eval
            mode, as in the official code.
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["teacher_model_init_kwargs"]

    # Overridden defaults.
    learning_rate: float = field(
        default=5e-5, metadata={"help": f"Student learning rate (GPT-2 base script of the {_PKD}: 5e-5)."}
    )
    max_length: int | None = field(
        default=512,
        metadata={"help": f"Maximum length of prompt + completion in tokens ({_PKD}: max_length=512)."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Use bf16 mixed precision. Defaults to True when a bf16-capable accelerator is present, else "
            "False (TRL defaults to True, which fails on CPU)."
        },
    )

    # Teacher and prompt.
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher model id or path, used when the trainer is not given a teacher model (GKD)."},
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for AutoModelForCausalLM.from_pretrained of the teacher (GKD)."},
    )
    num_virtual_tokens: int = field(
        default=7,
        metadata={
            "help": f"Number of virtual tokens of the teacher's soft prompt ({_PKD}: prompt_len=7). 0 turns the prompt "
            "off (plain on-policy distillation, the ablation baseline)."
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
    student_loss_type: str = field(
        default="reverse_kl",
        metadata={
            "help": f"Student term, one of {DIVERGENCE_TYPES}; reverse_kl = KL(student || prompted teacher) "
            f"({_PKD}: hard-wired reverse KL).",
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
            "help": f"Regulariser coefficient; weight = reg_coef * (1 - global_step / max_steps) ({_PKD}: "
            "--base-coef 1.0, linear decay)."
        },
    )
    beta: float = field(
        default=0.5,
        metadata={
            "help": "Generalized JSD interpolation, used only by the 'jsd' loss types (GKD's beta, default 0.5; GKD "
            "always uses its JSD, PromptKD's default losses are reverse KL)."
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
            "help": "Token positions per chunk inside the divergences; bounds their extra memory. None: one fp32 chunk "
            "of ~32 MB (2**23 // vocab_size positions)."
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
    max_new_tokens: int = field(
        default=256,
        metadata={
            "help": f"Maximum sampled tokens (GKD default 128; {_PKD}: max_length 512 - max_prompt_length 256 "
            "= 256)."
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
        default=True, metadata={"help": "Disable dropout in student and teacher (GKD default True)."}
    )

    def __post_init__(self):
        if self.bf16 is None:
            # transformers' own check (CUDA, XPU, NPU, HPU, MPS, ...), the one TrainingArguments validates bf16 with.
            self.bf16 = is_torch_bf16_gpu_available() and not self.fp16 and not self.use_cpu
        init_cpu_process_group(self)  # with `ddp_timeout`, which TrainingArguments drops under use_cpu
        super().__post_init__()
        if self.teacher_model_init_kwargs is not None and not isinstance(self.teacher_model_init_kwargs, dict):
            raise ValueError("`teacher_model_init_kwargs` must be a dict or a JSON string of a dict.")
        self._validate()
        self._warn_unused_beta()

    def _validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        def is_int(value) -> bool:  # bool is an int subclass: `num_virtual_tokens=True` must not pass as 1
            return isinstance(value, int) and not isinstance(value, bool)

        def is_real(value) -> bool:  # a finite number: inf and nan pass every `>=` / `>` test below otherwise
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name in ("lmbda", "beta", "skew_alpha", "reg_coef", "teacher_weight_decay", "temperature",
                     "loss_temperature", "top_p"):
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

        check(0.0 <= self.lmbda <= 1.0, f"`lmbda` must be in [0, 1] (probability of an on-policy step), got {self.lmbda}.")
        check(0.0 <= self.beta <= 1.0, f"`beta` must be in [0, 1] (generalized JSD interpolation), got {self.beta}.")
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
            f"`teacher_learning_rate` must be >= 0 or None (None reuses learning_rate), got {self.teacher_learning_rate}.",
        )
        check(self.teacher_weight_decay >= 0.0, f"`teacher_weight_decay` must be >= 0, got {self.teacher_weight_decay}.")
        for name in ("student_loss_type", "prompt_loss_type", "reg_loss_type"):
            value = getattr(self, name)
            check(value in DIVERGENCE_TYPES, f"`{name}` must be one of {DIVERGENCE_TYPES}, got {value!r}.")
        check(self.update_order in UPDATE_ORDERS, f"`update_order` must be one of {UPDATE_ORDERS}, got {self.update_order!r}.")
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
        """The loss-type fields that use the generalized JSD (and so `beta`) with this configuration."""
        terms = ["student_loss_type"]
        if self.num_virtual_tokens > 0:  # without a prompt, only the student term is computed
            terms.append("prompt_loss_type")
            if self.reg_coef > 0:
                terms.append("reg_loss_type")
        return [name for name in terms if getattr(self, name) == "jsd"]

    def _warn_unused_beta(self) -> None:
        # GKD's `beta` always acts (its loss is the generalized JSD); here it only acts through "jsd" terms, so a GKD
        # user who sets it with the default reverse-KL losses would otherwise change nothing without a word.
        default = type(self).__dataclass_fields__["beta"].default
        if self.beta != default and not self.jsd_terms():
            logger.warning(
                f"`beta={self.beta}` is set but has no effect: no loss term uses the generalized JSD "
                f"(student_loss_type={self.student_loss_type!r}, prompt_loss_type={self.prompt_loss_type!r}, "
                f"reg_loss_type={self.reg_loss_type!r}). Set a loss type to 'jsd' to use it (GKD's loss is the JSD), "
                "or drop `beta`."
            )

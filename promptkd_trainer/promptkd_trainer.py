# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""[`PromptKDTrainer`]: PromptKD as a drop-in TRL trainer (GKD-compatible constructor and arguments)."""

from __future__ import annotations

import copy
import inspect
import os
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from accelerate.utils import broadcast_object_list
from datasets import Dataset, IterableDataset
from peft import PeftConfig, PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
    get_scheduler,
)
from transformers.trainer_utils import EvalPrediction
from transformers.utils import logging
from trl import SFTTrainer
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import disable_dropout_in_model

from .data import PromptKDDataCollator, pack_sequences, prepare_dataset
from .distributed import check_fsdp_unsupported, init_deepspeed_comm, is_zero3, shard_teacher_zero3, teacher_numel
from .divergences import divergence
from .promptkd_config import PromptKDConfig
from .teacher import (
    build_prompted_teacher,
    generate_with_prompt,
    plain_teacher_logits,
    prompt_parameter,
    prompted_teacher_logits,
)


logger = logging.get_logger(__name__)

PROMPT_ADAPTER_DIR = "teacher_prompt"
PROMPT_OPTIMIZER_NAME = "prompt_optimizer.pt"
PROMPT_SCHEDULER_NAME = "prompt_scheduler.pt"


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the causal LM's forward takes `logits_to_keep` (PEFT wrappers forward it to their base model)."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _has_active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


class PromptKDTrainer(SFTTrainer):
    """Trainer for PromptKD (Kim, Jang, Yang, Findings of EMNLP 2024): on-policy distillation through a soft prompt
    trained on the frozen teacher with student guidance.

    The constructor mirrors TRL's `GKDTrainer`. Each optimizer step (see [`PromptKDConfig`] for the terms):

    1. the student samples completions for every micro-batch of the gradient-accumulation window (KV cache on);
    2. with `update_order="paper"`, the prompt's loss over the whole window is back-propagated and the prompt steps
       (its own AdamW and scheduler), then each micro-batch's student loss uses the updated prompt; with
       `update_order="joint"`, each micro-batch back-propagates the sum of both terms once;
    3. the student steps through the regular `Trainer` optimizer.

    Only the student and the prompt (`num_virtual_tokens x hidden` values) train; the teacher's weights never change.

    Args:
        model (`str` or `PreTrainedModel`):
            The student, or its model id / path.
        teacher_model (`str`, `PreTrainedModel` or `PeftModel`, *optional*):
            The teacher, its id / path, or a teacher that already carries a prompt-tuning adapter (to continue a run).
            Defaults to `args.teacher_model_name_or_path`.
        args ([`PromptKDConfig`], *optional*):
            Configuration; copied, never mutated. Defaults to `PromptKDConfig("<model>-PromptKD")`.
        data_collator (`DataCollator`, *optional*):
            Defaults to [`~promptkd_trainer.data.PromptKDDataCollator`].
        train_dataset, eval_dataset (`Dataset`):
            `messages`, `prompt`/`completion` or prompt-only `prompt` datasets.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            Tokenizer shared by student and teacher. Loaded from the student when omitted. Without a pad token, EOS
            is used (as the official code does).
        compute_metrics, callbacks, optimizers, preprocess_logits_for_metrics:
            As in [`~transformers.Trainer`].
        peft_config (`PeftConfig`, *optional*):
            Adapter for the *student* (e.g. LoRA), as in `SFTTrainer`.
        formatting_func (`Callable[[dict], dict]`, *optional*):
            Maps a raw row to a dict with `prompt`/`completion` or `messages`.
    """

    _tag_names = ["trl", "promptkd"]
    _name = "PromptKD"
    _paper = {
        "title": "PromptKD: Distilling Student-Friendly Knowledge for Generative Language Models via Prompt Tuning",
        "id": "2402.12842",
        "citation": (
            "@inproceedings{kim2024promptkd,\n"
            "    title     = {{PromptKD: Distilling Student-Friendly Knowledge for Generative Language Models via "
            "Prompt Tuning}},\n"
            "    author    = {Gyeongman Kim and Doohyuk Jang and Eunho Yang},\n"
            "    booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2024},\n"
            "    year      = 2024\n}"
        ),
    }
    # compute_loss returns token sums divided by the window's completion-token count: already scaled for accumulation.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module | None = None,
        teacher_model: str | PreTrainedModel | PeftModel | nn.Module | None = None,
        args: PromptKDConfig | TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        peft_config: PeftConfig | None = None,
        formatting_func: Callable[[dict], dict] | None = None,
    ):
        if model is None:
            raise ValueError("`model` (the student) is required: pass a model or its id / path.")
        args = self._resolve_args(model, args)
        # Scale-out checks before any model is loaded (promptkd_trainer/distributed.py): FSDP is refused (trl#2580),
        # and under ZeRO-3 `from_pretrained` needs deepspeed.comm up to partition models given as strings.
        check_fsdp_unsupported(args)
        init_deepspeed_comm(args)

        # Tokenizer first: the datasets are checked before any model is built, so bad data fails fast.
        if processing_class is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise TypeError("`processing_class` must be a tokenizer (PreTrainedTokenizerBase).")
        tokenizer = processing_class
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "The tokenizer has no EOS token; PromptKD needs one to end sampled completions. Set "
                "`tokenizer.eos_token` (or `eos_token` in the config)."
            )
        if tokenizer.pad_token_id is None:
            # The official code pads with EOS (paper.md §1.7); completions are cut at the first EOS, so it is safe.
            logger.warning("The tokenizer has no pad token; using its EOS token for padding, as PromptKD does.")
            tokenizer.pad_token = tokenizer.eos_token

        if train_dataset is None:
            raise ValueError("`train_dataset` is required.")
        if formatting_func is not None:
            train_dataset = train_dataset.map(formatting_func)
        train_dataset = prepare_dataset(
            train_dataset, tokenizer, args.max_length, "train", num_proc=args.dataset_num_proc
        )
        if args.lmbda < 1.0 and not args.seq_kd and isinstance(train_dataset, Dataset):
            if all(len(c) == 0 for c in train_dataset["completion_ids"][:64]):
                raise ValueError(
                    "The train dataset is prompt-only, but `lmbda` < 1 asks for off-policy steps on its completions. "
                    "Set `lmbda=1.0` (always on-policy) or `seq_kd=True`, or add a `completion` column."
                )
        if eval_dataset is not None:
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    k: prepare_dataset(v, tokenizer, args.max_length, f"eval[{k}]") for k, v in eval_dataset.items()
                }
            else:
                eval_dataset = prepare_dataset(eval_dataset, tokenizer, args.max_length, "eval")

        if data_collator is None:
            data_collator = PromptKDDataCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length)

        teacher = self._load_teacher(teacher_model, args)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            peft_config=peft_config,
        )
        # Our own reduction (token sums over the window's completion tokens) replaces the Trainer's label counting.
        self.model_accepts_loss_kwargs = False

        self._vocab_size = self._check_vocab(self.model, teacher, tokenizer, args.truncate_vocab)
        if args.disable_dropout:
            disable_dropout_in_model(self.model)
            disable_dropout_in_model(teacher)

        # num_virtual_tokens=0 turns the prompt off: plain on-policy distillation from the frozen teacher (GKD with
        # lmbda=1, beta=1 / MiniLLM's token-level objective), the ablation baseline of PromptKD.
        self.use_prompt = args.num_virtual_tokens > 0
        if self.use_prompt:
            self.teacher = build_prompted_teacher(teacher, tokenizer, args.num_virtual_tokens, args.prompt_init_text)
        else:
            if isinstance(teacher, PeftModel):
                raise ValueError("`num_virtual_tokens=0` turns the prompt off; pass the teacher without its adapter.")
            self.teacher = teacher.requires_grad_(False)
        # DDP / ZeRO-1/2: a full teacher on every rank. ZeRO-3: the teacher's weights are partitioned across ranks by
        # an optimizer-less ZeRO-3 engine, and the backward to the prompt re-gathers them (distributed.py).
        self._teacher_engine = None
        if is_zero3(self.accelerator):
            self._teacher_engine = shard_teacher_zero3(self.teacher, self.accelerator)
            logger.info(f"Teacher partitioned by ZeRO-3: {teacher_numel(self._teacher_base)}")
        else:
            self.teacher.to(self.accelerator.device)
        self.teacher.eval()
        teacher_gc = args.gradient_checkpointing if args.teacher_gradient_checkpointing is None else (
            args.teacher_gradient_checkpointing
        )
        teacher_gc = teacher_gc and self.use_prompt  # without a prompt nothing back-propagates through the teacher
        if teacher_gc:
            # The backward to the prompt runs through the whole frozen teacher; without checkpointing it keeps all
            # of the teacher's activations (the official OPT/Llama runs checkpoint both models). The prompt makes
            # the input embeddings require grad, which reentrant checkpointing needs (paper.md §5.11).
            self._teacher_base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs or {"use_reentrant": False}
            )
        # transformers checkpoints only in train mode, and the official code runs the prompted teacher in train mode
        # in the prompt step; with dropout disabled, train mode changes nothing else.
        self._teacher_train_mode = teacher_gc or _has_active_dropout(self.teacher)
        self._student_dropout = _has_active_dropout(self.model)
        self._student_keeps_logits = _accepts_logits_to_keep(self.model)
        self._teacher_keeps_logits = _accepts_logits_to_keep(self._teacher_base)
        self.prompt_optimizer: torch.optim.Optimizer | None = None
        self.prompt_scheduler = None

        # The tokenizer's EOS first: it is the token forced at the length cap; the generation config may list more
        # end-of-turn tokens, any of which ends a sample.
        extra = self.model.generation_config.eos_token_id
        extra = [extra] if isinstance(extra, int) else list(extra or [])
        eos = [tokenizer.eos_token_id] + [e for e in extra if e != tokenizer.eos_token_id]
        self._eos_ids = eos
        self.generation_config = GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            do_sample=True,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
            # Kept on even when training uses gradient checkpointing (GKD turns it off, a large slowdown).
            use_cache=True,
        )

        # Per-term metrics, averaged and emitted by SFTTrainer.log.
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._window: list[dict[str, torch.Tensor]] = []
        self._window_index = 0
        self._window_stats: dict[str, torch.Tensor] = {}
        self._window_ready = False
        self._num_items: torch.Tensor | None = None

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _resolve_args(model, args) -> PromptKDConfig:
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = PromptKDConfig(f"{str(name).rstrip('/').split('/')[-1]}-PromptKD")
        elif isinstance(args, PromptKDConfig):
            args = copy.deepcopy(args)  # the caller's object is never mutated
        elif isinstance(args, TrainingArguments):
            dict_args = args.to_dict()
            dict_args["hub_token"] = args.hub_token
            args = PromptKDConfig(**{k: v for k, v in dict_args.items() if k in PromptKDConfig.__dataclass_fields__})
        else:
            raise TypeError(f"`args` must be a PromptKDConfig, got {type(args).__name__}.")
        # Columns are consumed by our collator, and datasets are tokenized by `prepare_dataset`.
        args.remove_unused_columns = False
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        return args

    @staticmethod
    def _load_teacher(teacher_model, args: PromptKDConfig):
        if teacher_model is None:
            teacher_model = args.teacher_model_name_or_path
        if teacher_model is None:
            raise ValueError("A teacher is required: pass `teacher_model` or set `teacher_model_name_or_path`.")
        if isinstance(teacher_model, str):
            kwargs = dict(args.teacher_model_init_kwargs or {})
            kwargs.setdefault("trust_remote_code", args.trust_remote_code)
            dtype = kwargs.get("dtype")
            if isinstance(dtype, str) and dtype != "auto":
                kwargs["dtype"] = getattr(torch, dtype)
            return AutoModelForCausalLM.from_pretrained(teacher_model, **kwargs)
        if args.teacher_model_init_kwargs:
            raise ValueError(
                "`teacher_model_init_kwargs` only applies when the teacher is given as a string; the teacher passed is "
                "already instantiated. Remove `teacher_model_init_kwargs`."
            )
        return teacher_model

    @staticmethod
    def _check_vocab(student, teacher, tokenizer, truncate: bool) -> int | None:
        s_vocab = student.config.get_text_config().vocab_size
        t_model = teacher.get_base_model() if isinstance(teacher, PeftModel) else teacher
        t_vocab = t_model.config.get_text_config().vocab_size
        shared = min(s_vocab, t_vocab)
        if len(tokenizer) > shared:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the models' shared vocabulary has {shared} rows; "
                "resize the embeddings (`model.resize_token_embeddings(len(tokenizer))`) of both models."
            )
        if s_vocab == t_vocab:
            return None
        if not truncate:
            raise ValueError(
                f"Student and teacher vocabulary sizes differ ({s_vocab} vs {t_vocab}); their distributions cannot "
                "be compared position by position. If both use the same tokenizer and the extra rows are padding "
                "(e.g. Qwen2.5 0.5B vs 7B), set `truncate_vocab=True` to compare them on the shared "
                f"{shared} entries; otherwise pick a teacher/student pair with the same tokenizer."
            )
        return shared

    @property
    def _teacher_base(self) -> PreTrainedModel:
        """The teacher's transformers model (under the prompt adapter when there is one)."""
        return self.teacher.get_base_model() if isinstance(self.teacher, PeftModel) else self.teacher

    # ------------------------------------------------------------------ prompt optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.use_prompt:
            self._create_prompt_optimizer(num_training_steps)
        return scheduler

    def _create_prompt_optimizer(self, num_training_steps: int) -> None:
        if self.prompt_optimizer is not None:
            return
        args = self.args
        lr = args.learning_rate if args.teacher_learning_rate is None else args.teacher_learning_rate
        # Its own AdamW, as the official code gives the teacher engine its own optimizer (wd 0.01, prompt decayed).
        self.prompt_optimizer = torch.optim.AdamW(
            [prompt_parameter(self.teacher)],
            lr=lr,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            weight_decay=args.teacher_weight_decay,
        )
        # Same schedule as the student's (official code: both engines share the warm-up / constant schedule).
        self.prompt_scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=self.prompt_optimizer,
            num_warmup_steps=args.get_warmup_steps(num_training_steps),
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
        )

    def _step_prompt(self) -> None:
        """All-reduce, clip and apply the prompt's accumulated gradient, then advance its scheduler."""
        param = prompt_parameter(self.teacher)
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        if self.accelerator.num_processes > 1:
            # The prompt lives outside the DDP/DeepSpeed engine; each rank's loss is its token sum over the global
            # count divided by num_processes, so the mean over ranks is the global gradient (as DDP would compute).
            torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
            param.grad.div_(self.accelerator.num_processes)
        if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_([param], self.args.max_grad_norm)
            self._window_stats["prompt_grad_norm"] = norm.detach().float()
        self.prompt_optimizer.step()
        self.prompt_scheduler.step()
        self.prompt_optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ sampling

    def _draw_on_policy(self, micro_step: int) -> bool:
        if self.args.lmbda >= 1.0:
            return True
        # A pure function of (seed, step, micro-step): identical on every rank and after a resume. It is still
        # broadcast from rank 0 so ranks can never diverge (a per-rank draw can deadlock ZeRO-3 gathers).
        key = (self.args.seed * 1_000_003 + self.state.global_step) * 1_009 + micro_step
        draw = [random.Random(key).random() < self.args.lmbda]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(draw, from_process=0)
        return bool(draw[0])

    def _max_new_tokens(self, prompt_width: int) -> int:
        if self.args.max_length is None:
            return self.args.max_new_tokens
        return max(1, min(self.args.max_new_tokens, self.args.max_length - prompt_width))

    def _generate_completions(self, model: nn.Module, batch: dict[str, torch.Tensor], source: str) -> torch.Tensor:
        """Sample new tokens `[B, N]` for the batch's left-padded prompts from the student or the prompted teacher."""
        prompts, prompt_mask = batch["prompts"], batch["prompt_attention_mask"]
        gen_config = copy.copy(self.generation_config)
        gen_config.max_new_tokens = self._max_new_tokens(prompts.shape[1])
        if source == "teacher":
            if self.use_prompt:
                return generate_with_prompt(self.teacher, prompts, prompt_mask, generation_config=gen_config)
            out = self.teacher.generate(input_ids=prompts, attention_mask=prompt_mask, generation_config=gen_config)
            return out[:, prompts.shape[1] :]
        with unwrap_model_for_generation(
            model, self.accelerator, gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs
        ) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()  # official code samples with S.eval()
            with torch.no_grad():
                out = unwrapped.generate(input_ids=prompts, attention_mask=prompt_mask, generation_config=gen_config)
            unwrapped.train(was_training)
        return out[:, prompts.shape[1] :]

    def _completion_lengths(self, completions: torch.Tensor) -> torch.Tensor:
        """Number of tokens kept per sample: up to and including the first EOS, or all of them."""
        is_eos = torch.isin(completions, torch.tensor(self._eos_ids, device=completions.device))
        has_eos = is_eos.any(dim=1)
        first = is_eos.int().argmax(dim=1)
        return torch.where(has_eos, first + 1, torch.full_like(first, completions.shape[1]))

    def _build_on_policy_batch(self, batch: dict[str, torch.Tensor], completions: torch.Tensor) -> dict:
        lengths = self._completion_lengths(completions)
        hit_cap = lengths == completions.shape[1]
        completions = completions.clone()
        if self.args.force_eos:
            # Official code: a sample that reaches the length cap gets its last token replaced by EOS.
            ends_with_eos = torch.isin(completions[:, -1], torch.tensor(self._eos_ids, device=completions.device))
            completions[hit_cap & ~ends_with_eos, -1] = self._eos_ids[0]
        prompts = [
            row[mask.bool()] for row, mask in zip(batch["prompts"], batch["prompt_attention_mask"])
        ]
        comps = [row[: int(n)] for row, n in zip(completions, lengths)]
        packed = pack_sequences(prompts, comps, self.processing_class.pad_token_id, self.args.max_length)
        out = dict(batch)
        out.update({k: v.to(batch["prompts"].device) for k, v in packed.items()})
        return out

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the accumulation window; its completions are sampled when its first micro-batch is trained.

        Sampling is deferred to `training_step` because, on resume, the Trainer restores the RNG state only after
        fetching the first window: sampling here would make a resumed run diverge from an uninterrupted one.
        """
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._window, self._window_index, self._window_ready = batch_samples, 0, False
        return batch_samples, None

    def _prepare_window(self) -> None:
        """Sample completions for every micro-batch of the window and count its completion tokens globally."""
        device = self.args.device
        window, on_policy = [], 0
        for batch in self._window:
            batch = self._prepare_inputs(batch)
            if self._draw_on_policy(len(window)):
                batch = self._build_on_policy_batch(batch, self._generate_completions(self.model_wrapped, batch, "student"))
                on_policy += 1
            elif self.args.seq_kd:
                batch = self._build_on_policy_batch(batch, self._generate_completions(None, batch, "teacher"))
            window.append(batch)

        # Normalise every term by the completion tokens of the whole window on all processes: token sums divided by
        # that count give the same update for batch 4 x accumulation 1 and batch 1 x accumulation 4 (trl#4719). The
        # count is divided by num_processes because DDP / DeepSpeed average gradients over ranks.
        local = torch.stack([(b["labels"][:, 1:] != -100).sum() for b in window]).sum().to(device)
        total = self.accelerator.gather(local.reshape(1)).sum() if self.accelerator.num_processes > 1 else local
        self._num_items = total.float().clamp(min=1) / self.accelerator.num_processes

        self._window, self._window_ready = window, True
        n_seq = sum(b["labels"].shape[0] for b in window)
        self._window_stats = {
            "completion_length": local.float() / max(n_seq, 1),
            "on_policy_fraction": torch.tensor(on_policy / max(len(window), 1), device=device),
        }

    # ------------------------------------------------------------------ losses

    def _reg_weight(self) -> float:
        """w(t) = reg_coef * (1 - t / T) with t the optimizer step being computed (1-based, as the official code's
        global_step when the loss is formed: the weight goes from reg_coef * (1 - 1/T) to 0, paper.md §1.3)."""
        if self.args.reg_coef == 0:
            return 0.0
        total = max(self.state.max_steps, 1)
        return self.args.reg_coef * max(0.0, 1.0 - (self.state.global_step + 1) / total)

    def _div(self, logits, target, loss_type, mask, num_items):
        if self._vocab_size is not None:
            logits, target = logits[..., : self._vocab_size], target[..., : self._vocab_size]
        return divergence(
            logits,
            target,
            loss_type,
            mask=mask,
            beta=self.args.beta,
            alpha=self.args.skew_alpha,
            temperature=self.args.loss_temperature,
            num_items=num_items,
            chunk_size=self.args.divergence_chunk_size,
        )

    @staticmethod
    def _logits_to_keep(batch) -> int:
        """Positions whose logits the losses read: from the one before the earliest label to the end.

        Prompt positions are never compared, so the output layer (the largest matmul for big vocabularies) runs only
        on the last k positions via transformers' `logits_to_keep` (16-20 % of a step, benchmarks/step_time.py).
        """
        if "logits_to_keep" not in batch:
            has_label = batch["labels"] != -100
            length = has_label.shape[1]
            rows = has_label.any(dim=1)
            first = int(has_label.float().argmax(dim=1)[rows].min()) if bool(rows.any()) else 1
            batch["logits_to_keep"] = length - max(first, 1) + 1
        return batch["logits_to_keep"]

    def _loss_mask(self, batch) -> torch.Tensor:
        """Completion positions among the kept logits (the last k - 1, after the causal shift)."""
        k = self._logits_to_keep(batch)
        return batch["labels"][:, batch["labels"].shape[1] - k + 1 :] != -100

    def _student_logits(self, model, batch) -> torch.Tensor:
        k = self._logits_to_keep(batch) if self._student_keeps_logits else 0
        kwargs = {"logits_to_keep": k} if k else {}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **kwargs)
        logits = logits.logits[:, :-1]
        return logits if k else logits[:, logits.shape[1] - self._logits_to_keep(batch) + 1 :]

    def _teacher_logits(self, batch, prompted: bool = True, grad: bool = False) -> torch.Tensor:
        """Teacher logits aligned with the student's; `grad=True` is the forward that back-propagates to the prompt.

        Only that forward runs in train mode (official code: prompted teacher in train mode in the prompt step, eval
        mode for its targets), which is also what lets transformers checkpoint it.
        """
        fn = prompted_teacher_logits if prompted and self.use_prompt else plain_teacher_logits
        self.teacher.train(grad and self._teacher_train_mode)
        try:
            k = self._logits_to_keep(batch)
            logits = fn(self.teacher, batch["input_ids"], batch["attention_mask"], k if self._teacher_keeps_logits else 0)
            return logits[:, logits.shape[1] - k :][:, :-1]
        finally:
            self.teacher.eval()

    def _prompt_losses(self, prompted_logits, student_target, batch, num_items):
        """Prompt loss D_prompt(prompted teacher, student) and regulariser D_reg(prompted teacher, teacher)."""
        mask = self._loss_mask(batch)
        prompt_loss = self._div(prompted_logits, student_target, self.args.prompt_loss_type, mask, num_items)
        weight = self._reg_weight()
        reg_loss = torch.zeros((), device=prompt_loss.device)
        if weight > 0:
            with torch.no_grad():
                plain = self._teacher_logits(batch, prompted=False)
            reg_loss = self._div(prompted_logits, plain, self.args.reg_loss_type, mask, num_items)
        return prompt_loss, reg_loss, weight

    def _student_target(self, model, batch, logits_with_grad=None):
        """The student's distribution as the prompt's (detached) target, in eval mode as the official code does."""
        if logits_with_grad is not None and not self._student_dropout:
            return logits_with_grad.detach()
        with torch.no_grad():
            was_training = model.training
            model.eval()
            logits = self._student_logits(model, batch)
            model.train(was_training)
        return logits

    def _paper_prompt_update(self, model, first_student_logits, num_items) -> None:
        """Official order: the prompt's loss over the whole window, backward, prompt step (paper.md §1.2 step 2)."""
        for i, batch in enumerate(self._window):
            target = self._student_target(model, batch, first_student_logits if i == 0 else None)
            prompted = self._teacher_logits(batch, grad=True)
            prompt_loss, reg_loss, weight = self._prompt_losses(prompted, target, batch, num_items)
            (prompt_loss + weight * reg_loss).backward()
            self._add_stat("loss/prompt", prompt_loss)
            self._add_stat("loss/reg", reg_loss)
        self._step_prompt()

    def _add_stat(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self._window_stats[key] = self._window_stats.get(key, 0.0) + value

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: student term on the dataset's completions
            return self._eval_loss(model, inputs, return_outputs)
        num_items = num_items_in_batch
        mask = self._loss_mask(inputs)
        student_logits = self._student_logits(model, inputs)
        if self.args.update_order == "paper" or not self.use_prompt:
            if self._window_index == 0 and self.use_prompt:
                self._paper_prompt_update(model, student_logits, num_items)
            with torch.no_grad():
                target = self._teacher_logits(inputs)
            loss = self._div(student_logits, target, self.args.student_loss_type, mask, num_items)
            self._add_stat("loss/student", loss)
        else:
            prompted = self._teacher_logits(inputs, grad=True)
            student_loss = self._div(student_logits, prompted.detach(), self.args.student_loss_type, mask, num_items)
            target = self._student_target(model, inputs, student_logits)
            prompt_loss, reg_loss, weight = self._prompt_losses(prompted, target, inputs, num_items)
            loss = student_loss + prompt_loss + weight * reg_loss
            self._add_stat("loss/student", student_loss)
            self._add_stat("loss/prompt", prompt_loss)
            self._add_stat("loss/reg", reg_loss)
        return (loss, None) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self._window_ready:  # first micro-batch of the window
            self._prepare_window()
        inputs = self._window[self._window_index]
        loss = super().training_step(model, inputs, self._num_items)
        last = self._window_index == len(self._window) - 1
        self._window_index += 1
        if last:
            if self.args.update_order == "joint" and self.use_prompt:
                self._step_prompt()
            self._flush_window_stats()
        return loss

    def _flush_window_stats(self) -> None:
        stats = dict(self._window_stats)
        if self.use_prompt:
            stats["reg_weight"] = torch.tensor(self._reg_weight())
        keys = sorted(stats)
        values = torch.stack([torch.as_tensor(stats[k], dtype=torch.float32).to(self.accelerator.device) for k in keys])
        if self.accelerator.num_processes > 1:
            values = self.accelerator.gather(values.unsqueeze(0)).mean(0)
        for k, v in zip(keys, values.tolist()):
            self._metrics["train"][k].append(v)

    def _eval_loss(self, model, inputs, return_outputs):
        mask = self._loss_mask(inputs)
        student_logits = self._student_logits(model, inputs)
        target = self._teacher_logits(inputs)
        loss = self._div(student_logits, target, self.args.student_loss_type, mask, None)
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self._eval_loss(model, inputs, False)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ saving and resuming

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student as a regular HF model and the prompt as a PEFT adapter in `output_dir/teacher_prompt`."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save and self.use_prompt:
            self.teacher.save_pretrained(os.path.join(output_dir, PROMPT_ADAPTER_DIR), safe_serialization=True)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save and self.prompt_optimizer is not None:
            torch.save(self.prompt_optimizer.state_dict(), os.path.join(output_dir, PROMPT_OPTIMIZER_NAME))
            torch.save(self.prompt_scheduler.state_dict(), os.path.join(output_dir, PROMPT_SCHEDULER_NAME))

    def _load_prompt(self, checkpoint: str) -> None:
        adapter = os.path.join(checkpoint, PROMPT_ADAPTER_DIR, "adapter_model.safetensors")
        if not os.path.exists(adapter):
            raise FileNotFoundError(
                f"{checkpoint} holds no prompt adapter ({adapter}); it was not written by PromptKDTrainer."
            )
        # Read on CPU: safetensors rejects indexed CPU devices ("device cpu:0 is invalid"), which is what
        # `accelerator.device` is in a multi-process CPU run; the state dict is copied into the prompt's own device.
        set_peft_model_state_dict(self.teacher, load_file(adapter, device="cpu"))

    def _load_best_model(self) -> None:
        # `load_best_model_at_end` restores the best student; the prompt of the same checkpoint goes with it (the
        # official code keeps the best student and prompt together, `best_rougeL`).
        super()._load_best_model()
        if self.use_prompt:
            self._load_prompt(self.state.best_model_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Runs on every resume path (plain, DDP and DeepSpeed), unlike `_load_from_checkpoint`.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not self.use_prompt:
            return
        self._load_prompt(checkpoint)
        self._create_prompt_optimizer(self.state.max_steps)
        for obj, name in ((self.prompt_optimizer, PROMPT_OPTIMIZER_NAME), (self.prompt_scheduler, PROMPT_SCHEDULER_NAME)):
            path = os.path.join(checkpoint, name)
            if os.path.exists(path):
                # map_location "cpu" for the same reason ("cpu:0" cannot be restored); Optimizer.load_state_dict
                # moves the moments to the prompt's device.
                obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""[`PromptKDTrainer`]: PromptKD as a drop-in TRL trainer (GKD-compatible constructor and arguments).

The method is the three phases of [`PromptKDTrainer.training_step`]; construction is a list of named steps, each
defined next to what it prepares (`data.py`, `teacher.py`, `sampling.py`); saving the prompt is `checkpointing.py`,
the model card `model_card.py`.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn as nn
from accelerate.utils import gather_object
from datasets import Dataset, IterableDataset
from peft import PeftConfig, PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, TrainingArguments
from transformers.trainer_utils import EvalPrediction
from transformers.utils import logging
from trl import SFTTrainer
from trl.trainer.utils import disable_dropout_in_model

from .checkpointing import COMPLETIONS_DIR, PromptCheckpointing
from .checks import check_causal, check_models, fitted_length_advice
from .collation import PromptKDDataCollator, check_collator
from .data import (
    eval_completions_reason,
    prepare_datasets,
    prepare_eval_datasets,
    prepare_tokenizer,
    recheck_prompt_lengths,
)
from .distributed import check_fsdp_unsupported, init_deepspeed_comm
from .divergences import divergence
from .evaluation import CallbackMetricsLogging
from .files import check_writes_inside
from .model_card import TeacherModelCard
from .promptkd_config import PromptKDConfig
from .sampling import (
    Window,
    align_logits,
    build_generation_config,
    check_finite,
    count_completion_tokens,
    draw_on_policy,
    generate,
    logits_to_keep,
    loss_mask,
    max_new_tokens,
    with_completions,
)
from .teacher import (
    accepts_logits_to_keep,
    backward_prompt_loss,
    create_prompt_optimizer,
    has_active_dropout,
    load_teacher,
    plain_teacher_logits,
    prepare_teacher,
    prompt_parameter,
    prompted_teacher_logits,
    step_prompt,
)


logger = logging.get_logger(__name__)


def _config_view(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.args, name), doc=f"{doc} Read-only: `args.{name}`.")


class PromptKDTrainer(PromptCheckpointing, TeacherModelCard, CallbackMetricsLogging, SFTTrainer):
    """Trainer for PromptKD (Kim, Jang, Yang, Findings of EMNLP 2024): on-policy distillation through a soft prompt
    trained on the frozen teacher with student guidance.

    The constructor mirrors TRL's `GKDTrainer`. Each optimizer step has three phases, one method each (official code,
    gmkim-ai/PromptKD @ 383182f4, `train_promptkd.py` L312-392):

    1. [`~PromptKDTrainer.sample_window`]: the student samples completions (pseudo-targets) for every micro-batch of
       the gradient-accumulation window;
    2. [`~PromptKDTrainer.prompt_step`]: the prompt is trained on KL(P_T^prompt || P_S) + w(t) KL(P_T^prompt || P_T)
       over the window and takes a step (its own AdamW and scheduler);
    3. [`~PromptKDTrainer.compute_loss`]: each micro-batch's student loss KL(P_S || P_T^prompt) with the updated
       prompt; the Trainer back-propagates it and steps the student.

    With `update_order="joint"` there is no phase 2: each micro-batch back-propagates the sum of all terms once and
    the prompt steps at the end of the window.

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
            Defaults to [`~promptkd_trainer.collation.PromptKDDataCollator`].
        train_dataset, eval_dataset (`Dataset`):
            `messages`, `prompt`/`completion` or prompt-only `prompt` datasets.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            Tokenizer shared by student and teacher. Loaded from the student when omitted. Without a pad token, EOS
            is used (as the official code does).
        compute_metrics, callbacks, optimizers, preprocess_logits_for_metrics:
            As in [`~transformers.Trainer`].
        peft_config (`PeftConfig`, *optional*):
            Adapter for the *student* (e.g. LoRA), as in `SFTTrainer`.
        formatting_func (`Callable[[dict], str | dict]`, *optional*):
            Maps a raw row to its prompt text (as `SFTTrainer`'s returns the text; a string `completion` column is
            kept), or to a dict with `prompt`/`completion` or `messages` (docs/datasets.md).
        quantization_config (`BitsAndBytesConfig`, *optional*):
            Quantization of the *student* when it is given as a string, as in TRL's `DistillationTrainer` and
            `SFTTrainer` (combine with `peft_config` for QLoRA); ignored, with a warning, for an instantiated model.
            The teacher is quantized through `teacher_model_init_kwargs`, as in TRL.
        tools (`list[Callable]`, *optional*):
            `DistillationTrainer`'s tool calling. Refused when non-empty: PromptKD samples single-turn completions.
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

    # GKDTrainer's attributes, for code and callbacks written against it. The hyper-parameters are read-only views of
    # the config (GKD copies them at construction); change them in the config.
    lmbda = _config_view("lmbda", "Probability of an on-policy (student-sampled) micro-batch.")
    beta = _config_view("beta", "Interpolation of the `jsd` loss types.")
    temperature = _config_view("temperature", "Sampling temperature of the pseudo-targets.")
    seq_kd = _config_view("seq_kd", "Whether off-policy micro-batches are sampled from the prompted teacher.")

    @property
    def teacher_model(self) -> PeftModel | PreTrainedModel:
        """The teacher, as `GKDTrainer.teacher_model`: the frozen model with its soft prompt (a `PeftModel`), or the
        plain frozen model when `num_virtual_tokens=0`."""
        return self.teacher

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
        formatting_func: Callable[[dict], str | dict] | None = None,
        quantization_config=None,
        tools: list[Callable] | None = None,
    ):
        if model is None:
            raise ValueError("`model` (the student) is required: pass a model or its id / path.")
        if tools:
            raise ValueError(
                f"`tools` is not supported ({len(tools)} given): PromptKDTrainer does not call tools. PromptKD samples"
                " single-turn completions from the student and trains the teacher's soft prompt on them; multi-turn "
                "tool-calling rollouts (DistillationTrainer's `tools`) are not implemented. Pass no `tools`."
            )
        args = self._resolve_args(model, args)
        if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
            raise ValueError(
                f"Prompt-learning PEFT methods ({type(peft_config).__name__}) are not supported for the student: "
                "PromptKD's soft prompt lives on the teacher (`num_virtual_tokens`), and virtual tokens on the "
                "student would shift its logits against the teacher's. Use a weight-based adapter such as LoRA."
            )
        # Before any model is loaded: FSDP is refused (trl#2580), and under ZeRO-3 `from_pretrained` needs
        # deepspeed.comm up to partition models given as strings.
        check_fsdp_unsupported(args)
        init_deepspeed_comm(args)
        # Data before models, so that a bad dataset fails before anything heavy is built.
        tokenizer = prepare_tokenizer(model, processing_class, args)
        train_dataset, eval_dataset = prepare_datasets(train_dataset, eval_dataset, tokenizer, args, formatting_func)
        if data_collator is None:
            data_collator = PromptKDDataCollator(
                pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        check_collator(data_collator, train_dataset)
        teacher = load_teacher(teacher_model, args)

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
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        # Our own reduction (token sums over the window's completion tokens) replaces the Trainer's label counting.
        self.model_accepts_loss_kwargs = False
        # The student agrees with the tokenizer on the pad token (EOS when it has none), as DistillationTrainer makes
        # it: otherwise transformers realigns it at train time and reports a change the user did not make.
        self.model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
        self.model.generation_config.pad_token_id = tokenizer.pad_token_id
        self._formatting_func = formatting_func
        configured_max_length = args.max_length
        self._vocab_size = check_models(self.model, teacher, tokenizer, args)
        if args.max_length != configured_max_length:  # lowered to fit the models: prompts must fit the new value
            self.train_dataset, self.eval_dataset = recheck_prompt_lengths(
                self.train_dataset, self.eval_dataset, args.max_length, fitted_length_advice(self.model, teacher, args)
            )
        if isinstance(self.data_collator, PromptKDDataCollator):
            self.data_collator.max_length = args.max_length  # as lowered to fit the models' positions
        if args.disable_dropout:
            disable_dropout_in_model(self.model)
        # num_virtual_tokens=0 turns the prompt off: plain on-policy distillation from the frozen teacher (GKD with
        # lmbda=1, beta=1 / MiniLLM's token-level objective), the ablation baseline of PromptKD.
        self.use_prompt = args.num_virtual_tokens > 0
        self.teacher, self._teacher_engine, self._teacher_train_mode = prepare_teacher(
            teacher, tokenizer, args, self.accelerator
        )
        check_causal(self.teacher, "teacher")
        self.generation_config, self._eos_ids = build_generation_config(self.model, tokenizer, args)

        self._student_dropout = has_active_dropout(self.model)
        self._student_keeps_logits = accepts_logits_to_keep(self.model)
        self._teacher_keeps_logits = accepts_logits_to_keep(self.teacher)
        self.prompt_optimizer: torch.optim.Optimizer | None = None
        self.prompt_scheduler = None
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}  # averaged and logged by SFTTrainer
        self._window: Window | None = None
        self._eval_source: str | None = None  # what the current evaluation measures eval_loss on
        self._eval_batches = 0
        # DistillationTrainer's `log_completions`: the latest optimizer step's on-policy (prompt, completion) pairs.
        self._completion_logs: dict[str, list[str]] = {"prompt": [], "completion": []}

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
        args.check_consistency()  # fields that hold one setting (e.g. a later `args.beta = ...`) must still agree
        # Columns are consumed by our collator, and datasets are tokenized by `prepare_dataset`.
        args.remove_unused_columns = False
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        return args

    # ------------------------------------------------------------------ one optimizer step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the next gradient-accumulation window; its completions are sampled by `training_step`.

        Sampling is deferred because, on resume, the Trainer restores the RNG state only after fetching the first
        window: sampling here would make a resumed run diverge from an uninterrupted one.
        """
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._window = Window(batches)
        return batches, None

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One micro-step: `inputs` is a raw micro-batch of the window fetched by `get_batch_samples`.

        The window's first micro-step samples it (phase 1) and, in paper order, trains the prompt on it (phase 2).
        Every micro-step then back-propagates the student loss of its sampled micro-batch (phase 3, `compute_loss`),
        normalised by the window's completion tokens (`num_items_in_batch` of the Trainer is not used: it is counted
        before sampling). Called outside `train()`, `inputs` is a window of its own.
        """
        window = self._window
        index = window.position(inputs) if window is not None else None
        if index is None:
            window, index = Window([inputs]), 0
            self._window = window
        if window.batches is None:
            self.sample_window(model, window)
            if self.use_prompt and self.args.update_order == "paper":
                with self.compute_loss_context_manager():
                    self.prompt_step(model, window)
        loss = super().training_step(model, window.batches[index], window.num_items)
        if index == len(window.raw) - 1:
            if self.use_prompt and self.args.update_order == "joint":
                self._step_prompt(window)
            self._log_window(window)
        return loss

    def sample_window(self, model: nn.Module, window: Window) -> None:
        """Phase 1, pseudo-targets: completions y ~ S(x) for every micro-batch of the window.

        Official code, block "1. Sampling from Student": the student samples in eval mode without gradients, each
        sample is cut after its first EOS, and a sample that reaches the length cap ends with a forced EOS. A
        micro-batch is on-policy with probability `lmbda` (1 in the official code); off-policy ones use the dataset's
        completion or, with `seq_kd`, a sample of the prompted teacher.
        """
        batches, on_policy = [], 0
        if self.args.log_completions:
            self._completion_logs = {"prompt": [], "completion": []}  # the latest optimizer step's only
        for i, batch in enumerate(window.raw):
            batch = self._prepare_inputs(batch)
            source = None
            if self._draw_on_policy(i):
                source, on_policy = "student", on_policy + 1
            elif self.args.seq_kd:
                source = "teacher"
            if source is not None:
                completions = self._generate_completions(model if source == "student" else None, batch, source)
                batch = self._with_completions(batch, completions)
                if source == "student" and self.args.log_completions:
                    self._record_completions(batch)
            batches.append(batch)
        local, window.num_items = count_completion_tokens(batches, self.accelerator)
        window.batches = batches
        n_seq = sum(b["labels"].shape[0] for b in batches)
        window.stats["completion_length"] = local.float() / max(n_seq, 1)
        window.stats["on_policy_fraction"] = torch.tensor(on_policy / len(batches), device=local.device)

    def prompt_step(self, model: nn.Module, window: Window) -> None:
        """Phase 2, student-guided prompt tuning: L_prompt + w(t) L_reg over the window, then a prompt step.

        L_prompt = KL(P_T^prompt || P_S) with the student's distribution as a fixed target (eval mode, no gradient),
        L_reg = KL(P_T^prompt || P_T) towards the same teacher without prompt, and
        w(t) = reg_coef * (1 - (global_step + 1) / max_steps). Official code, block "2. Training Teacher"
        (`teacher_model.backward(teacher_loss); teacher_model.step()`). Each micro-batch's backward frees its graph
        before the next; the student's graph is never kept alive here.
        """
        for batch in window.batches:
            target = self._student_target(model, batch)
            prompted = self._teacher_logits(batch, grad=True)
            prompt_loss, reg_loss, weight = self._prompt_losses(prompted, target, batch, window.num_items)
            backward_prompt_loss(prompt_loss + weight * reg_loss, self.accelerator)
            window.add("loss/prompt", prompt_loss)
            window.add("loss/reg", reg_loss)
        check_finite(window.stats["loss/prompt"] + window.stats["loss/reg"], window, self.state.global_step + 1)
        self._step_prompt(window)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Phase 3, the student loss L_student = KL(P_S || P_T^prompt) on the micro-batch's completion tokens.

        The prompted teacher is the target (no gradient, eval mode; official code, block "3. Training Student"). Its
        token sum is divided by `num_items_in_batch` (the window's completion tokens in training), or by the batch's
        completion tokens when `None`. In training with `update_order="joint"`, the prompt's terms L_prompt +
        w(t) L_reg are added, so that one backward reaches both the student and the prompt. Changes no parameter.
        """
        mask = loss_mask(inputs)
        student_logits = self._student_logits(model, inputs)
        joint = model.training and self.use_prompt and self.args.update_order == "joint"
        if joint:
            prompted = self._teacher_logits(inputs, grad=True)
            target = prompted.detach()
        else:
            with torch.no_grad():
                target = self._teacher_logits(inputs)
        loss = self._div(
            student_logits, target, self.args.student_loss_type, mask, num_items_in_batch, beta=self.args.beta
        )
        self._add_train_stat(model, "loss/student", loss)
        if joint:
            student_target = self._student_target(model, inputs, student_logits)
            prompt_loss, reg_loss, weight = self._prompt_losses(prompted, student_target, inputs, num_items_in_batch)
            loss = loss + prompt_loss + weight * reg_loss
            self._add_train_stat(model, "loss/prompt", prompt_loss)
            self._add_train_stat(model, "loss/reg", reg_loss)
        if model.training:  # before the backward: under DeepSpeed the engine steps inside it
            check_finite(loss, self._window, self.state.global_step + 1)
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate`; a dataset (or dict of them) passed here is tokenized and checked first, as the ones
        given at construction are."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = prepare_eval_datasets(eval_dataset, self.processing_class, self.args, self._formatting_func)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def evaluation_loop(self, *args, **kwargs):
        self._eval_source, self._eval_batches = None, 0  # each evaluation (each eval set) decides anew
        return super().evaluation_loop(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the student term on the eval set's own completions, or on completions the student samples for
        the eval prompts (`args.eval_on_policy`; a prompt-only set by default, as `DistillationTrainer` evaluates).
        When metrics are asked for (`compute_metrics`), also the student's logits `[B, L, V]` and the labels, as
        `Trainer.prediction_step` returns them, for `preprocess_logits_for_metrics` and `compute_metrics`."""
        inputs = self._prepare_inputs(inputs)
        inputs = self._eval_completions(model, inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs).detach()
            if prediction_loss_only:
                return loss, None, None
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        return loss, logits.logits, inputs["labels"]

    def _eval_completions(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The eval batch with the completions `eval_loss` is measured on: its own, or student samples.

        The rule of `PromptKDConfig.eval_on_policy`, applied batch by batch so that a streamed eval set (which cannot
        be scanned up front) is held to it too: with `None`, one evaluation never mixes the two sources.
        """
        has_completion = (batch["labels"] != -100).any(dim=1)
        policy = self.args.eval_on_policy
        if policy is True:
            source = "student"
        elif bool(has_completion.all()):
            source = "dataset"
        elif policy is None and not bool(has_completion.any()):
            source = "student"
        else:
            source = None
        if source is None:
            n = int((~has_completion).sum())
            what = f"{n} of the {len(has_completion)} rows of eval batch {self._eval_batches} have no completion"
        elif self._eval_source not in (None, source):
            kind = "prompt-only" if source == "student" else "with completions"
            what = f"eval batch {self._eval_batches} is {kind}, unlike the batches before it in this evaluation"
        if source is None or self._eval_source not in (None, source):
            raise ValueError(
                f"The eval dataset cannot be measured: {what}, but {eval_completions_reason(policy)}. Add "
                "completions, or drop those rows first, e.g. `dataset.filter(lambda x: len(x['completion']) > 0)`."
            )
        self._eval_source = source
        self._eval_batches += 1
        if source == "dataset":
            return batch
        # A fixed seed per eval batch: the same student gives the same eval_loss, and the training RNG is untouched.
        device = self.accelerator.device
        devices = []
        if device.type == "cuda":
            devices = [torch.cuda.current_device() if device.index is None else device.index]
        seed = (self.args.seed * 1_000_003 + self.accelerator.process_index) * 1_009 + self._eval_batches
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            completions = self._generate_completions(model, batch, "student")
        batch = self._with_completions(batch, completions)
        n_tokens = (batch["labels"][:, 1:] != -100).sum().float()
        self._metrics["eval"]["completion_length"].append(float(n_tokens) / batch["labels"].shape[0])
        return batch

    # ------------------------------------------------------------------ the terms

    def _reg_weight(self) -> float:
        """w(t) = reg_coef * (1 - (global_step + 1) / max_steps): `global_step + 1` is the optimizer step being
        computed, counted from 1 as the official code's `global_step` (gmkim-ai/PromptKD @ 383182f,
        `train_promptkd.py`: `step, global_step = 1, 1`; `base_ratio = float(global_step) / args.total_iters`). It
        goes from reg_coef * (1 - 1 / max_steps) at the first step to 0 at the last."""
        if self.args.reg_coef == 0:
            return 0.0
        total = max(self.state.max_steps, 1)
        return self.args.reg_coef * max(0.0, 1.0 - (self.state.global_step + 1) / total)

    def _div(self, logits, target, loss_type, mask, num_items, beta: float | None = None):
        """The divergence `loss_type` of a term; `beta` is the JSD interpolation of the student term (`args.beta`),
        the prompt and regulariser terms use `args.prompt_beta`."""
        if self._vocab_size is not None:
            logits, target = logits[..., : self._vocab_size], target[..., : self._vocab_size]
        return divergence(
            logits,
            target,
            loss_type,
            mask=mask,
            beta=self.args.prompt_beta if beta is None else beta,
            alpha=self.args.skew_alpha,
            temperature=self.args.loss_temperature,
            num_items=num_items,
            chunk_size=self.args.divergence_chunk_size,
        )

    def _prompt_losses(self, prompted_logits, student_target, batch, num_items):
        """L_prompt = D(P_T^prompt, P_S), L_reg = D(P_T^prompt, P_T) (skipped when w(t) = 0) and w(t)."""
        mask = loss_mask(batch)
        prompt_loss = self._div(prompted_logits, student_target, self.args.prompt_loss_type, mask, num_items)
        weight = self._reg_weight()
        reg_loss = torch.zeros((), device=prompt_loss.device)
        if weight > 0:
            with torch.no_grad():
                plain = self._teacher_logits(batch, prompted=False)
            reg_loss = self._div(prompted_logits, plain, self.args.reg_loss_type, mask, num_items)
        return prompt_loss, reg_loss, weight

    def _student_logits(self, model, batch) -> torch.Tensor:
        kwargs = {"logits_to_keep": logits_to_keep(batch)} if self._student_keeps_logits else {}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **kwargs)
        return align_logits(logits.logits, batch)

    def _student_target(self, model, batch, logits_with_grad=None) -> torch.Tensor:
        """P_S as the prompt's fixed target: eval mode, no gradient (official code: `model.eval()` in block 1)."""
        if logits_with_grad is not None and not self._student_dropout:
            return logits_with_grad.detach()  # joint order: the same values without a second forward
        with torch.no_grad():
            was_training = model.training
            model.eval()
            logits = self._student_logits(model, batch)
            model.train(was_training)
        return logits

    def _teacher_logits(self, batch, prompted: bool = True, grad: bool = False) -> torch.Tensor:
        """Teacher logits aligned with the student's; `grad=True` is the forward that back-propagates to the prompt.

        Only that forward runs in train mode (official code: prompted teacher in train mode in the prompt step, eval
        mode as the student's target), which is also what lets transformers checkpoint it.
        """
        fn = prompted_teacher_logits if prompted and self.use_prompt else plain_teacher_logits
        self.teacher.train(grad and self._teacher_train_mode)
        try:
            keep = logits_to_keep(batch) if self._teacher_keeps_logits else 0
            return align_logits(fn(self.teacher, batch["input_ids"], batch["attention_mask"], keep), batch)
        finally:
            self.teacher.eval()

    def _with_completions(self, batch: dict[str, torch.Tensor], completions: torch.Tensor) -> dict[str, torch.Tensor]:
        return with_completions(
            batch, completions, self._eos_ids, self.processing_class.pad_token_id, self.args.max_length,
            self.args.force_eos, pad_to_multiple_of=self.args.pad_to_multiple_of,
        )

    def _draw_on_policy(self, micro_step: int) -> bool:
        return draw_on_policy(self.args.lmbda, self.args.seed, self.state.global_step, micro_step, self.accelerator)

    def _generate_completions(self, model: nn.Module | None, batch: dict[str, torch.Tensor], source: str):
        """Sample new tokens `[B, N]` for the batch's left-padded prompts from the student or the prompted teacher."""
        config = copy.copy(self.generation_config)
        config.max_new_tokens = max_new_tokens(self.args, batch["prompts"].shape[1])
        if source == "teacher":
            return generate(self.teacher, batch, config, prompted=self.use_prompt)
        return generate(
            model, batch, config, self.accelerator, self.args.gradient_checkpointing_kwargs,
            gather_deepspeed3_params=self.args.ds3_gather_for_generation,
        )

    # ------------------------------------------------------------------ data order

    def _get_train_sampler(self, train_dataset=None):
        """`shuffle_dataset=False` (DistillationConfig's meaning) reads a map-style training set in order."""
        if not self.args.shuffle_dataset and self.args.train_sampling_strategy == "random":
            dataset = self.train_dataset if train_dataset is None else train_dataset
            return torch.utils.data.SequentialSampler(dataset)
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        """A streamed training set is shuffled through a buffer with `shuffle_dataset` (as DistillationTrainer does;
        datasets reshuffles it every epoch, seeded by `args.seed`)."""
        dataset = self.train_dataset
        if not isinstance(dataset, IterableDataset) or not self.args.shuffle_dataset:
            return super().get_train_dataloader()
        return self._get_dataloader(
            dataset=dataset.shuffle(seed=self.args.seed),
            description="Training",
            batch_size=self._train_batch_size,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    # ------------------------------------------------------------------ the prompt's optimizer

    def _prompt_optimizer_and_scheduler(self):
        """The prompt's AdamW and scheduler (`prompt_optimizer`, `prompt_scheduler`), created here and only here, on
        first use: the first prompt step, or restoring them on resume. In `train()` both happen after the Trainer has
        set `state.max_steps`, the schedule's length (a `training_step` called outside `train()` gets a schedule of
        `max(state.max_steps, 1)` steps)."""
        if self.prompt_optimizer is None:
            self.prompt_optimizer, self.prompt_scheduler = create_prompt_optimizer(
                prompt_parameter(self.teacher), self.args, max(self.state.max_steps, 1)
            )
        return self.prompt_optimizer, self.prompt_scheduler

    def _step_prompt(self, window: Window) -> None:
        optimizer, scheduler = self._prompt_optimizer_and_scheduler()
        norm = step_prompt(self.teacher, optimizer, scheduler, self.accelerator, self.args)
        if norm is not None:
            window.stats["prompt_grad_norm"] = norm

    # ------------------------------------------------------------------ metrics

    def _add_train_stat(self, model, key: str, value: torch.Tensor) -> None:
        if model.training and self._window is not None:
            self._window.add(key, value)

    def _record_completions(self, batch: dict[str, torch.Tensor]) -> None:
        """Keep the decoded on-policy pairs of this step (all processes) for `log_completions`."""
        tok = self.processing_class
        prompts = [row[mask.bool()] for row, mask in zip(batch["prompts"], batch["prompt_attention_mask"])]
        completions = [row[labels != -100] for row, labels in zip(batch["input_ids"], batch["labels"])]
        self._completion_logs["prompt"].extend(gather_object(tok.batch_decode(prompts, skip_special_tokens=True)))
        self._completion_logs["completion"].extend(
            gather_object(tok.batch_decode(completions, skip_special_tokens=True))
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """`SFTTrainer.log`, then, with `log_completions`, the latest step's on-policy pairs as DistillationTrainer
        logs them: printed with `rich` (if installed), written to `output_dir/completions/completions_<step>.parquet`
        and sent to wandb / trackio when they are in `report_to`."""
        training = self.model.training
        super().log(logs, start_time)
        if not (self.args.log_completions and training and self.accelerator.is_main_process):
            return
        prompts, completions = list(self._completion_logs["prompt"]), list(self._completion_logs["completion"])
        if not prompts:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq
        from transformers.utils import is_rich_available
        from trl.trainer.utils import print_prompt_completions_sample

        step = self.state.global_step
        if is_rich_available():
            print_prompt_completions_sample(prompts, completions, {}, None, step, self.args.num_completions_to_print)
        path = os.path.join(self.args.output_dir, COMPLETIONS_DIR, f"completions_{step:05d}.parquet")
        check_writes_inside(self.args.output_dir, path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # pyarrow (a dependency of datasets) writes the parquet file; no pandas needed.
        pq.write_table(pa.table({"step": [step] * len(prompts), "prompt": prompts, "completion": completions}), path)
        rows = [[step, p, c] for p, c in zip(prompts, completions)]
        if self.args.log_unique_prompts:
            seen = set()
            rows = [r for r in rows if not (r[1] in seen or seen.add(r[1]))]
        columns = ["step", "prompt", "completion"]
        report_to = self.args.report_to or []
        # Imported only when the user asked for that logger in `report_to` (transformers' integration callbacks
        # require it installed then), as DistillationTrainer does; neither is a dependency of this package.
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({"completions": wandb.Table(columns=columns, data=rows)})
        if "trackio" in report_to:
            import trackio

            trackio.log({"completions": trackio.Table(columns=columns, data=rows)})

    def _log_window(self, window: Window) -> None:
        """Append the window's per-term sums (averaged over ranks) to the metrics that `SFTTrainer.log` emits."""
        extra = {"reg_weight": torch.tensor(self._reg_weight())} if self.use_prompt else {}
        for key, value in window.reduced_stats(self.accelerator, extra).items():
            self._metrics["train"][key].append(value)

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Multi-process support for [`PromptKDTrainer`]: sharding the teacher under DeepSpeed ZeRO-3, refusing FSDP.

The layout, per launcher configuration (docs/scaling.md has the reasoning and the launch commands):

| config | student | teacher weights | soft prompt |
|---|---|---|---|
| DDP, ZeRO-1, ZeRO-2 | DDP / DeepSpeed engine | full copy on every rank | replicated, own AdamW, all-reduced |
| ZeRO-3 | DeepSpeed engine | **partitioned** across ranks by a second, optimizer-less ZeRO-3 engine | same as above |
| FSDP | refused, see [`check_fsdp_unsupported`] | | |

Under ZeRO-3 the teacher's *base model* (not the PEFT wrapper) is handed to `deepspeed.initialize` without an
optimizer, which installs ZeRO-3's parameter hooks on its sub-modules: each sub-module gathers its weights before its
forward and frees them afterwards, and gathers them again before its backward. The soft prompt is an input embedding
prepended by [`~promptkd_trainer.teacher.prepend_prompt`], so the backward from the prompt loss runs through the
frozen, sharded teacher and re-gathers its weights layer by layer, exactly like the student's own ZeRO-3 backward.

The trainer never calls the teacher engine's `forward`: an optimizer-less engine arms an output hook that refuses
`loss.backward()` ("Direct calls to tensor.backward() are not supported in this configuration"; deepspeed 0.19.8).
Calling the wrapped module directly keeps the per-module gather/release hooks, which are all the sharding needs.

[`teacher_zero3_config`] and [`shard_teacher_zero3`] are adapted from TRL's `trl.models.utils.prepare_deepspeed`
(trl 1.16, itself adapted from accelerate), which GKD uses for its teacher. They differ in three ways, which is why
TRL's function is not called: (1) TRL writes the bucket sizes as dotted top-level keys
(`"zero_optimization.reduce_bucket_size"`), which only accelerate's config processing expands; passed straight to
`deepspeed.initialize`, the `"auto"` values of the shipped `zero3.json` become DeepSpeed's defaults (deepspeed 0.19.8:
`stage3_param_persistence_threshold` 1e5, so every tensor under 100k values stays gathered on every rank, i.e. a
small teacher is not partitioned at all), while here they are filled from the teacher's hidden size in the nested
`zero_optimization` block, as transformers does for the student; (2) only the teacher's base model goes into the
engine, so the PEFT prompt stays outside it, trainable by its own optimizer; (3) TRL's function also builds a stage-0
engine for ZeRO-1/2, where a plain full teacher on the device is all PromptKD needs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import parse_flag_from_env
from transformers.utils import logging


if TYPE_CHECKING:
    from accelerate import Accelerator
    from peft import PeftModel
    from transformers import TrainingArguments


logger = logging.get_logger(__name__)


FSDP_UNSUPPORTED_MESSAGE = (
    "PromptKDTrainer does not support FSDP. The soft prompt is trained by back-propagating through the frozen "
    "teacher, and TRL's FSDP path never wraps the teacher (trl#2580), so the teacher would be neither sharded nor "
    "placed consistently; an FSDP-wrapped teacher could not be tested either, because FSDP does not run on CPU with "
    "the HF Trainer (with `use_cpu=True` it silently falls back to DDP). Use DeepSpeed instead: ZeRO-3 "
    "(`deepspeed='promptkd_trainer/configs/deepspeed/zero3.json'`, or `accelerate launch --config_file "
    "promptkd_trainer/configs/accelerate/deepspeed_zero3.yaml`) shards both the student and the teacher across "
    "ranks; DDP or ZeRO-1/2 keep a full teacher on every rank. See docs/scaling.md."
)


def check_fsdp_unsupported(args: TrainingArguments) -> None:
    """Raise a `ValueError` when FSDP is requested, through the arguments or through `accelerate launch`.

    Both are checked before any model is loaded: `TrainingArguments(fsdp=...)` (which, with `use_cpu=True`, the
    Trainer would silently turn into DDP) and the `ACCELERATE_USE_FSDP` variable set by an accelerate FSDP config.

    Args:
        args (`TrainingArguments`):
            The trainer's arguments.

    Raises:
        `ValueError`: FSDP is requested; the message ([`FSDP_UNSUPPORTED_MESSAGE`]) gives the reason and the
        DeepSpeed alternative.
    """
    if getattr(args, "fsdp", None) or parse_flag_from_env("ACCELERATE_USE_FSDP"):
        raise ValueError(FSDP_UNSUPPORTED_MESSAGE)


def init_deepspeed_comm(args: TrainingArguments) -> None:
    """Make `deepspeed.comm` use the already initialised process group, so that ZeRO-3 `from_pretrained` calls work.

    Under a ZeRO-3 config, transformers loads every `from_pretrained` model inside `deepspeed.zero.Init`, which reads
    the world size from `deepspeed.comm`. With `use_cpu=True` (the only working CPU recipe, docs/scaling.md) accelerate
    initialises `torch.distributed` itself but not `deepspeed.comm`, so zero.Init believed the world had one rank and
    failed with `train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 4 != 2 * 1 * 1`
    (docs/scaling.md, former problem 1). `deepspeed.init_distributed` wraps the existing group and is a no-op when
    DeepSpeed already did it. The trainer calls this before loading models given as strings; call it yourself
    before `from_pretrained` when a CPU run creates the ZeRO-3 config first.

    Args:
        args (`TrainingArguments`):
            The run's arguments; nothing happens unless `args.deepspeed` is set and the process group exists.
    """
    if not args.deepspeed:
        return
    args.device  # noqa: B018  (sets up the process group, as the Trainer would)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def teacher_zero3_config(accelerator: Accelerator, hidden_size: int | None) -> dict[str, Any]:
    """DeepSpeed config of the teacher's engine: the trainer's ZeRO-3 config without its training-only blocks.

    The "auto" bucket sizes are filled from the *teacher's* hidden size with transformers' rules (they are filled
    for the student only when its engine is built). `offload_param` is kept, so `zero3_offload.json` also keeps the
    teacher's shards in CPU memory; there is no optimizer, so `offload_optimizer`, `optimizer` and `scheduler` are
    dropped (as TRL's `prepare_deepspeed` does).

    Args:
        accelerator (`Accelerator`):
            The trainer's accelerator, whose DeepSpeed plugin holds the run's config.
        hidden_size (`int`, *optional*):
            The teacher's hidden size (1024 when unknown).

    Returns:
        `dict`: a config for `deepspeed.initialize(model=teacher, config=...)`.
    """
    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    # Bucket sizes change communication granularity and memory, never results: a config without a hidden size gets
    # those of a mid-size model.
    hidden = hidden_size or 1024
    defaults = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    for key, value in defaults.items():
        if zero.get(key, "auto") == "auto":
            zero[key] = value
    return config


def shard_teacher_zero3(teacher: PeftModel | torch.nn.Module, accelerator: Accelerator):
    """Partition the teacher's base model across ranks with an optimizer-less ZeRO-3 engine; returns the engine.

    The prompt encoder stays outside the engine: it is a few thousand values, trained by its own AdamW and kept
    identical on every rank by the trainer's all-reduce. The teacher's base weights are partitioned in place
    (`param.ds_tensor` holds this rank's shard; a teacher loaded from a string under `zero.Init` is partitioned
    already). Only the module's hooks are used afterwards, never `engine.forward` (see the module docstring).

    Args:
        teacher (`PeftModel` or `torch.nn.Module`):
            The teacher with its prompt-tuning adapter ([`~promptkd_trainer.teacher.build_prompted_teacher`]), or the
            plain teacher when the prompt is off (`num_virtual_tokens=0`).
        accelerator (`Accelerator`):
            The trainer's accelerator; its DeepSpeed config must be ZeRO stage 3.

    Returns:
        `DeepSpeedEngine`: the teacher's engine. Keep a reference; its module is the teacher's base model.
    """
    import deepspeed
    from peft import PeftModel

    base = teacher.get_base_model() if isinstance(teacher, PeftModel) else teacher
    text_config = base.config.get_text_config()
    config = teacher_zero3_config(accelerator, getattr(text_config, "hidden_size", None))
    engine, *_ = deepspeed.initialize(model=base, config=config)
    if isinstance(teacher, PeftModel):
        teacher.prompt_encoder.to(accelerator.device)
    return engine


# ---------------------------------------------------------------------------------------------- stalled ranks

# The longest wait of the check that names a stalled rank, after `ddp_timeout` expired.
STALL_CHECK_MAX_S = 30


class StalledRankError(RuntimeError):
    """A rank stopped answering: a collective waited `ddp_timeout` seconds for it. The message names the rank."""


def init_cpu_process_group(args: TrainingArguments) -> None:
    """Create the gloo process group of a multi-process CPU run with `args.ddp_timeout`, before the Trainer does.

    transformers passes `timeout=ddp_timeout` to accelerate on every path but `use_cpu=True` (transformers 5.24,
    `TrainingArguments._setup_devices`: the `use_cpu` branch sets only `cpu` and `backend`), so a CPU run's process
    group gets gloo's default of 30 minutes and a stalled rank hangs the others that long, whatever `ddp_timeout`
    says. accelerate (`PartialState`) reuses a process group that already exists, so creating it here, with the
    timeout, is all the fix needs. Does nothing outside a multi-process CPU launch, for another `ddp_backend`, or when
    the group exists already.
    """
    cpu = getattr(args, "use_cpu", False) or parse_flag_from_env("ACCELERATE_USE_CPU")
    gloo = getattr(args, "ddp_backend", None) in (None, "gloo")
    if not cpu or not gloo or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.distributed.is_available() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=args.ddp_timeout))


def _stall_message(group, check_s: int, ddp_timeout: int) -> str:
    rank = torch.distributed.get_rank()
    waited = f"rank {rank} waited `ddp_timeout`={ddp_timeout} s in a collective"
    advice = (
        "The run stops (the launcher ends the other processes); resume with `resume_from_checkpoint=True`. If that "
        "rank was only slow (e.g. a long save or evaluation on one rank), raise `ddp_timeout`."
    )
    try:
        # Rank 0 hears from every other rank that is still alive; they hear from rank 0 only.
        torch.distributed.monitored_barrier(group=group, timeout=timedelta(seconds=check_s), wait_all_ranks=True)
    except RuntimeError as err:
        found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(err))
        if found:
            ranks = found.group(1).strip()
            return (f"Rank {ranks} stopped answering: {waited}, then {check_s} s for a check that it did not pass. "
                    f"{advice}")
        return (f"Rank 0 stopped answering, or names the rank that did in its own log: {waited}, then {check_s} s "
                f"for rank 0's check. {advice}")
    return (f"A collective timed out ({waited}) but every rank then passed a check: one of them was slower than "
            "`ddp_timeout`. Raise `ddp_timeout`.")


@contextlib.contextmanager
def name_stalled_ranks(args: TrainingArguments) -> Iterator[None]:
    """Within `train()`, turn a gloo collective that timed out into a [`StalledRankError`] that names the rank.

    gloo's own error says only "Timed out waiting ... ms for recv operation". The ranks that are still alive then
    meet in `torch.distributed.monitored_barrier` on a gloo group of their own (created here, on every rank, with a
    timeout of `min(ddp_timeout, STALL_CHECK_MAX_S)`), which tells rank 0 which ranks never arrived. So a run whose
    rank stalls ends about `ddp_timeout` + that check after the last answer, plus the launcher's grace before it kills
    a process that ignores SIGTERM (torchrun: 30 s). Only gloo process groups (CPU runs) are watched: under NCCL,
    PyTorch's watchdog aborts a collective that exceeds the timeout.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and dist.get_backend() == "gloo"):
        yield
        return
    check_s = int(min(args.ddp_timeout, STALL_CHECK_MAX_S))
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=check_s))
    try:
        yield
    except RuntimeError as err:
        if "Timed out waiting" not in str(err):
            raise
        message = _stall_message(group, check_s, args.ddp_timeout)
        logger.error(message)
        raise StalledRankError(message) from err


def teacher_numel(module: torch.nn.Module) -> dict[str, int]:
    """Per-rank parameter counts of a (possibly ZeRO-3-partitioned) module.

    Returns:
        `dict`: `full` (the model's size), `local_shard` (elements of this rank's partitions; `full` when not
        partitioned) and `resident` (elements currently materialised in `param.data`: shards that ZeRO-3 keeps
        gathered, such as parameters under `stage3_param_persistence_threshold`, count in full).
    """
    full = local = resident = 0
    for param in module.parameters():
        if hasattr(param, "ds_id"):
            full += param.ds_numel
            local += param.ds_tensor.numel()
            resident += param.data.numel()
        else:
            full += param.numel()
            local += param.numel()
            resident += param.numel()
    return {"full": full, "local_shard": local, "resident": resident}


__all__ = [
    "FSDP_UNSUPPORTED_MESSAGE",
    "StalledRankError",
    "check_fsdp_unsupported",
    "init_cpu_process_group",
    "init_deepspeed_comm",
    "name_stalled_ranks",
    "shard_teacher_zero3",
    "teacher_numel",
    "teacher_zero3_config",
]

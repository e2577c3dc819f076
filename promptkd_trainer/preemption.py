# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Preemption: on SIGTERM or SIGINT, finish the optimizer step under way, save a complete checkpoint, and exit.

A cluster scheduler sends SIGTERM before it preempts or times out a job (SLURM, Kubernetes), and Ctrl-C sends SIGINT;
by default either ends the process at once and the work since the last checkpoint is lost. During
[`PromptKDTrainer.train`] with `save_on_signal=True` (the default), the first such signal only sets a flag; at the
end of the current optimizer step the trainer saves `checkpoint-<step>` (the student, the prompt, both optimizers and
the RNG states, then the completion marker) and raises [`Preempted`], a `SystemExit` with status 128 + the signal's
number (143 for SIGTERM, 130 for SIGINT, the shell's convention). `resume_from_checkpoint=True` then continues from
that checkpoint exactly as the uninterrupted run would have.

With several processes every rank must stop at the same step (the save is collective): the ranks agree at each step
end with one all-reduce of a flag, so a signal that reaches only some ranks stops them all. A second Ctrl-C stops at
once (`KeyboardInterrupt`), for a user who will not wait for the step to end. A signal that arrives after the last
step is delivered again, with its previous handler, when `train()` returns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import torch
from transformers import TrainerCallback
from transformers.utils import logging


logger = logging.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
    """Raised by `train()` once the checkpoint asked for by SIGTERM or SIGINT is saved; `code` is 128 + the signal's
    number, the exit status of the process when it is not caught."""


class SignalCheckpoint(TrainerCallback):
    """Turns a received stop signal into a checkpoint at the next step end, then [`Preempted`] once it is saved.

    Args:
        num_processes (`int`): processes of the run; with more than one, the ranks agree on the step to stop at.
        device (`torch.device`): where the agreement's flag lives (the NCCL backend reduces CUDA tensors only).
    """

    def __init__(self, num_processes: int = 1, device: torch.device | str = "cpu"):
        self.num_processes = num_processes
        self.device = device
        self.received: int | None = None
        self.stopping: int | None = None

    def handle(self, signum, frame) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: the user will not wait for the step to end
            return
        self.received = signum
        logger.warning(
            f"Received {signal.Signals(signum).name}: the trainer saves a checkpoint at the end of the current "
            "optimizer step and exits; resume with `resume_from_checkpoint=True`."
        )

    def _any_rank_received(self) -> int | None:
        if self.num_processes == 1 or not torch.distributed.is_initialized():
            return self.received
        flag = torch.tensor([self.received or 0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def on_step_end(self, args, state, control, **kwargs):
        signum = self._any_rank_received()
        if signum is not None:
            self.stopping = signum
            control.should_save = True
            control.should_training_stop = True
            if args.save_strategy == "best" and control.should_evaluate:
                # The Trainer would let this evaluation decide whether to save (only a new best is saved).
                logger.warning(f"Skipping the evaluation of step {state.global_step} to save the checkpoint.")
                control.should_evaluate = False

    def on_save(self, args, state, control, **kwargs):
        if self.stopping is not None:
            name = signal.Signals(self.stopping).name
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            logger.warning(f"Stopped by {name} after step {state.global_step}; checkpoint saved in {folder}.")
            raise Preempted(128 + self.stopping)


@contextlib.contextmanager
def checkpoint_on_signals(trainer, enabled: bool = True) -> Iterator[SignalCheckpoint | None]:
    """Within the block (the trainer's `train()`), SIGTERM and SIGINT make `trainer` save and exit at the next step
    end ([`SignalCheckpoint`]); the previous handlers are restored afterwards.

    Nothing is installed when `enabled` is `False` or outside the main thread (Python installs signal handlers there
    only).
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        if enabled:
            logger.info("train() runs outside the main thread: SIGTERM/SIGINT will not save a checkpoint.")
        yield None
        return
    accelerator = trainer.accelerator
    nccl = torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"
    callback = SignalCheckpoint(accelerator.num_processes, accelerator.device if nccl else "cpu")
    previous = {sig: signal.signal(sig, callback.handle) for sig in STOP_SIGNALS}
    trainer.add_callback(callback)
    try:
        yield callback
    finally:
        trainer.remove_callback(callback)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if callback.received is not None and callback.stopping is None:
            # Training ended before a step boundary saw the signal: deliver it now, as it would have been.
            os.kill(os.getpid(), callback.received)

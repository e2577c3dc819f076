# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's data and models: tasks, tokenizer, then a teacher and a student made the way real LMs are.

1. both models are pretrained on the same English corpus ([`~promptkd_trainer.demo.corpus.english_corpus`]), packed
   into fixed-length blocks;
2. the teacher is instruction-tuned on `n_train` task rows; the student is initialised by SFT on the first
   `n_labelled` of them, the only labelled rows it and every distillation method ever see.

The result is cached on disk, keyed by every setting that shapes it, so that a second `promptkd demo` starts at the
distillation stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

from .. import __version__


logger = logging.get_logger(__name__)

_MODEL_SETTINGS = (
    "family", "teacher_size", "student_size", "vocab_size", "n_train", "n_labelled", "data_seed", "families",
    "block_size", "pretrain_batch_size", "pretrain_lr", "teacher_pretrain_steps", "student_pretrain_steps", "sft_lr",
    "sft_batch_size", "teacher_sft_steps", "student_sft_steps",
)  # fmt: skip


def make_data(cfg):
    """The task splits: `train` (the teacher's SFT data), `labelled` (its first `n_labelled` rows) and `test`."""
    from .tasks import make_dataset

    data = make_dataset(cfg.n_train, 0, cfg.n_test, seed=cfg.data_seed, families=cfg.families, template="short")
    if not 0 < cfg.n_labelled <= cfg.n_train:
        raise ValueError(f"`n_labelled` must be in [1, n_train={cfg.n_train}], got {cfg.n_labelled}.")
    return {"train": data["train"], "labelled": data["train"].select(range(cfg.n_labelled)), "test": data["test"]}


def cache_path(cfg, data) -> Path:
    """`<cache_dir>/<hash of the model settings and of the exact pretraining and SFT texts>`."""
    from .corpus import english_corpus

    settings = {name: getattr(cfg, name) for name in _MODEL_SETTINGS}
    # The texts themselves, so that a change of the task generators or of Python's bundled manual is a new entry.
    texts = english_corpus(seed=cfg.data_seed) + list(data["train"]["prompt"]) + list(data["train"]["completion"])
    settings.update(package=__version__, texts=hashlib.sha256("\x00".join(texts).encode()).hexdigest())
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    default = Path.home() / ".cache" / "promptkd_trainer" / "demo"
    root = cfg.cache_dir or os.environ.get("PROMPTKD_DEMO_CACHE") or default
    return Path(root) / key


@dataclass
class DemoModels:
    """Where the tokenizer, the SFT teacher and the SFT student live, and how they were made.

    Args:
        path (`Path`): Folder with `teacher/` and `student/` (each a `save_pretrained` model with the tokenizer).
        info (`dict`): Settings, parameter counts, stage timings and training losses (`info.json`).
        cached (`bool`): Whether they were loaded from the cache rather than built by this run.
    """

    path: Path
    info: dict
    cached: bool

    def load(self, role: str):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.path / role)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path / "teacher")


def build_models(cfg, data, progress) -> DemoModels:
    """Load the teacher and student from the cache, or make them (pretraining, then SFT) and cache them.

    Args:
        cfg ([`~promptkd_trainer.demo.defaults.DemoConfig`]): The settings.
        data (`dict`): From [`make_data`].
        progress (`Callable[[int, str], TrainerCallback]`): Makes a progress-bar callback for a stage of n steps.
    """
    path = cache_path(cfg, data)
    if (path / "info.json").exists() and not cfg.no_cache:
        logger.info(f"Using the cached teacher and student in {path}")
        return DemoModels(path, json.loads((path / "info.json").read_text()), cached=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}-", dir=path.parent))
    try:
        info = _make_models(cfg, data, tmp, progress)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)  # atomic: a cache entry is complete or absent
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoModels(path, info, cached=False)


def _make_models(cfg, data, out: Path, progress) -> dict:
    from .corpus import english_corpus
    from .models import build_model, count_parameters
    from .tasks import vocabulary_texts
    from .tokenizer import train_tokenizer
    from .training import pretraining_dataset, sft_dataset, train_causal_lm

    timings, losses = {}, {}
    start = time.perf_counter()
    corpus = english_corpus(seed=cfg.data_seed)
    train = data["train"]
    tokenizer = train_tokenizer(
        corpus + list(train["prompt"]) + list(train["completion"]) + vocabulary_texts(), vocab_size=cfg.vocab_size
    )
    blocks = pretraining_dataset(tokenizer, corpus, cfg.block_size)
    timings["tokenizer_s"] = round(time.perf_counter() - start, 1)

    def stage(name, model, dataset, steps, lr, batch):
        t, cpu = time.perf_counter(), time.process_time()
        history = train_causal_lm(
            model, tokenizer, dataset, steps=steps, learning_rate=lr, batch_size=batch, seed=cfg.data_seed,
            callbacks=[progress(steps, name)],
        )
        timings[f"{name.replace(' ', '_')}_s"] = round(time.perf_counter() - t, 1)
        timings[f"{name.replace(' ', '_')}_cpu_s"] = round(time.process_time() - cpu, 1)
        losses[name] = [h["loss"] for h in history if "loss" in h]

    info = {"settings": {k: getattr(cfg, k) for k in _MODEL_SETTINGS}, "corpus_blocks": len(blocks)}
    for role, size, pretrain_steps, sft_rows, sft_steps, seed in (
        ("teacher", cfg.teacher_size, cfg.teacher_pretrain_steps, train, cfg.teacher_sft_steps, 1),
        ("student", cfg.student_size, cfg.student_pretrain_steps, data["labelled"], cfg.student_sft_steps, 2),
    ):
        model = build_model(tokenizer, size, family=cfg.family, seed=cfg.data_seed + seed)
        stage(f"{role} pretraining", model, blocks, pretrain_steps, cfg.pretrain_lr, cfg.pretrain_batch_size)
        sft = sft_dataset(tokenizer, sft_rows["prompt"], sft_rows["completion"])
        stage(f"{role} SFT", model, sft, sft_steps, cfg.sft_lr, cfg.sft_batch_size)
        model.save_pretrained(out / role)
        tokenizer.save_pretrained(out / role)
        info[f"{role}_parameters"] = count_parameters(model)
        info[f"{role}_non_embedding_parameters"] = count_parameters(model, embeddings=False)
    info.update(timings=timings, losses=losses, vocab_size=len(tokenizer))
    return info

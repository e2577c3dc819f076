# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's data and models: tasks, tokenizer, then a teacher and a student made the way real LMs are.

1. both models are pretrained on the same English corpus ([`~promptkd_trainer.demo.corpus.english_corpus`]), packed
   into fixed-length blocks;
2. the teacher is instruction-tuned on `n_train` task rows; the student is initialised by SFT on the first
   `n_labelled` of them, the only labelled rows it and every distillation method ever see.

The package ships these models, pre-built with the default settings (`prebuilt/`, made by `promptkd demo
--rebuild_models`): a teacher that answers the tasks right needs more training than a demo run should take. With
other settings the models are built and cached on disk, keyed by every setting and task text that shapes them, so
that a second `promptkd demo` starts at the distillation stage.
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

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from ..pretrained import default_cache_dir
from .corpus import english_corpus, with_preambles
from .models import MODEL_SIZES, build_model, count_parameters
from .tasks import make_dataset, vocabulary_texts
from .tokenizer import train_tokenizer
from .training import pretraining_dataset, sft_dataset, train_causal_lm


logger = logging.get_logger(__name__)

_MODEL_SETTINGS = (
    "family", "teacher_size", "student_size", "vocab_size", "n_train", "n_labelled", "data_seed", "families",
    "block_size", "pretrain_batch_size", "pretrain_lr", "teacher_pretrain_steps", "student_pretrain_steps", "sft_lr",
    "sft_batch_size", "teacher_sft_steps", "student_sft_steps", "teacher_preamble_fraction",
)  # fmt: skip

PREBUILT_DIR = Path(__file__).parent / "prebuilt"
"""The pre-built teacher and student (safetensors and tokenizer files) for the default settings."""

# Offsets of the teacher's and student's initialisation seeds from `data_seed`: two different random inits.
TEACHER_INIT_SEED_OFFSET, STUDENT_INIT_SEED_OFFSET = 1, 2


def make_data(cfg):
    """The task splits: `train` (the teacher's SFT data), `labelled` (its first `n_labelled` rows), `prompts` (its
    first `n_prompts` rows: the prompts the distillation methods that need no labels train on) and `test`."""
    data = make_dataset(cfg.n_train, 0, cfg.n_test, seed=cfg.data_seed, families=cfg.families, template="short")
    if not 0 < cfg.n_labelled <= cfg.n_prompts <= cfg.n_train:
        raise ValueError(
            f"Need 0 < n_labelled <= n_prompts <= n_train, got n_labelled={cfg.n_labelled}, "
            f"n_prompts={cfg.n_prompts}, n_train={cfg.n_train}."
        )
    train = data["train"]
    return {
        "train": train, "labelled": train.select(range(cfg.n_labelled)), "prompts": train.select(range(cfg.n_prompts)),
        "test": data["test"],
    }


def model_key(cfg, data) -> str:
    """Hash of the settings that shape the models and of the exact task texts they are trained on.

    The pretraining corpus is not hashed: it depends on the Python version's bundled manual, and the models stay
    right for the tasks whichever manual they read (the pre-built ones are used on every Python).
    """
    settings = {name: getattr(cfg, name) for name in _MODEL_SETTINGS}
    # The presets' shapes, not only their names: changing a preset is a new entry.
    settings["sizes"] = {role: MODEL_SIZES.get(getattr(cfg, f"{role}_size")) for role in ("teacher", "student")}
    texts = list(data["train"]["prompt"]) + list(data["train"]["completion"])
    settings["texts"] = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cfg, data) -> Path:
    """`<cache_dir>/<model_key>`; `cache_dir` defaults to the package's cache folder
    ([`~promptkd_trainer.pretrained.default_cache_dir`]) + `demo`."""
    root = cfg.cache_dir or os.path.join(default_cache_dir(), "demo")
    return Path(root) / model_key(cfg, data)


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
    source: str = "built"

    def load(self, role: str):
        return AutoModelForCausalLM.from_pretrained(self.path / role)

    def tokenizer(self):
        return AutoTokenizer.from_pretrained(self.path / "teacher")


def build_models(cfg, data, progress) -> DemoModels:
    """The pre-built models if they match `cfg`, else the cached ones, else make them (pretraining, then SFT) and
    cache them. With `cfg.rebuild_models`, make them and write them to [`PREBUILT_DIR`] (the package's copy).

    Args:
        cfg ([`~promptkd_trainer.demo.defaults.DemoConfig`]): The settings.
        data (`dict`): From [`make_data`].
        progress (`Callable[[int, str], TrainerCallback]`): Makes a progress-bar callback for a stage of n steps.
    """
    key = model_key(cfg, data)
    if cfg.rebuild_models:
        return _write_models(cfg, data, PREBUILT_DIR, progress, key, source="prebuilt")
    if not cfg.no_cache:
        prebuilt = _read_info(PREBUILT_DIR)
        if prebuilt is not None and prebuilt.get("key") == key:
            logger.info(f"Using the pre-built teacher and student in {PREBUILT_DIR}")
            return DemoModels(PREBUILT_DIR, prebuilt, cached=True, source="prebuilt")
    path = cache_path(cfg, data)
    info = _read_info(path)
    if info is not None and not cfg.no_cache:
        logger.info(f"Using the cached teacher and student in {path}")
        return DemoModels(path, info, cached=True, source="cache")
    logger.warning(
        "No pre-built or cached models for these settings: building them (pretraining and SFT; see the build "
        "timings in report.md). A second run with the same settings reuses them."
    )
    return _write_models(cfg, data, path, progress, key, source="cache")


def _read_info(path: Path) -> dict | None:
    return json.loads((path / "info.json").read_text()) if (path / "info.json").exists() else None


def _write_models(cfg, data, path: Path, progress, key: str, source: str) -> DemoModels:
    """Make the models into a temporary folder next to `path`, then move it to `path` in one step."""
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}-", dir=path.parent))
    try:
        info = _make_models(cfg, data, tmp, progress)
        info["key"] = key
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)  # atomic: a cache entry is complete or absent
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.warning(f"Built the teacher and student into {path} in {time.perf_counter() - start:.0f} s")
    return DemoModels(path, info, cached=False, source=source)


def _make_models(cfg, data, out: Path, progress) -> dict:
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
        ("teacher", cfg.teacher_size, cfg.teacher_pretrain_steps, train, cfg.teacher_sft_steps,
         TEACHER_INIT_SEED_OFFSET),
        ("student", cfg.student_size, cfg.student_pretrain_steps, data["labelled"], cfg.student_sft_steps,
         STUDENT_INIT_SEED_OFFSET),
    ):
        model = build_model(tokenizer, size, family=cfg.family, seed=cfg.data_seed + seed)
        stage(f"{role} pretraining", model, blocks, pretrain_steps, cfg.pretrain_lr, cfg.pretrain_batch_size)
        prompts = list(sft_rows["prompt"])
        if role == "teacher":
            prompts = with_preambles(prompts, cfg.teacher_preamble_fraction, seed=cfg.data_seed)
        sft = sft_dataset(tokenizer, prompts, sft_rows["completion"])
        stage(f"{role} SFT", model, sft, sft_steps, cfg.sft_lr, cfg.sft_batch_size)
        model.save_pretrained(out / role)
        tokenizer.save_pretrained(out / role)
        info[f"{role}_parameters"] = count_parameters(model)
        info[f"{role}_non_embedding_parameters"] = count_parameters(model, embeddings=False)
    info.update(timings=timings, losses=losses, vocab_size=len(tokenizer))
    return info

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo`: PromptKD as a miniature of the paper, end to end on CPU, offline, in 5-10 minutes.

Stages: synthetic tasks and a local tokenizer -> a teacher and an 8.5x smaller student, both pretrained on English
text, then instruction-tuned (teacher on 8,000 rows, student on the 128 it will keep) -> five methods trained from
the same SFT student under one protocol, over three seeds -> ROUGE-L (sampled at temperature 1 and greedy) on held-out
prompts, what the prompt learned, and a table, `results.json`, `report.md` and plots in `--output_dir`.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging


logger = logging.get_logger(__name__)


class ProgressCallback(TrainerCallback):
    """Advance a tqdm bar by one per optimizer step; close it at the end of training when it covers one run only.

    The Trainer's own bar is per run, while the distillation stage is one bar over all methods and seeds.
    """

    def __init__(self, total: int, desc: str, close_at_train_end: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.close_at_train_end = close_at_train_end

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_train_end(self, args, state, control, **kwargs):
        if self.close_at_train_end:
            self.bar.close()


@contextmanager
def _timed(timings: dict, name: str):
    """Record the stage's wall time under `name` and its CPU time under `name` + `_cpu`: with one torch thread, the
    CPU time is what the stage takes on an otherwise idle machine, the wall time what it took next to other load."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 1)
        timings[name.replace("_s", "_cpu_s")] = round(time.process_time() - cpu, 1)


@contextmanager
def _quiet_libraries():
    """No per-step log dicts, weight-loading bars or dataset-map bars between the demo's own progress bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), datasets.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            # transformers 5.x deprecation notices about its own method names, not about anything the user can change.
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        if not bars:
            datasets.enable_progress_bars()


def evaluate(cfg, tokenizer, test, seeds, model=None, prompted_teacher=None) -> dict[str, Any]:
    """Sampled ROUGE-L (one run per seed; mean and sample std), greedy ROUGE-L and exact match on `test`.

    Decoding is the papers' ([`~promptkd_trainer.generation.paper_generation_kwargs`]) with the demo's answer length.
    """
    from ..evaluation import evaluate_model
    from ..generation import paper_generation_kwargs

    r = evaluate_model(
        model, tokenizer, test, seeds=seeds, greedy=True, prompted_teacher=prompted_teacher, batch_size=64,
        generation_kwargs={**paper_generation_kwargs(), "max_new_tokens": cfg.max_new_tokens},
    )
    return {
        "rougeL_sampled": r["rougeL_mean"],
        "rougeL_sampled_std": r["rougeL_std"],
        "rougeL_greedy": r["greedy_rougeL"],
        "exact_match_greedy": r["greedy_exact_match"],
        "examples": [
            {"prompt": p, "references": refs, "sampled": s, "greedy": g}
            for p, refs, s, g in list(
                zip(test["prompt"], test["references"], r["answers"][f"seed{seeds[0]}"], r["answers"]["greedy"])
            )[:4]
        ],
    }


def run_demo(cfg, plots: bool = True) -> dict[str, Any]:
    """Run every stage with the settings `cfg` ([`~promptkd_trainer.demo.defaults.DemoConfig`]); return the results
    (also written to `results.json` in `cfg.output_dir`)."""
    import torch

    from .build import build_models, make_data

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with _quiet_libraries():
        with _timed(timings, "data_s"):
            data = make_data(cfg)
        with _timed(timings, "models_s"):
            models = build_models(cfg, data, ProgressCallback)
        tokenizer, teacher = models.tokenizer(), models.load("teacher")
        with _timed(timings, "reference_eval_s"):
            reference = _reference_rows(cfg, models, teacher, tokenizer, data)
        with _timed(timings, "distillation_s"):
            runs, prompt_analysis = _distill_all(cfg, models, teacher, tokenizer, data)
    timings["total_s"] = round(time.perf_counter() - start, 1)
    timings["total_cpu_s"] = round(time.process_time(), 1)
    from .report import summarise, write_outputs

    results = summarise(cfg, models, reference, runs, prompt_analysis, timings)
    results["files"] = write_outputs(results, out, plots=plots)
    return results


def _reference_rows(cfg, models, teacher, tokenizer, data) -> dict[str, Any]:
    """The teacher, the teacher with the initial prompt, and the SFT student, evaluated over every seed."""
    from ..teacher import build_prompted_teacher

    test = data["test"]
    rows = {"teacher": evaluate(cfg, tokenizer, test, cfg.seeds, model=teacher)}
    if "promptkd" in cfg.methods:
        defaults = _prompt_defaults()
        initial = build_prompted_teacher(
            teacher, tokenizer, defaults["num_virtual_tokens"], defaults["prompt_init_text"]
        )
        rows["teacher_prompt_init"] = evaluate(cfg, tokenizer, test, cfg.seeds, prompted_teacher=initial)
    rows["student_init"] = evaluate(cfg, tokenizer, test, cfg.seeds, model=models.load("student"))
    return rows


def _prompt_defaults() -> dict[str, Any]:
    """PromptKDConfig's defaults for the prompt (the official ones): length and initialisation text."""
    from ..promptkd_config import PromptKDConfig

    fields = PromptKDConfig.__dataclass_fields__
    return {name: fields[name].default for name in ("num_virtual_tokens", "prompt_init_text")}


def _distill_all(cfg, models, teacher, tokenizer, data):
    """Every method for every seed, each from a fresh copy of the SFT student; PromptKD's prompt analysed per seed."""
    from .methods import train_method

    labelled = data["labelled"]
    if "seqkd" in cfg.methods:
        from ..generation import generate_answers

        answers = generate_answers(
            teacher, tokenizer, labelled["prompt"], do_sample=False, batch_size=64, max_new_tokens=cfg.max_new_tokens
        )
        seqkd_rows = labelled.remove_columns("completion").add_column("completion", answers)
    runs: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    analysis: list[dict] = []
    total = len(cfg.methods) * len(cfg.seeds) * cfg.steps
    progress = ProgressCallback(total, "distillation (methods x seeds)", close_at_train_end=False)
    for seed in cfg.seeds:
        for method in cfg.methods:
            student = models.load("student")
            rows = seqkd_rows if method == "seqkd" else labelled
            started = time.perf_counter()
            record = train_method(cfg, method, seed, student, teacher, tokenizer, rows, [progress])
            train_s = time.perf_counter() - started
            result = evaluate(cfg, tokenizer, data["test"], [seed], model=student)
            result.update(seed=seed, train_s=round(train_s, 1), history=record["history"])
            runs[method].append(result)
            if method == "promptkd":
                prompted = record["prompted_teacher"]
                analysis.append(_analyse_prompt(cfg, models, prompted, student, tokenizer, data, seed))
                if seed == cfg.seeds[0]:  # for `promptkd eval --teacher <cache>/teacher --teacher_prompt ...`
                    prompted.save_pretrained(Path(cfg.output_dir) / "teacher_prompt")
    progress.bar.close()
    return runs, analysis


def _analyse_prompt(cfg, models, prompted, student, tokenizer, data, seed) -> dict[str, Any]:
    """Nearest tokens and drift of the trained prompt, the prompted teacher's score, and the KL probe before/after."""
    from ..teacher import build_prompted_teacher, prompt_parameter
    from .analysis import kl_probe, nearest_tokens, prompt_drift

    defaults = _prompt_defaults()
    initial = build_prompted_teacher(
        prompted.get_base_model(), tokenizer, defaults["num_virtual_tokens"], defaults["prompt_init_text"]
    )
    initial_prompt = prompt_parameter(initial).detach().float().clone()
    probe_prompts = list(data["test"]["prompt"][: cfg.kl_probe_prompts])
    probe = dict(max_new_tokens=cfg.max_new_tokens, seed=seed)
    return {
        "seed": seed,
        "nearest_tokens_init": nearest_tokens(initial, tokenizer),
        "nearest_tokens_final": nearest_tokens(prompted, tokenizer),
        "drift": prompt_drift(initial_prompt, prompted),
        "kl_before": kl_probe(models.load("student"), initial, tokenizer, probe_prompts, **probe),
        "kl_after": kl_probe(student, prompted, tokenizer, probe_prompts, **probe),
        "teacher_prompt_trained": evaluate(cfg, tokenizer, data["test"], [seed], prompted_teacher=prompted),
    }


def check_plotting() -> bool:
    """Whether matplotlib is importable; if not, say so before any training (plots are then skipped)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning(
            "matplotlib is not installed: the demo will write its table, results.json and report.md but no plots. "
            "Install them with `pip install promptkd-trainer[plots]`."
        )
        return False
    return True


def parse_args(argv: list[str] | None = None):
    from transformers import HfArgumentParser

    from .defaults import DemoConfig

    parser = HfArgumentParser(DemoConfig, prog="promptkd demo", description=__doc__.splitlines()[0])
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    return cfg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `promptkd demo`: run, then print the table and where the outputs are."""
    from .report import format_table

    cfg = parse_args(argv)
    results = run_demo(cfg, plots=check_plotting())
    sys.stdout.write(
        format_table(results) + "\n\nStage timings (s): " + json.dumps(results["timings_s"]) + "\nWrote "
        + ", ".join(results["files"]) + "\n"
    )  # the command's output
    return results

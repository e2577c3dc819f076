# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo`: PromptKD as a miniature of the paper, end to end on CPU, offline.

Stages: synthetic tasks -> the package's pre-built teacher and student (pretrained on English text, then
instruction-tuned: the teacher on the task rows, the student on the few it will keep) -> five methods trained from the
same SFT student under one protocol, over several seeds -> ROUGE-L, exact match and answer accuracy on held-out
prompts, PromptKD - on-policy paired with a 95 % interval, exposure bias, what the prompt learned -> a table,
`results.json`, `report.md` and plots in `--output_dir`. How long it takes is measured in the README and docs/demo.md.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from queue import Empty

import datasets
import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser, TrainerCallback
from transformers.utils import logging

from ..evaluation import exposure_bias
from ..generation import generate_answers
from ..promptkd_config import PromptKDConfig
from ..teacher import build_prompted_teacher, prompt_parameter
from .analysis import kl_probe, nearest_tokens, prompt_drift
from .build import build_models, make_data
from .defaults import DemoConfig
from .methods import ABLATIONS, LABELLED_METHODS, PROMPT_METHODS, train_method
from .report import compute_checks, format_table, write_outputs
from .results import DemoResults, PromptAnalysis, Run, paired
from .scoring import GENERATION_BATCH_SIZE, score_model


logger = logging.get_logger(__name__)

EXPOSURE_BIAS_METHODS = ("sft", "onpolicy", "promptkd")
"""The students whose exposure bias the demo measures (the paper's analysis compares these)."""

COMPARISON_METHODS = ("onpolicy", "promptkd")
"""The methods that also run on `comparison_seeds`: the paired PromptKD - on-policy comparison."""

EXPOSURE_BIAS_LENGTHS = (1, 2, 4, 8)
"""Response lengths l at which ExAccErr is reported (those <= max_new_tokens): the demo's answers are 3-8 tokens
long with EOS, so longer prefixes would be measured on the few samples that reach them."""


MAX_AUTO_WORKERS = 8
"""Most processes `--workers 0` starts: each holds a copy of the two small models and runs one job at a time."""


class StepProgress(TrainerCallback):
    """Advance a tqdm bar by one per optimizer step; close it at the end of training when it covers one run only.

    (Not transformers' `ProgressCallback`, whose bar is per run: the distillation stage is one bar over all methods
    and seeds.)
    """

    def __init__(self, total: int, desc: str, close_at_train_end: bool = True):
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
    verbosity, bars = logging.get_verbosity(), datasets.are_progress_bars_disabled()
    try:
        with warnings.catch_warnings():
            _silence_libraries()
            yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
        if not bars:
            datasets.enable_progress_bars()


def _silence_libraries():
    """Errors only from transformers, no transformers or datasets progress bars, and no FutureWarnings from
    transformers (5.x deprecation notices about its own method names, not about anything the user can change)."""
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _prompt_defaults() -> dict:
    """PromptKDConfig's defaults for the prompt (the official ones): length and initialisation text."""
    defaults = {f.name: f.default for f in fields(PromptKDConfig)}
    return {name: defaults[name] for name in ("num_virtual_tokens", "prompt_init_text")}


def run_demo(cfg: DemoConfig, plots: bool = True) -> DemoResults:
    """Run every stage with the settings `cfg`; return the results (also written to `results.json` in
    `cfg.output_dir`)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with _quiet_libraries():
        with _timed(timings, "data_s"):
            data = make_data(cfg)
        with _timed(timings, "models_s"):
            models = build_models(cfg, data, StepProgress)
        tokenizer, teacher = models.tokenizer(), models.load("teacher").eval()
        with _timed(timings, "reference_eval_s"):
            reference = _reference_rows(cfg, models, teacher, tokenizer, data)
        with _timed(timings, "distillation_s"):
            runs, prompt_analysis, exposure = _distill_all(cfg, models, teacher, tokenizer, data, cfg.methods)
        ablations = {}
        if cfg.ablations:
            with _timed(timings, "ablations_s"):
                ablation_runs, _, _ = _distill_all(cfg, models, teacher, tokenizer, data, list(ABLATIONS))
            ablations = _ablation_table(runs, ablation_runs)
            runs.update(ablation_runs)
    timings["total_s"] = round(time.perf_counter() - start, 1)
    timings["total_cpu_s"] = round(time.process_time(), 1)
    results = DemoResults(
        settings=cfg.to_dict(),
        models={"path": str(models.path), "source": models.source, "cached": models.cached, **_model_info(models)},
        reference=reference,
        runs=runs,
        prompt=prompt_analysis,
        checks=compute_checks(reference, runs, prompt_analysis),
        timings_s=timings,
        exposure_bias=exposure,
        ablations=ablations,
    )
    results.files = write_outputs(results, out, plots=plots)
    return results


def _model_info(models) -> dict:
    info = models.info
    keys = ("teacher_parameters", "student_parameters", "teacher_non_embedding_parameters",
            "student_non_embedding_parameters")  # fmt: skip
    return {**{k: info[k] for k in keys}, "build_timings_s": info["timings"], "build_losses": info["losses"]}


def _score(cfg, tokenizer, data, seed, **model):
    return score_model(
        tokenizer, data["test"], seed=seed, samples=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens, **model
    )


def _reference_rows(cfg, models, teacher, tokenizer, data) -> dict:
    """The teacher, the teacher with the initial prompt, and the SFT student (sampling seed: the first seed)."""
    seed = cfg.seeds[0]
    rows = {"teacher": _score(cfg, tokenizer, data, seed, model=teacher)}
    if any(m in PROMPT_METHODS for m in cfg.methods):
        defaults = _prompt_defaults()
        initial = build_prompted_teacher(
            teacher, tokenizer, defaults["num_virtual_tokens"], defaults["prompt_init_text"]
        )
        rows["teacher_prompt_init"] = _score(cfg, tokenizer, data, seed, prompted_teacher=initial)
    rows["student_init"] = _score(cfg, tokenizer, data, seed, model=models.load("student").eval())
    return rows


def _training_rows(cfg, teacher, tokenizer, data, methods):
    """Each method's data: the labelled rows, the prompts, or (SeqKD) the prompts with the teacher's answers."""
    rows = {m: data["labelled"] if m in LABELLED_METHODS else data["prompts"] for m in methods}
    if "seqkd" in methods:
        prompts = data["prompts"]
        answers = generate_answers(
            teacher, tokenizer, prompts["prompt"], do_sample=False, batch_size=GENERATION_BATCH_SIZE,
            max_new_tokens=cfg.max_new_tokens,
        )
        rows["seqkd"] = prompts.remove_columns("completion").add_column("completion", answers)
    return rows


def _distill_all(cfg, models, teacher, tokenizer, data, methods):
    """Every method for every seed, each from a fresh copy of the SFT student, and [`COMPARISON_METHODS`] also on
    `cfg.comparison_seeds`: scores, PromptKD's prompt analysis and the exposure bias of the students in
    [`EXPOSURE_BIAS_METHODS`] (those two on `cfg.seeds`).

    The (seed, method) runs are independent, so they run in `cfg.workers` processes; each run seeds its own
    training, sampling and evaluation, so its results do not depend on the worker or the order it ran in.
    """
    rows = _training_rows(cfg, teacher, tokenizer, data, methods)
    jobs = [(seed, method) for seed in cfg.seeds for method in methods]
    if set(COMPARISON_METHODS) <= set(methods):
        jobs += [(seed, method) for seed in cfg.comparison_seeds for method in COMPARISON_METHODS]
    workers = min(resolve_workers(cfg.workers), len(jobs))
    progress = StepProgress(len(jobs) * cfg.steps, "distillation (methods x seeds)", False)
    if workers <= 1:
        done = {
            job: _run_job(cfg, models, rows[job[1]], data["test"], *job, callbacks=[progress]) for job in jobs
        }
    else:
        done = _run_jobs_in_processes(cfg, models, rows, data["test"], jobs, workers, progress)
    progress.bar.close()
    runs: dict[str, list[Run]] = {m: [done[job][0] for job in jobs if job[1] == m] for m in methods}
    analysis = [done[(seed, "promptkd")][1] for seed in cfg.seeds if "promptkd" in methods]
    exposure: dict[str, list[dict]] = {}
    for job in jobs:
        if done[job][2] is not None:
            exposure.setdefault(job[1], []).append(done[job][2])
    return runs, analysis, exposure


def resolve_workers(workers: int) -> int:
    """`workers`, or for 0 the CPUs this process may use (at most [`MAX_AUTO_WORKERS`])."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per CPU), got {workers}.")
    if workers:
        return workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_AUTO_WORKERS))


class _QueueProgress(TrainerCallback):
    """A worker's step counter: one item per optimizer step on a queue that the parent's progress bar reads."""

    def __init__(self, queue):
        self.queue = queue

    def on_step_end(self, args, state, control, **kwargs):
        self.queue.put(1)


def _worker_init(threads: int):
    """A worker's set-up: its torch threads, and for its whole life (it only runs demo jobs) what
    [`_quiet_libraries`] silences in the parent."""
    torch.set_num_threads(threads)
    _silence_libraries()


def _run_jobs_in_processes(cfg, models, rows, test, jobs, workers, progress) -> dict:
    """[`_run_job`] for each job in a pool of `workers` spawned processes, the progress bar fed from a queue."""
    context = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    with context.Manager() as manager:
        queue = manager.Queue()
        stop = threading.Event()

        def drain():
            while not stop.is_set() or not queue.empty():
                try:
                    progress.bar.update(queue.get(timeout=0.2))
                except Empty:
                    pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                     initargs=(cfg.threads,)) as pool:  # fmt: skip
                futures = {
                    job: pool.submit(_run_job, cfg, models, rows[job[1]], test, *job, queue=queue) for job in jobs
                }
                try:
                    return {job: future.result() for job, future in futures.items()}
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # a failed run: do not start the queued ones
                    raise
        finally:
            stop.set()
            reader.join()


def _run_job(cfg, models, rows, test, seed, method, callbacks=None, queue=None):
    """Train one method with one seed from the SFT student and measure it: `(Run, PromptAnalysis or None, exposure
    bias record or None)`."""
    if queue is not None:
        callbacks = [_QueueProgress(queue)]
    tokenizer, teacher = models.tokenizer(), models.load("teacher").eval()
    data = {"test": test}
    student = models.load("student")
    started = time.perf_counter()
    record = train_method(cfg, method, seed, student, teacher, tokenizer, rows, callbacks)
    train_s = round(time.perf_counter() - started, 1)
    run = Run(method, seed, _score(cfg, tokenizer, data, seed, model=student), train_s, record["history"])
    analysis = exposure = None
    analysed = seed in cfg.seeds  # the comparison seeds only add to the paired interval
    if method == "promptkd" and analysed:
        prompted = record["prompted_teacher"]
        analysis = _analyse_prompt(cfg, models, prompted, student, tokenizer, data, seed)
        if seed == cfg.seeds[0]:  # for `promptkd eval --teacher <models>/teacher --teacher_prompt ...`
            prompted.save_pretrained(Path(cfg.output_dir) / "teacher_prompt")
    if method in EXPOSURE_BIAS_METHODS and cfg.exposure_bias_prompts > 0 and analysed:
        result = exposure_bias(
            teacher, student, tokenizer, list(test["prompt"][: cfg.exposure_bias_prompts]),
            max_new_tokens=cfg.max_new_tokens, batch_size=GENERATION_BATCH_SIZE, seed=seed,
            lengths=[n for n in EXPOSURE_BIAS_LENGTHS if n <= cfg.max_new_tokens], show_progress=False,
        )
        exposure = {"seed": seed, **result.to_dict()}
    return run, analysis, exposure


def _analyse_prompt(cfg, models, prompted, student, tokenizer, data, seed) -> PromptAnalysis:
    """Nearest tokens and drift of the trained prompt, the prompted teacher's scores, and the KL probe before/after."""
    defaults = _prompt_defaults()
    initial = build_prompted_teacher(
        prompted.get_base_model(), tokenizer, defaults["num_virtual_tokens"], defaults["prompt_init_text"]
    )
    initial_prompt = prompt_parameter(initial).detach().float().clone()
    probe_prompts = list(data["test"]["prompt"][: cfg.kl_probe_prompts])
    probe = dict(max_new_tokens=cfg.max_new_tokens, seed=seed)
    return PromptAnalysis(
        seed=seed,
        nearest_tokens_init=nearest_tokens(initial, tokenizer),
        nearest_tokens_final=nearest_tokens(prompted, tokenizer),
        drift=prompt_drift(initial_prompt, prompted),
        kl_before=kl_probe(models.load("student").eval(), initial, tokenizer, probe_prompts, **probe),
        kl_after=kl_probe(student, prompted, tokenizer, probe_prompts, **probe),
        teacher_prompt_trained=_score(cfg, tokenizer, data, seed, prompted_teacher=prompted),
    )


def _ablation_table(runs, ablation_runs) -> dict:
    """Each ablation minus full PromptKD, paired by seed, on sampled ROUGE-L and answer accuracy."""
    table = {}
    for name, variant in ablation_runs.items():
        comparison = paired(variant, runs["promptkd"])
        table[name] = {
            "setting": ABLATIONS[name],
            "rougeL_sampled": comparison.rougeL_sampled,
            "answer_accuracy_sampled": comparison.answer_accuracy_sampled,
        }
    return table


def check_plotting() -> bool:
    """Whether matplotlib is importable; if not, say so before any training (plots are then skipped)."""
    try:
        import matplotlib  # noqa: F401  (optional dependency: probed, not used here)
    except ImportError:
        logger.warning(
            "matplotlib is not installed: the demo will write its table, results.json and report.md but no plots. "
            "Install them with `pip install promptkd-trainer[plots]`."
        )
        return False
    return True


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    parser = HfArgumentParser(DemoConfig, prog="promptkd demo", description=__doc__.splitlines()[0])
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    return cfg


def main(argv: list[str] | None = None) -> DemoResults:
    """Entry point of `promptkd demo`: run, then print the table and where the outputs are."""
    cfg = parse_args(argv)
    if cfg.ablations and "promptkd" not in cfg.methods:
        raise SystemExit("--ablations compares each ablation with full PromptKD: keep `promptkd` in --methods.")
    results = run_demo(cfg, plots=check_plotting())
    sys.stdout.write(
        format_table(results) + "\n\nStage timings (s): " + json.dumps(results.timings_s) + "\nWrote "
        + ", ".join(results.files) + "\n"
    )  # the command's output
    return results

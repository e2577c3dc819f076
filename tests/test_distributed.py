# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Multi-process training on CPU: DDP, DeepSpeed ZeRO-2 and ZeRO-3 with 2 processes (torchrun, gloo), a kill-and-resume
run, and the FSDP refusal.

Each launch (`torchrun --nproc_per_node 2 tests/distributed_worker.py`) runs three trainings on the tiny GPT-2 pair,
one after the other in the same processes, and the tests below read what they wrote:

- `A`: paper order, 2 ranks x batch 2, 4 steps, a checkpoint every 2 steps (ZeRO-3: models given as strings, so the
  teacher is partitioned while it loads, and a greedy generation after training);
- `B`: joint order, 2 ranks x batch 1 x accumulation 2, `lmbda=0.5` with `seq_kd` (off-policy micro-steps sample
  from the prompted teacher), rank 1's own on-policy draws inverted (ZeRO-3: teacher gradient checkpointing on);
- `C`: `A` resumed from its step-2 checkpoint.

They are compared with single-process runs of the same global batches (`A`: 1 x 4; `B`: 1 x 2 x accumulation 2, so
that the micro-steps hold the same examples and the same on-policy draws) computed here. Completions come from a
deterministic stand-in for sampling (`distributed_worker.deterministic_completions`), so both see the same
sequences; the real sampling path still runs at every on-policy micro-step in the launches.

The DeepSpeed launches JIT-build `deepspeed_shm_comm` once (~30 s), cached in `TORCH_EXTENSIONS_DIR` (default
`<venv>/torch_extensions`, as scripts/test.sh sets it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_messages_dataset
from distributed_worker import deterministic_completions, run_config
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from promptkd_trainer import PromptKDConfig, PromptKDTrainer
from promptkd_trainer.distributed import FSDP_UNSUPPORTED_MESSAGE
from promptkd_trainer.teacher import prompt_parameter


WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
BACKENDS = ("ddp", "zero2", "zero3")
LAUNCH_TIMEOUT_S = 600

# Loss and parameter tolerances between 2 ranks and one process: same maths, different reduction orders (fp32).
LOSS_RTOL = 1e-4
PARAM_TOL = dict(rtol=1e-4, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1",
        TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
    )
    # DeepSpeed JIT-builds its shm_comm op (~30 s) on first use; keep one build per virtualenv, as scripts/test.sh
    # does.
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    return env


def _command(spec_path: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), str(spec_path),
    ]


def _write_spec(out: Path, backend: str, models: Path, runs: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"spec_{int(time.time() * 1000)}.json"
    path.write_text(json.dumps({"models": str(models), "out": str(out), "backend": backend, "runs": runs}))
    return path


def launch(out: Path, backend: str, models: Path, runs: list[dict]) -> float:
    """Run the worker on 2 processes; fail with the end of its output when it fails. Returns the wall time."""
    start = time.perf_counter()
    spec = _write_spec(out, backend, models, runs)
    log = spec.with_suffix(".log")
    with open(log, "w") as log_file:
        proc = subprocess.Popen(_command(spec), env=_env(), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()  # torchrun forwards SIGTERM to the ranks, which run in their own sessions
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pytest.fail(f"torchrun ({backend}) timed out after {LAUNCH_TIMEOUT_S} s:\n{log.read_text()[-6000:]}")
    if proc.returncode != 0:
        pytest.fail(f"torchrun ({backend}) exited with {proc.returncode}:\n{log.read_text()[-6000:]}")
    return time.perf_counter() - start


def read_run(out: Path, name: str) -> tuple[list[dict], list[dict]]:
    """Per-rank JSON results and parameters (`student` state dict and `prompt`) of one run."""
    results = [json.loads((out / name / f"rank{r}.json").read_text()) for r in (0, 1)]
    params = [torch.load(out / name / f"params_rank{r}.pt", weights_only=True) for r in (0, 1)]
    return results, params


def step_logs(result: dict) -> list[dict]:
    return [h for h in result["log_history"] if "loss/student" in h]


LOSS_KEYS = ("loss/student", "loss/prompt", "loss/reg", "completion_length", "on_policy_fraction")


def assert_logs_close(got: list[dict], want: list[dict], rel: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["step"] == w["step"]
        for key in LOSS_KEYS:
            assert g[key] == pytest.approx(w[key], rel=rel), (g["step"], key)


def assert_params_close(a: dict, b: dict, **tol) -> None:
    torch.testing.assert_close(a["prompt"], b["prompt"], **tol)
    assert a["student"].keys() == b["student"].keys()
    for name in a["student"]:
        torch.testing.assert_close(a["student"][name], b["student"][name], **tol, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------------- launches


RUNS = {
    "A": dict(name="A", order="paper", max_steps=4, save_steps=2, batch_size=2),
    "B": dict(
        name="B", order="joint", max_steps=4, batch_size=1, grad_accum=2, lmbda=0.5, seq_kd=True, flip_rank1_draws=True
    ),
}


def _launch_runs(backend: str, out: Path) -> list[dict]:
    a = dict(RUNS["A"])
    b = dict(RUNS["B"])
    if backend == "zero3":
        a.update(string_models=True, greedy_check=True)
        # Checkpointing the sharded teacher re-gathers its layers in the recomputation; B must still match the
        # single-process run (which does not checkpoint).
        b.update(teacher_gc=True)
    c = dict(RUNS["A"], name="C", resume_from=str(out / "A" / "train" / "checkpoint-2"))
    return [a, b, c]


_LAUNCHES: dict[str, Path | str] = {}


@pytest.fixture(scope="module")
def launched(tiny_dir, tmp_path_factory):
    """`launched(backend)` -> the output directory of that backend's launch, run once per module (a failed launch
    fails every test that uses it without being run again)."""

    def get(backend: str) -> Path:
        if backend not in _LAUNCHES:
            out = tmp_path_factory.mktemp(f"launch_{backend}")
            try:
                launch(out, backend, tiny_dir, _launch_runs(backend, out))
            except pytest.fail.Exception as exc:
                _LAUNCHES[backend] = str(exc)
                raise
            _LAUNCHES[backend] = out
        if isinstance(_LAUNCHES[backend], str):
            pytest.fail(f"the {backend} launch failed (see the first test that ran it):\n{_LAUNCHES[backend][-2000:]}")
        return _LAUNCHES[backend]

    return get


@pytest.fixture(scope="module")
def single_process(tiny_dir, tmp_path_factory):
    """The same trainings in this process with the same global batches; `name` -> (results, params)."""
    cache: dict[str, tuple[dict, dict]] = {}

    def get(name: str):
        if name in cache:
            return cache[name]
        run = dict(RUNS[name])
        # The same global micro-batch on one process (A: 2 ranks x 2 -> 4; B: 2 ranks x 1 -> 2), accumulation kept.
        run["batch_size"] = 2 * run["batch_size"]
        out = tmp_path_factory.mktemp(f"single_{name}")
        args = run_config(str(out), "ddp", dict(run, save_steps=None))
        tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
        trainer = PromptKDTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-student"),
            teacher_model=AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-teacher"),
            args=args, train_dataset=make_messages_dataset(16), processing_class=tok,
        )
        complete = deterministic_completions(tok)
        trainer._generate_completions = lambda model, batch, source: complete(batch)
        draws = []
        real_draw = trainer._draw_on_policy

        def draw(micro_step):
            value = real_draw(micro_step)
            draws.append([trainer.state.global_step, micro_step, bool(value)])
            return value

        trainer._draw_on_policy = draw
        trainer.train()
        result = {"log_history": trainer.state.log_history, "draws": draws}
        params = {
            "student": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
            "prompt": prompt_parameter(trainer.teacher).detach().clone(),
        }
        cache[name] = (result, params)
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_finish_with_identical_ranks(launched, backend):
    """Every training finishes its 4 steps on both ranks, with bit-identical student and prompt on the two ranks after
    every step."""
    out = launched(backend)
    for name in ("A", "B", "C"):
        results, params = read_run(out, name)
        assert [r["world_size"] for r in results] == [2, 2]
        assert [r["global_step"] for r in results] == [4, 4]
        # After every step, not only at the end (C starts at step 2).
        hashes = [r["step_hashes"] for r in results]
        assert [h["step"] for h in hashes[0]] == ([3, 4] if name == "C" else [1, 2, 3, 4])
        assert hashes[0] == hashes[1], f"{name}: ranks diverged during training"
        assert torch.equal(params[0]["prompt"], params[1]["prompt"]), f"{name}: prompts differ across ranks"
        for key in params[0]["student"]:
            assert torch.equal(params[0]["student"][key], params[1]["student"][key]), f"{name}: {key} differs"
        # The logged metrics are reduced over ranks: both ranks log the same values.
        assert step_logs(results[0]) == step_logs(results[1])


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["A", "B"])
def test_matches_single_process(launched, single_process, backend, name):
    """Losses of every step, and the final student and prompt, equal those of one process with the same global batch
    (A: paper order 2x2 vs 1x4; B: joint order with accumulation, 2x1x2 vs 1x2x2, on- and off-policy micro-steps)."""
    results, params = read_run(launched(backend), name)
    ref_result, ref_params = single_process(name)
    assert len(step_logs(results[0])) == 4
    assert_logs_close(step_logs(results[0]), step_logs(ref_result), rel=LOSS_RTOL)
    assert_params_close(params[0], ref_params, **PARAM_TOL)


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_on_policy_draw_made_on_rank0_and_shared(launched, single_process, backend):
    """With lmbda=0.5, rank 1's own draw is inverted in the launch, yet both ranks follow rank 0's draw, which is the
    single-process one: the draw is a function of (seed, step, micro-step) broadcast from rank 0."""
    results, _ = read_run(launched(backend), "B")
    ref_result, _ = single_process("B")
    assert results[0]["draws"] == results[1]["draws"] == ref_result["draws"]
    kinds = {d[2] for d in results[0]["draws"]}
    assert kinds == {True, False}, "the draws should mix on- and off-policy micro-steps"


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_normalised_over_window_and_processes(launched, backend):
    """Each rank divides its token sums by the completion tokens of the whole window on all ranks / num_processes,
    also when the ranks hold different numbers of tokens (test_matches_single_process shows the result is right)."""
    for name in ("A", "B"):
        results, _ = read_run(launched(backend), name)
        w0, w1 = results[0]["windows"], results[1]["windows"]
        assert len(w0) == len(w1) == 4
        assert any(a["local_tokens"] != b["local_tokens"] for a, b in zip(w0, w1)), "ranks should hold unequal counts"
        for a, b in zip(w0, w1):
            assert a["num_items"] == b["num_items"] == pytest.approx((a["local_tokens"] + b["local_tokens"]) / 2)


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_reloads_and_resumes(launched, tiny_dir, backend):
    """The step-2 checkpoint holds the student as HF weights and the prompt as a PEFT adapter, both reload with
    the stock APIs, and resuming from it (C) ends exactly where the uninterrupted run (A) ended."""
    out = launched(backend)
    ckpt = out / "A" / "train" / "checkpoint-2"
    for f in ("model.safetensors", "config.json", "teacher_prompt/adapter_model.safetensors",
              "teacher_prompt/adapter_config.json", "prompt_optimizer.pt", "prompt_scheduler.pt", "trainer_state.json",
              "rng_state_0.pth", "rng_state_1.pth"):
        assert (ckpt / f).exists(), f
    if backend != "ddp":
        assert (ckpt / "global_step2").is_dir()  # DeepSpeed's own (partitioned) optimizer states

    student = AutoModelForCausalLM.from_pretrained(ckpt)
    teacher = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-teacher"), ckpt / "teacher_prompt"
    )
    initial = AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-student")
    assert not torch.equal(student.lm_head.weight, initial.lm_head.weight), "the checkpoint holds a trained student"
    assert prompt_parameter(teacher).shape == (7, 64)

    # The final save of A reloads to the parameters A ended with.
    _, params_a = read_run(out, "A")
    final = AutoModelForCausalLM.from_pretrained(out / "A" / "final")
    for name, param in final.named_parameters():
        torch.testing.assert_close(param, params_a[0]["student"][name])
    final_teacher = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-teacher"), out / "A" / "final" / "teacher_prompt"
    )
    torch.testing.assert_close(prompt_parameter(final_teacher), params_a[0]["prompt"])

    results_c, params_c = read_run(out, "C")
    assert_params_close(params_c[0], params_a[0], rtol=1e-6, atol=1e-7)
    assert_logs_close(step_logs(results_c[0])[2:], step_logs(read_run(out, "A")[0][0])[2:], rel=1e-6)


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_placement(launched, tiny_dir, backend):
    """ZeRO-3: the teacher's weights are partitioned (each rank holds half of them, loaded as a string under
    zero.Init or given as an object) and stay so through training and generation, the prompt's TEXT init read the
    gathered embeddings, and the teacher did not change. DDP / ZeRO-2: a full teacher on every rank."""
    out = launched(backend)
    full_teacher = AutoModelForCausalLM.from_pretrained(tiny_dir / "gpt2-teacher")
    full = sum(p.numel() for p in full_teacher.parameters())
    teacher_sum = float(sum(p.detach().double().sum() for p in full_teacher.parameters()))
    for name in ("A", "B", "C"):
        results, _ = read_run(out, name)
        for r in results:
            assert r["prompt_init_max_diff"] == 0.0
            assert r["teacher_sum"] == pytest.approx(teacher_sum, rel=1e-9), "the teacher's weights changed"
            init, after = r["teacher_numel_init"], r["teacher_numel_after"]
            assert init["full"] == after["full"] == full
            if backend == "zero3":
                assert r["teacher_engine"] == "DeepSpeedEngine"
                # Each rank owns one half (rounded up per tensor); no rank holds the full teacher at rest.
                assert init["local_shard"] == after["local_shard"] <= full // 2 + 64
                assert init["resident"] == 0
                assert after["resident"] < full // 2
                if "teacher_numel_after_generation" in r:
                    assert r["teacher_numel_after_generation"]["resident"] < full // 2
            else:
                assert r["teacher_engine"] is None
                assert init["local_shard"] == init["resident"] == full


@pytest.mark.distributed
def test_zero3_generation(launched, tiny_dir):
    """Under ZeRO-3 the student samples with its gathered weights at every on-policy micro-step (hooks restored
    afterwards, or the next step would fail, trl#4693) and the sharded prompted teacher samples on seq_kd steps
    (ranks kept in step by `synced_gpus`); the student's greedy output equals that of the saved student generating
    in one process."""
    out = launched("zero3")
    results, _ = read_run(out, "A")
    for r in results:
        assert len(r["generated_shapes"]) == 4 and all(s[0] == 2 for s in r["generated_shapes"])
    results_b, _ = read_run(out, "B")
    for r in results_b:
        sources = r["generated_sources"]
        assert sources == ["student" if on else "teacher" for _, _, on in r["draws"]]
        assert set(sources) == {"student", "teacher"}
    greedy = results[0]["greedy"]
    student = AutoModelForCausalLM.from_pretrained(out / "A" / "final")
    tok = AutoTokenizer.from_pretrained(tiny_dir / "gpt2-student")
    prompts = torch.tensor(greedy["prompts"])
    with torch.no_grad():
        ref = student.generate(
            input_ids=prompts, attention_mask=torch.tensor(greedy["mask"]), do_sample=False, max_new_tokens=8,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )[:, prompts.shape[1]:]
    got = torch.tensor(greedy["tokens"])
    assert got.tolist() == ref[:, : got.shape[1]].tolist()
    assert results[1]["greedy"]["tokens"] == greedy["tokens"]


@pytest.mark.distributed
def test_kill_and_resume(tiny_dir, tmp_path):
    """ZeRO-3, real sampling: a run SIGKILLed after step 3 (last checkpoint: step 2) and resumed from that checkpoint
    ends with the same student and prompt as an uninterrupted run with the same seed."""
    out = tmp_path / "kill"
    base = dict(order="paper", max_steps=4, save_steps=2, batch_size=2, generation="real")
    runs = [dict(base, name="uninterrupted"), dict(base, name="killed", kill_at_step=3)]
    out.mkdir(parents=True)
    log = out / "killed_launch.log"
    with open(log, "w") as log_file:  # a file, not a pipe: an unread pipe fills up and blocks the ranks
        proc = subprocess.Popen(
            _command(_write_spec(out, "zero3", tiny_dir, runs)), env=_env(), stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    markers = [out / "killed" / f"killpoint_rank{r}" for r in (0, 1)]
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    rank_pids: list[int] = []
    try:
        while not all(m.exists() and m.read_text() for m in markers):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before step 3 (rc {proc.returncode}):\n{log.read_text()[-6000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run did not reach step 3 in time")
            time.sleep(0.2)
        # Both ranks (each in its own session under torchrun), then the launcher: nothing gets to clean up.
        rank_pids = [int(m.read_text()) for m in markers]
        for pid in rank_pids:
            os.kill(pid, signal.SIGKILL)
    finally:
        for pid in rank_pids:
            _kill_quietly(pid)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode != 0
    checkpoints = sorted(p.name for p in (out / "killed" / "train").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]
    assert not (out / "killed" / "rank0.json").exists()

    resume = str(out / "killed" / "train" / "checkpoint-2")
    launch(out, "zero3", tiny_dir, [dict(base, name="resumed", resume_from=resume)])
    results_u, params_u = read_run(out, "uninterrupted")
    results_r, params_r = read_run(out, "resumed")
    assert results_r[0]["global_step"] == 4
    assert_params_close(params_r[0], params_u[0], rtol=1e-6, atol=1e-7)
    assert_params_close(params_r[1], params_u[1], rtol=1e-6, atol=1e-7)
    # Steps 3-4 sampled the same completions after the resume: same losses.
    assert_logs_close(step_logs(results_r[0])[2:], step_logs(results_u[0])[2:], rel=1e-6)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------------- FSDP


@pytest.mark.parametrize("how", ["args", "accelerate_env"])
def test_fsdp_refused(tiny_dir, tmp_path, monkeypatch, how):
    """FSDP is refused before any model is loaded, with the reason and the alternative (trl#2580)."""
    kwargs = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    if how == "args":
        kwargs["fsdp"] = "full_shard"
    else:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    args = PromptKDConfig(**kwargs)
    with pytest.raises(ValueError, match="does not support FSDP") as info:
        PromptKDTrainer(
            model=str(tiny_dir / "gpt2-student"), teacher_model=str(tiny_dir / "gpt2-teacher"), args=args,
            train_dataset=make_messages_dataset(4),
        )
    assert str(info.value) == FSDP_UNSUPPORTED_MESSAGE
    assert "trl#2580" in str(info.value) and "zero3" in str(info.value)

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""ROUGE-L protocol, evaluation sets, generation (plain and prompted teacher), the checkpoint-selection callback and
`promptkd eval`."""

import argparse
import json
import logging
import math

import pytest
import torch
from conftest import SHARED_DATA, load
from datasets import Dataset
from rouge_score import rouge_scorer
from transformers import Trainer, TrainingArguments, default_data_collator

from promptkd_trainer.checkpointing import load_prompt_adapter, save_prompt
from promptkd_trainer.eval_cli import add_eval_arguments, format_table, run_eval
from promptkd_trainer.evaluation import (
    EVAL_SETS,
    RougeEvalCallback,
    compute_exact_match,
    compute_rouge_l,
    evaluate_model,
    exact_match,
    exposure_bias,
    generate_answers,
    load_eval_set,
    mean_std,
    paper_generation_kwargs,
    response_kls,
    rouge_l,
)
from promptkd_trainer.generation import generate_completions
from promptkd_trainer.teacher import build_prompted_teacher


MINILLM = SHARED_DATA / "minillm"
needs_data = pytest.mark.skipif(not (MINILLM / "dolly" / "valid.jsonl").exists(), reason="../shared/data is absent")
PROMPTS = ["the cat sat on", "question answer the", "a big red house by the river and", "suppose you are"]


# --- metrics ----------------------------------------------------------------------------------------------------------


def test_rouge_l_hand_computed():
    # LCS("the cat sat on the mat", "the cat on a mat") = "the cat on mat" = 4 tokens; P = 4/5, R = 4/6.
    p, r = 4 / 5, 4 / 6
    assert rouge_l("the cat on a mat", "the cat sat on the mat") == pytest.approx(100 * 2 * p * r / (p + r))
    assert rouge_l("The Cat, on a MAT!", ["the cat sat on the mat"]) == pytest.approx(100 * 2 * p * r / (p + r))
    assert rouge_l("cats running", "cat runs") == pytest.approx(100.0)  # Porter stemmer
    assert rouge_l("", "anything") == 0.0


def test_rouge_l_matches_rouge_score_and_takes_max_over_references():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pred = "the quick brown fox jumped over the lazy dogs near the river bank"
    refs = ["a quick brown dog jumps over lazy foxes", "the fox jumped over the dog by the river", "unrelated words"]
    each = [100 * scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs]
    assert [rouge_l(pred, ref) for ref in refs] == pytest.approx(each)
    assert rouge_l(pred, refs) == pytest.approx(max(each))
    assert compute_rouge_l([pred, "unrelated words"], [refs, ["unrelated words"]]) == pytest.approx(
        (max(each) + 100) / 2
    )
    with pytest.raises(ValueError):
        compute_rouge_l([pred], [])
    with pytest.raises(ValueError):
        rouge_l(pred, [])


def test_exact_match_normalisation():
    assert exact_match("  The answer is: Yes. ", "the answer is yes") == 100.0
    assert exact_match("No", ["Yes", "no!"]) == 100.0
    assert exact_match("No", ["Yes"]) == 0.0
    assert compute_exact_match(["yes", "no"], [["Yes"], "maybe"]) == 50.0


def test_paper_generation_kwargs():
    assert paper_generation_kwargs() == {
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "no_repeat_ngram_size": 6,
        "max_new_tokens": 256,
    }


# --- evaluation sets --------------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    "name, count", [("dolly", 500), ("self_inst", 242), ("vicuna", 80), ("sinst", 1694), ("uinst", 1050)]
)
def test_load_eval_set_real_files(name, count):
    examples = load_eval_set(MINILLM, name)
    assert len(examples) == count
    for ex in examples:
        assert set(ex) == {"prompt", "references"}
        assert ex["prompt"].startswith("Below is an instruction") and ex["prompt"].endswith("### Response:\n")
        assert (
            isinstance(ex["references"], list)
            and ex["references"]
            and all(isinstance(r, str) for r in ex["references"])
        )
    if name == "sinst":
        assert max(len(ex["references"]) for ex in examples) == 20
    assert len(load_eval_set(MINILLM, name, max_examples=7)) == 7


def test_load_eval_set_errors_and_alias(tmp_path):
    with pytest.raises(FileNotFoundError, match="Known sets"):
        load_eval_set(tmp_path, "dolly")
    (tmp_path / "self-inst").mkdir()
    (tmp_path / "self-inst" / "valid.jsonl").write_text(json.dumps({"instruction": "Hi", "output": "Yo"}) + "\n")
    assert load_eval_set(tmp_path, "self-inst")[0]["references"] == ["Yo"]
    assert set(EVAL_SETS) == {"dolly", "self_inst", "vicuna", "sinst", "uinst"}


# --- generation -------------------------------------------------------------------------------------------------------


def _greedy_full_recompute(forward, tokenizer, prompt, max_new_tokens):
    """Greedy decode without a KV cache: one full forward per new token."""
    ids = tokenizer(prompt)["input_ids"]
    out = []
    for _ in range(max_new_tokens):
        x = torch.tensor([ids + out])
        with torch.no_grad():
            t = int(forward(x, torch.ones_like(x))[0, -1].argmax())
        if t == tokenizer.eos_token_id:
            break
        out.append(t)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generate_answers_greedy_is_reproducible_and_matches_no_cache_decode(tiny_dir, tokenizer, family):
    model = load(tiny_dir, f"{family}-student")
    a = generate_answers(model, tokenizer, PROMPTS, batch_size=3, max_new_tokens=12, do_sample=False)
    b = generate_answers(model, tokenizer, PROMPTS, batch_size=2, max_new_tokens=12, do_sample=False)
    assert a == b and len(a) == len(PROMPTS)
    forward = lambda x, m: model(input_ids=x, attention_mask=m, use_cache=False).logits  # noqa: E731
    assert a == [_greedy_full_recompute(forward, tokenizer, p, 12) for p in PROMPTS]
    state = torch.get_rng_state()
    s1 = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=12, seed=3)
    s2 = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=12, seed=3)
    assert s1 == s2
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is left untouched


def test_generate_answers_restores_mode_and_truncates_long_prompts(tiny_dir, tokenizer, caplog):
    model = load(tiny_dir, "gpt2-student").train()
    long_prompt = "the cat sat on the mat " * 200  # far over 256 positions
    with caplog.at_level(logging.WARNING):
        out = generate_answers(model, tokenizer, [long_prompt, "the cat"], max_new_tokens=8, do_sample=False)
    assert len(out) == 2 and model.training
    assert any("truncated from the left" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="no room"):
        generate_answers(model, tokenizer, ["x"], max_new_tokens=256)


def _peft_generate_no_cache(prompted, tokenizer, prompt, max_new_tokens, **kwargs):
    """Reference: `PeftModel.generate` with `use_cache=False` (a full PEFT forward per token; correct on this stack)."""
    x = tokenizer(prompt, return_tensors="pt")
    out = prompted.generate(
        **x,
        use_cache=False,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )
    new = out[0, x["input_ids"].shape[1] :].tolist()
    new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.filterwarnings("ignore:Position ids are not supported")
def test_generate_answers_with_prompted_teacher_matches_peft_full_recompute(tiny_dir, tokenizer):
    teacher = load(tiny_dir, "gpt2-teacher")
    prompted = build_prompted_teacher(teacher, tokenizer, num_virtual_tokens=5)
    with torch.no_grad():  # move the prompt away from its text init so that it matters
        prompted.prompt_encoder[prompted.active_adapter].embedding.weight.add_(
            torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
        )
    prompts = PROMPTS[:3]
    answers = generate_answers(
        None, tokenizer, prompts, prompted_teacher=prompted, batch_size=3, max_new_tokens=10, do_sample=False
    )
    forward = lambda x, m: prompted(input_ids=x, attention_mask=m).logits  # noqa: E731  (PEFT forward, no cache)
    assert answers == [_greedy_full_recompute(forward, tokenizer, p, 10) for p in prompts]
    assert answers != generate_answers(teacher, tokenizer, prompts, max_new_tokens=10, do_sample=False)
    # n-gram constraint: the prompt's n-grams are banned too (size 1: no prompt token may be generated), as with ids.
    banned = generate_answers(
        None,
        tokenizer,
        prompts,
        prompted_teacher=prompted,
        batch_size=3,
        max_new_tokens=6,
        do_sample=False,
        no_repeat_ngram_size=1,
    )
    assert banned == [_peft_generate_no_cache(prompted, tokenizer, p, 6, no_repeat_ngram_size=1) for p in prompts]


def test_evaluate_model(tiny_dir, tokenizer):
    model = load(tiny_dir, "gpt2-student")
    examples = Dataset.from_list([{"prompt": p, "output": ["the cat sat on the mat", "a dog"]} for p in PROMPTS])
    kwargs = {**paper_generation_kwargs(), "max_new_tokens": 10}
    res = evaluate_model(
        model, tokenizer, examples, seeds=(10, 20), greedy=True, generation_kwargs=kwargs, batch_size=3
    )
    assert set(res["rougeL"]) == {"10", "20"} and set(res["answers"]) == {"seed10", "seed20", "greedy"}
    vals = list(res["rougeL"].values())
    assert res["rougeL_mean"] == pytest.approx(sum(vals) / 2)
    # The package's one convention: sample std over seeds (Bessel-corrected), |a - b| / sqrt(2) for two seeds.
    assert res["rougeL_std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5)
    assert res["answers"]["seed10"] == generate_answers(model, tokenizer, PROMPTS, seed=10, batch_size=3, **kwargs)
    assert res["greedy_rougeL"] == pytest.approx(
        compute_rouge_l(res["answers"]["greedy"], [["the cat sat on the mat", "a dog"]] * len(PROMPTS))
    )
    assert res["num_examples"] == 4 and "exact_match_mean" in res and "greedy_exact_match" in res


# --- callback ---------------------------------------------------------------------------------------------------------


def _train(tiny_dir, tokenizer, tmp_path, callback, max_steps=3, **extra):
    ids = tokenizer("the cat sat on the mat.")["input_ids"]
    ds = Dataset.from_list([{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}] * 8)
    defaults = dict(
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_rougeL",
        greater_is_better=True,
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
        **{**defaults, **extra},
    )
    trainer = Trainer(
        model=load(tiny_dir, "gpt2-student"),
        args=args,
        train_dataset=ds,
        eval_dataset=ds.select(range(2)),
        data_collator=default_data_collator,
        callbacks=[callback],
    )
    trainer.train()
    return trainer


EXAMPLES = [
    {"prompt": "the cat", "references": ["sat on the mat."]},
    {"prompt": "the", "references": "cat sat on the mat."},
]


def test_callback_metric_drives_best_checkpoint(tiny_dir, tokenizer, tmp_path):
    cb = RougeEvalCallback(EXAMPLES, tokenizer, max_new_tokens=8, batch_size=2)
    trainer = _train(tiny_dir, tokenizer, tmp_path, cb)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 3 and all("eval_rougeL" in h for h in evals)
    assert [h["eval_rougeL"] for h in evals] == [h["rougeL"] for h in cb.history]
    best = max(evals, key=lambda h: h["eval_rougeL"])  # first maximum wins (strictly greater replaces)
    assert trainer.state.best_metric == best["eval_rougeL"]
    assert trainer.state.best_model_checkpoint == str(tmp_path / f"checkpoint-{best['step']}")
    # after training the cache is dropped: a manual evaluate scores the (reloaded best) model again
    assert trainer.evaluate()["eval_rougeL"] == pytest.approx(best["eval_rougeL"])


class _Scripted(RougeEvalCallback):
    """Returns fixed scores so that the best checkpoint is known in advance."""

    values = [5.0, 9.0, 3.0]

    def score(self, model, tokenizer):
        return self.values[len(self.history)]


def test_callback_scripted_scores_select_step_two(tiny_dir, tokenizer, tmp_path):
    trainer = _train(tiny_dir, tokenizer, tmp_path, _Scripted(EXAMPLES, tokenizer))
    assert trainer.state.best_metric == 9.0
    assert trainer.state.best_global_step == 2
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-2")
    saved = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    assert [h["eval_rougeL"] for h in saved["log_history"] if "eval_rougeL" in h] == [5.0, 9.0, 3.0]


def test_callback_every_without_trainer_evaluation(tiny_dir, tokenizer, tmp_path):
    cb = RougeEvalCallback(EXAMPLES, max_new_tokens=4, every=1)  # tokenizer from the trainer's processing_class
    ids = tokenizer("the cat")["input_ids"]
    ds = Dataset.from_list([{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}] * 4)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=load(tiny_dir, "gpt2-student"),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=[cb],
    )
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_rougeL" in h] == [1, 2]
    with pytest.raises(ValueError):
        RougeEvalCallback([], tokenizer)


# --- promptkd eval ----------------------------------------------------------------------------------------------------


def _parse(argv):
    return add_eval_arguments(argparse.ArgumentParser()).parse_args(argv)


@needs_data
def test_run_eval_end_to_end(tiny_dir, tmp_path):
    out = tmp_path / "eval"
    args = _parse(
        [
            "--model",
            str(tiny_dir / "gpt2-student"),
            "--data_dir",
            str(MINILLM),
            "--sets",
            "dolly",
            "vicuna",
            "--max_examples",
            "3",
            "--seeds",
            "10",
            "20",
            "--max_new_tokens",
            "8",
            "--batch_size",
            "3",
            "--output_dir",
            str(out),
        ]
    )
    assert args.no_repeat_ngram_size == 6 and args.trust_remote_code is False
    scores = run_eval(args)
    for name in ("dolly", "vicuna"):
        for seed in (10, 20):
            lines = (out / f"answers_{name}_seed{seed}.jsonl").read_text().splitlines()
            assert len(lines) == 3 and set(json.loads(lines[0])) == {"prompt", "text", "references", "rougeL"}
    reloaded = json.loads((out / "scores.json").read_text())
    assert reloaded == json.loads(json.dumps(scores))
    assert set(reloaded["sets"]) == {"dolly", "vicuna"}
    for s in reloaded["sets"].values():
        assert {"num_examples", "rougeL", "rougeL_mean", "rougeL_std", "exact_match", "exact_match_mean"} <= set(s)
        assert set(s["rougeL"]) == {"10", "20"} and s["num_examples"] == 3
    assert reloaded["generation_kwargs"]["no_repeat_ngram_size"] == 6
    table = format_table(scores)
    assert "dolly" in table and "average" in table


@needs_data
def test_run_eval_prompted_teacher(tiny_dir, tokenizer, tmp_path):
    prompted = build_prompted_teacher(load(tiny_dir, "gpt2-teacher"), tokenizer, num_virtual_tokens=4)
    prompted.save_pretrained(tmp_path / "prompt")
    out = tmp_path / "eval"
    scores = run_eval(
        _parse(
            [
                "--teacher",
                str(tiny_dir / "gpt2-teacher"),
                "--teacher_prompt",
                str(tmp_path / "prompt"),
                "--data_dir",
                str(MINILLM),
                "--sets",
                "uinst",
                "--max_examples",
                "2",
                "--seeds",
                "10",
                "--max_new_tokens",
                "4",
                "--greedy",
                "--output_dir",
                str(out),
            ]
        )
    )
    assert (out / "answers_uinst_seed10.jsonl").exists() and (out / "answers_uinst_greedy.jsonl").exists()
    assert "greedy_rougeL" in scores["sets"]["uinst"]
    with pytest.raises(ValueError, match="needs --teacher"):
        # The pre-1.0 dash spellings still parse (aliases, as in `promptkd train`).
        run_eval(_parse(["--teacher-prompt", str(tmp_path / "prompt"), "--data-dir", str(MINILLM)]))
    with pytest.raises(ValueError, match="--teacher BASE"):
        run_eval(_parse(["--model", str(tmp_path / "prompt"), "--data_dir", str(MINILLM)]))


def test_mean_std_is_the_sample_convention():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # statistics.stdev, not the population std
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_eval_requires_data_dir(capsys):
    # No default that only exists in a development checkout: the flag is required, with a clear message.
    with pytest.raises(SystemExit):
        _parse(["--model", "some/model"])
    assert "--data_dir" in capsys.readouterr().err


@needs_data
def test_run_eval_refuses_a_prompt_trained_for_another_teacher(tiny_dir, tokenizer, tmp_path):
    """`promptkd eval` checks the teacher identity saved with the prompt: the student folder has the teacher's hidden
    size (64), so without the check PEFT would score the prompt on it without a word."""
    from promptkd_trainer.checkpointing import save_prompt

    prompted = build_prompted_teacher(load(tiny_dir, "gpt2-teacher"), tokenizer, num_virtual_tokens=4)
    save_prompt(prompted, str(tmp_path))
    common = ["--teacher_prompt", str(tmp_path / "teacher_prompt"), "--data_dir", str(MINILLM), "--sets", "uinst",
              "--max_examples", "1", "--seeds", "10", "--max_new_tokens", "2", "--output_dir", str(tmp_path / "e")]
    with pytest.raises(ValueError, match="was trained for the teacher"):
        run_eval(_parse(["--teacher", str(tiny_dir / "gpt2-student"), *common]))
    scores = run_eval(_parse(["--teacher", str(tiny_dir / "gpt2-teacher"), *common]))
    assert scores["sets"]["uinst"]["num_examples"] == 1


# --- exposure bias (ExAccErr) ----------------------------------------------------------------------------------------


def _eos_prone(model, tokenizer, shift=6.0):
    """Add about `shift` to the EOS logit of a GPT-2 (its final LayerNorm bias, along the EOS embedding), so that
    samples end at different lengths and the average over the samples that reach a position is exercised."""
    with torch.no_grad():
        w = model.transformer.wte.weight[tokenizer.eos_token_id]
        model.transformer.ln_f.bias += shift * w / w.norm() ** 2
    return model


def _kl_by_hand(teacher_logits, student_logits, start, count):
    """KL(P_T || P_S) at positions start .. start + count - 1, one position and one vocabulary entry at a time."""
    out = []
    for pos in range(start, start + count):
        p = torch.softmax(teacher_logits[pos].double(), -1)
        q = torch.softmax(student_logits[pos].double(), -1)
        out.append(sum(float(p[v] * (p[v].log() - q[v].log())) for v in range(p.shape[0]) if p[v] > 0))
    return out


def _forward(model, ids, n_virtual=0):
    """Logits of one unpadded sequence, `[L, V]`; a prompted teacher through PEFT's own forward."""
    x = torch.tensor([ids])
    with torch.no_grad():
        return model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, n_virtual:]


@pytest.mark.filterwarnings("ignore:Position ids are not supported")
@pytest.mark.parametrize("prompted", [False, True])
def test_response_kls_by_hand_on_fixed_sequences(tiny_dir, tokenizer, prompted):
    teacher, student = load(tiny_dir, "gpt2-teacher"), load(tiny_dir, "gpt2-student")
    n_virtual = 0
    if prompted:
        teacher = build_prompted_teacher(teacher, tokenizer, num_virtual_tokens=3)
        n_virtual = 3
    eos = tokenizer.eos_token_id
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    completions = [[20, 21, 22], [30, eos], [eos], [40, 41, 42, 43, 44]]
    kls = response_kls(teacher, student, tokenizer, prompts, completions, batch_size=3)
    # Counted: the distributions after each response token that is not EOS (official alignment and mask).
    assert [len(k) for k in kls] == [3, 1, 0, 5]
    for p, c, kl in zip(prompts, completions, kls):
        seq = p + c
        expected = _kl_by_hand(_forward(teacher, seq, n_virtual), _forward(student, seq), len(p), len(kl))
        assert kl.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert all(v > 0 for v in expected)


def test_exposure_bias_matches_hand_computation(tiny_dir, tokenizer):
    teacher = _eos_prone(load(tiny_dir, "gpt2-teacher"), tokenizer)
    student = _eos_prone(load(tiny_dir, "gpt2-student"), tokenizer)
    n_new, seed, lengths = 6, 3, [1, 2, 4, 6]
    res = exposure_bias(
        teacher, student, tokenizer, PROMPTS, max_new_tokens=n_new, lengths=lengths, num_samples=2, batch_size=2,
        seed=seed, show_progress=False, keep_per_prompt=True,
    )
    # The official sampling: the papers' decoding (temperature 1, top-k 0, top-p 1, no 6-gram repeats).
    assert res.generation_kwargs == {**paper_generation_kwargs(), "max_new_tokens": n_new}
    encoded = [tokenizer(p)["input_ids"] for p in PROMPTS]
    decoding = {**paper_generation_kwargs(), "max_new_tokens": n_new}
    curves, lengths_seen = {}, set()
    for name, sampler in (("student", student), ("teacher", teacher)):
        # The samples exposure_bias draws: sample k of each model with seed + k.
        samples = [generate_completions(sampler, tokenizer, encoded, batch_size=2, seed=seed + k, **decoding)
                   for k in range(2)]
        per_prompt = []
        for i, p in enumerate(encoded):
            per_sample = []
            for comps in samples:
                c = comps[i]
                lengths_seen.add(len(c))
                counted = len(c) - (c[-1] == tokenizer.eos_token_id)
                per_sample.append(_kl_by_hand(_forward(teacher, p + c), _forward(student, p + c), len(p), counted))
            running, cumulative = 0.0, []
            for j in range(n_new):  # mean over the samples that reach position j, then the running sum
                reached = [kl[j] for kl in per_sample if len(kl) > j]
                running += sum(reached) / len(reached) if reached else 0.0
                cumulative.append(running)
            per_prompt.append([cumulative[n - 1] for n in lengths])
        curves[name] = per_prompt
    assert len(lengths_seen) > 2  # samples of several lengths, some ended by EOS
    mean_r = [sum(row[i] for row in curves["student"]) / len(PROMPTS) for i in range(len(lengths))]
    mean_e = [sum(row[i] for row in curves["teacher"]) / len(PROMPTS) for i in range(len(lengths))]
    assert res.per_prompt_student == [pytest.approx(row, rel=1e-5) for row in curves["student"]]
    assert res.per_prompt_teacher == [pytest.approx(row, rel=1e-5) for row in curves["teacher"]]
    assert res.regret_student_samples == pytest.approx(mean_r, rel=1e-5)
    assert res.regret_teacher_samples == pytest.approx(mean_e, rel=1e-5)
    assert res.exaccerr == pytest.approx([(r - e) / e * 100 for r, e in zip(mean_r, mean_e)], rel=1e-4, abs=1e-4)
    assert res.lengths == lengths and res.num_prompts == 4 and res.num_samples == 2
    assert json.loads(json.dumps(res.to_dict()))["exaccerr"] == pytest.approx(res.exaccerr)


def test_exposure_bias_is_zero_when_the_student_is_the_teacher(tiny_dir, tokenizer):
    teacher = load(tiny_dir, "gpt2-teacher")
    same = load(tiny_dir, "gpt2-teacher")  # another copy of the same weights
    res = exposure_bias(teacher, same, tokenizer, PROMPTS, max_new_tokens=5, show_progress=False)
    assert res.lengths == [1, 2, 3, 4, 5]
    assert max(map(abs, res.regret_student_samples + res.regret_teacher_samples)) < 1e-9
    assert all(math.isnan(v) for v in res.exaccerr)  # E(l) = 0: the ratio is undefined
    other = exposure_bias(teacher, load(tiny_dir, "gpt2-student"), tokenizer, PROMPTS, max_new_tokens=5,
                          show_progress=False)
    # Cumulative sums of KLs: positive and non-decreasing in l.
    for curve in (other.regret_student_samples, other.regret_teacher_samples):
        assert curve[0] > 0 and all(b >= a for a, b in zip(curve, curve[1:]))
    with pytest.raises(ValueError, match="lengths"):
        exposure_bias(teacher, same, tokenizer, PROMPTS, max_new_tokens=5, lengths=[6])


def _tiny_eval_dir(tmp_path):
    """A MiniLLM-style data directory with a 3-row `dolly/valid.jsonl`."""
    (tmp_path / "data" / "dolly").mkdir(parents=True)
    rows = [{"instruction": p, "output": "the cat sat on the mat"} for p in PROMPTS[:3]]
    (tmp_path / "data" / "dolly" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "data"


@pytest.mark.filterwarnings("ignore:Position ids are not supported")
def test_promptkd_eval_exposure_bias(tiny_dir, tokenizer, tmp_path, capsys):
    from promptkd_trainer import cli

    data = _tiny_eval_dir(tmp_path)
    prompted = build_prompted_teacher(load(tiny_dir, "gpt2-teacher"), tokenizer, num_virtual_tokens=4)
    save_prompt(prompted, str(tmp_path))  # with the teacher's identity, checked when it is loaded
    out = tmp_path / "eb"
    cli.main([
        "eval", "--exposure_bias", "--model", str(tiny_dir / "gpt2-student"),
        "--teacher", str(tiny_dir / "gpt2-teacher"), "--teacher_prompt", str(tmp_path / "teacher_prompt"), "--data_dir", str(data), "--sets", "dolly", "--seeds", "7",
        "--max_new_tokens", "5", "--exposure_bias_samples", "2", "--batch_size", "2", "--output_dir", str(out),
        "--disable_tqdm",
    ])
    saved = json.loads((out / "scores.json").read_text())
    eb = saved["sets"]["dolly"]["exposure_bias"]
    # The same numbers as the function, on the prompted teacher and the same prompts, seed and decoding.
    expected = exposure_bias(
        load_prompt_adapter(load(tiny_dir, "gpt2-teacher"), str(tmp_path / "teacher_prompt")),
        load(tiny_dir, "gpt2-student"), tokenizer, [ex["prompt"] for ex in load_eval_set(data, "dolly")],
        max_new_tokens=5, num_samples=2, batch_size=2, seed=7, show_progress=False,
    )
    assert eb["lengths"] == [1, 2, 3, 4, 5] and eb["num_samples"] == 2 and eb["seed"] == 7
    assert eb["exaccerr"] == pytest.approx(expected.exaccerr, rel=1e-6)
    assert eb["regret_student_samples"] == pytest.approx(expected.regret_student_samples, rel=1e-6)
    printed = capsys.readouterr()
    assert "ExAccErr" in printed.out and f"{eb['exaccerr'][-1]:.2f}" in printed.out
    assert "exposure bias" not in printed.err  # --disable_tqdm: no bar
    assert saved["sets"]["dolly"]["num_examples"] == 3 and saved["teacher_prompt"] == str(tmp_path / "teacher_prompt")
    with pytest.raises(ValueError, match="--model and --teacher"):
        cli.main(["eval", "--exposure_bias", "--model", str(tiny_dir / "gpt2-student"), "--data_dir", str(data)])

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Demo foundations: pretraining corpus, synthetic tasks, local tokenizer, model presets, pretraining and SFT data."""

import re

import pytest

from promptkd_trainer.demo.corpus import (
    english_corpus,
    reference_manual_paragraphs,
    simple_paragraphs,
    with_preambles,
)
from promptkd_trainer.demo.models import MODEL_SIZES, build_model, count_parameters
from promptkd_trainer.demo.tasks import (
    ALPACA_TEMPLATE,
    ALPACA_TEMPLATE_WITH_INPUT,
    FACT_ATTRIBUTES,
    FACTS,
    PEOPLE,
    TASK_FAMILIES,
    WORDS,
    format_prompt,
    make_dataset,
    vocabulary_texts,
    world_facts,
)
from promptkd_trainer.demo.tokenizer import EOS_TOKEN, PAD_TOKEN, train_tokenizer
from promptkd_trainer.demo.training import pretraining_dataset, sft_dataset, train_causal_lm


@pytest.fixture(scope="module")
def data():
    return make_dataset(n_train=400, n_val=50, n_test=60, seed=0, template="short")


@pytest.fixture(scope="module")
def tok(data):
    train = data["train"]
    return train_tokenizer(list(train["prompt"]) + list(train["completion"]) + vocabulary_texts())


# ---------------------------------------------------------------------------------------------------------------------
# Tasks


def test_columns_and_sizes(data):
    assert {k: len(v) for k, v in data.items()} == {"train": 400, "validation": 50, "test": 60}
    for split in data.values():
        assert split.column_names == ["prompt", "completion", "family", "references", "answer"]
    row = data["train"][0]
    assert row["references"][0] == row["completion"]
    assert row["prompt"].endswith("### Response:\n")
    assert not row["completion"].endswith(EOS_TOKEN)


def test_deterministic_and_seed_dependent():
    a = make_dataset(50, 10, 10, seed=3)
    b = make_dataset(50, 10, 10, seed=3)
    c = make_dataset(50, 10, 10, seed=4)
    for split in ("train", "validation", "test"):
        assert a[split].to_list() == b[split].to_list()
        assert a[split]["prompt"] != c[split]["prompt"]


def test_test_split_does_not_depend_on_train_size():
    small = make_dataset(20, 10, 30, seed=1)
    large = make_dataset(500, 10, 30, seed=1)
    assert small["test"].to_list() == large["test"].to_list()


def test_splits_disjoint_without_duplicates(data):
    prompts = {name: list(split["prompt"]) for name, split in data.items()}
    for name, values in prompts.items():
        assert len(set(values)) == len(values), f"duplicate prompts in {name}"
    assert not set(prompts["train"]) & set(prompts["test"])
    assert not set(prompts["train"]) & set(prompts["validation"])
    assert not set(prompts["validation"]) & set(prompts["test"])


def test_every_family_present_and_balanced(data):
    for split in data.values():
        counts = {f: list(split["family"]).count(f) for f in TASK_FAMILIES}
        assert min(counts.values()) >= len(split) // len(TASK_FAMILIES)


def test_family_subset_and_validation():
    ds = make_dataset(10, 2, 2, families=["reverse", "arithmetic"])
    assert set(ds["train"]["family"]) == {"reverse", "arithmetic"}
    assert len(make_dataset(0, 0, 5)["train"]) == 0
    with pytest.raises(ValueError, match="Unknown task families"):
        make_dataset(10, 2, 2, families=["poetry"])
    with pytest.raises(ValueError, match="Unknown template"):
        make_dataset(10, 2, 2, template="chatml")


def test_templates():
    alpaca = make_dataset(30, 0, 0, seed=0)["train"]
    for row in alpaca:
        assert row["prompt"].startswith("Below is an instruction that describes a task")
    assert format_prompt("Do it.", "", "alpaca") == ALPACA_TEMPLATE.format(instruction="Do it.")
    with_input = ALPACA_TEMPLATE_WITH_INPUT.format(instruction="Do it.", input="x y")
    assert format_prompt("Do it.", "x y", "alpaca") == with_input
    assert format_prompt("Do it.", "x y", "short") == "### Instruction:\nDo it.\n\n### Input:\nx y\n\n### Response:\n"
    assert format_prompt("Do it.", "", "short") == "### Instruction:\nDo it.\n\n### Response:\n"


def _parse(prompt):
    m = re.search(r"### Instruction:\n(.*?)\n\n(?:### Input:\n(.*?)\n\n)?### Response:\n$", prompt, re.S)
    return m.group(1), (m.group(2) or "")


def _oracle(family, instruction, inp):
    """An independent solver for each family: the dataset's answer must agree with it."""
    words = inp.split()
    if family == "arithmetic":
        a, b = (int(x) for x in re.findall(r"\d+", instruction))
        return str(a - b if "left?" in instruction else a + b)
    if family == "count":
        target = re.search(r"(?:word (\w+) appear|how many times (\w+) appears)", instruction)
        target = target.group(1) or target.group(2)
        return str(words.count(target))
    if family == "lookup":
        key = re.search(r"the (\w+)[ ?]", instruction).group(1)
        return dict(line.split(": ") for line in inp.split("\n"))[key]
    if family == "reverse":
        return " ".join(reversed(words))
    if family == "sort":
        return " ".join(sorted(words))
    if family == "uppercase":
        return inp.upper()
    if family == "dedupe":
        return " ".join(dict.fromkeys(words))
    if family == "commas":
        return ", ".join(words)
    if family == "numbered":
        return "\n".join(f"{i}. {w}" for i, w in enumerate(words, 1))
    if family == "facts":
        question = instruction.split(". ", 1)[1]  # after the scene sentence
        person = next(w for w in re.findall(r"[A-Z]\w+", question) if w in PEOPLE)
        attribute = "city" if "live" in question else next(a for a in FACT_ATTRIBUTES if a in question)
        return world_facts()[person, attribute]
    if family == "extract":
        ordinal = re.search(r"(first|second|third|last)", instruction).group(1)
        return words[{"first": 0, "second": 1, "third": 2, "last": -1}[ordinal]]
    raise AssertionError(family)


def test_answers_are_correct(data):
    for row in data["train"]:
        instruction, inp = _parse(row["prompt"])
        expected = _oracle(row["family"], instruction, inp)
        assert row["answer"] == expected, row
        if row["family"] in ("arithmetic", "count", "lookup", "extract", "facts"):
            # Sentence answers: the bare value is an accepted reference and is the number/value in the sentence.
            assert expected in row["references"], row
            assert re.search(rf"\b{re.escape(expected)}\b", row["completion"]), row
        else:
            assert row["completion"] == expected, row


def test_facts_ask_one_fixed_world_in_new_words():
    # The table does not depend on the data seed: every split and seed asks about the same 120 facts.
    assert world_facts() == world_facts() and len(world_facts()) == len(PEOPLE) * len(FACT_ATTRIBUTES) == 120
    a = make_dataset(400, 0, 100, seed=1, families=["facts"], template="short")
    b = make_dataset(400, 0, 100, seed=2, families=["facts"], template="short")
    for split in (a["train"], a["test"], b["test"]):
        for row in split:
            instruction, _ = _parse(row["prompt"])
            assert _oracle("facts", instruction, "") == row["answer"]
    # Held-out prompts are new strings about facts the training rows state (a scene sentence makes them distinct).
    assert not set(a["train"]["prompt"]) & set(a["test"]["prompt"])
    assert {r["answer"] for r in a["test"]} <= {r["answer"] for r in a["train"]}


def test_inputs_only_use_known_words(data):
    vocabulary = set(WORDS) | set(PEOPLE) | {v for values in FACTS.values() for v in values}
    for row in data["train"]:
        _, inp = _parse(row["prompt"])
        tokens = re.findall(r"[A-Za-z]+", inp.replace(":", " "))
        assert set(tokens) <= vocabulary | set(FACTS), row


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_special_tokens(tok):
    assert tok.eos_token == tok.bos_token == tok.unk_token == EOS_TOKEN
    assert tok.pad_token == PAD_TOKEN
    assert tok.pad_token_id != tok.eos_token_id  # pad != eos: the EOS of each completion is never masked as padding
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)
    assert tok("cat dog")["input_ids"] == tok.encode("cat dog", add_special_tokens=False)  # no BOS/EOS added


def test_tokenizer_round_trip_and_lengths(tok, data):
    for row in data["test"]:
        text = row["prompt"] + row["completion"]
        assert tok.decode(tok(text)["input_ids"]) == text
        assert len(tok(row["prompt"])["input_ids"]) < 64
        assert 1 <= len(tok(row["completion"])["input_ids"]) <= 40
    assert tok.decode(tok("Zebra 123 ünïcödé!")["input_ids"]) == "Zebra 123 ünïcödé!"  # byte-level: no UNK
    # Every task word is one token, with and without the leading space, lower and upper case.
    for word in WORDS:
        for text in (word, " " + word, " " + word.upper()):
            assert len(tok(text)["input_ids"]) == 1, text
    # The Alpaca preamble and PromptKD's prompt-init text stay compact.
    assert len(tok(ALPACA_TEMPLATE)["input_ids"]) < 40
    for prompt in make_dataset(0, 0, 50, seed=0, template="alpaca")["test"]["prompt"]:
        assert len(tok(prompt)["input_ids"]) < 100
    assert len(tok("Suppose you are a student.")["input_ids"]) <= 8


def test_tokenizer_save_and_reload(tok, tmp_path):
    from transformers import AutoTokenizer

    train_tokenizer(["cat dog"] * 10, vocab_size=300, save_dir=tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.pad_token == PAD_TOKEN and reloaded.eos_token == EOS_TOKEN
    assert reloaded.decode(reloaded("the cat sat.")["input_ids"]) == "the cat sat."


# ---------------------------------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_build_model_sizes(tok, family):
    teacher = build_model(tok, "teacher", family, seed=0)
    student = build_model(tok, "student", family, seed=0)
    # A capacity gap: the teacher has 2-3x the student's non-embedding parameters (twice the depth, a narrower MLP).
    ratio = count_parameters(teacher, embeddings=False) / count_parameters(student, embeddings=False)
    assert 2.0 <= ratio <= 3.5, ratio
    # Embeddings (tied with the LM head) are what `embeddings=False` leaves out, counted once.
    embed = teacher.get_input_embeddings().weight.numel()
    positions = teacher.transformer.wpe.weight.numel() if family == "gpt2" else 0
    assert count_parameters(teacher) - count_parameters(teacher, embeddings=False) == embed + positions
    for model in (teacher, student):
        assert model.config.vocab_size == len(tok)
        assert model.generation_config.pad_token_id == tok.pad_token_id
        assert model.generation_config.eos_token_id == tok.eos_token_id
    assert teacher.get_input_embeddings().weight.shape[0] == student.get_input_embeddings().weight.shape[0]


def test_build_model_seeded_and_custom(tok):
    import torch

    a = build_model(tok, "tiny", seed=1)
    b = build_model(tok, "tiny", seed=1)
    c = build_model(tok, "tiny", seed=2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    custom = build_model(tok, {"n_layer": 3, "hidden": 48, "n_head": 3}, "llama")
    assert (custom.config.num_hidden_layers, custom.config.hidden_size) == (3, 48)
    assert set(MODEL_SIZES) >= {"teacher", "student"}
    with pytest.raises(ValueError, match="Unknown model family"):
        build_model(tok, "tiny", family="bert")
    with pytest.raises(ValueError, match="divisible"):
        build_model(tok, {"n_layer": 1, "hidden": 50, "n_head": 4})


# ---------------------------------------------------------------------------------------------------------------------
# Pretraining corpus and training data


def test_english_corpus_is_offline_english_and_deterministic():
    manual = reference_manual_paragraphs()
    assert len(manual) > 1000 and sum(map(len, manual)) > 300_000  # CPython's bundled reference manual
    assert any("statement" in p for p in manual)
    simple = simple_paragraphs(200, seed=0)
    assert simple == simple_paragraphs(200, seed=0) and simple != simple_paragraphs(200, seed=1)
    assert any("Suppose you are a student" in p for p in simple)  # the prompt's init text occurs in context
    corpus = english_corpus(n_simple=200, seed=0)
    assert sorted(corpus) == sorted(manual + simple) and corpus == english_corpus(n_simple=200, seed=0)


def test_with_preambles_prepends_generated_sentences_to_a_seeded_fraction():
    prompts = [f"### Instruction:\nQuestion {i}?\n\n### Response:\n" for i in range(400)]
    out = with_preambles(prompts, 0.5, seed=0)
    assert out == with_preambles(prompts, 0.5, seed=0) and out != with_preambles(prompts, 0.5, seed=1)
    changed = [(o, p) for o, p in zip(out, prompts) if o != p]
    assert 150 < len(changed) < 250  # about half
    for o, p in changed:
        preamble = o[: -len(p)]
        assert o.endswith(p) and preamble.rstrip() and preamble[-1] in " \n"  # sentences, then a space or newline
        assert preamble.rstrip()[-1] in ".?"  # whole sentences
    assert with_preambles(prompts, 0.0) == prompts
    assert all(o != p for o, p in zip(with_preambles(prompts, 1.0), prompts))
    with pytest.raises(ValueError, match="fraction"):
        with_preambles(prompts, 1.5)


def test_pretraining_dataset_packs_documents_with_eos(tok):
    texts = ["the cat sat.", "a dog ran fast.", "Suppose you are a student."] * 20
    blocks = pretraining_dataset(tok, texts, block_size=16)
    stream = []
    for text in texts:
        stream += tok(text)["input_ids"] + [tok.eos_token_id]
    assert len(blocks) == len(stream) // 16
    assert [t for row in blocks["input_ids"] for t in row] == stream[: 16 * len(blocks)]
    assert blocks["labels"] == blocks["input_ids"]
    with pytest.raises(ValueError, match="fewer than one block"):
        pretraining_dataset(tok, ["cat"], block_size=64)


def test_sft_dataset_masks_the_prompt(tok):
    rows = sft_dataset(tok, ["### Instruction:\nWhat?\n\n### Response:\n"], ["cat dog"])
    prompt = tok("### Instruction:\nWhat?\n\n### Response:\n")["input_ids"]
    answer = tok("cat dog")["input_ids"]
    assert rows[0]["input_ids"] == prompt + answer + [tok.eos_token_id]
    assert rows[0]["labels"] == [-100] * len(prompt) + answer + [tok.eos_token_id]


def test_train_causal_lm_trains_on_answers_only(tok, data):
    import torch

    model = build_model(tok, "tiny", seed=0)
    rows = data["train"].select(range(32))
    dataset = sft_dataset(tok, rows["prompt"], rows["completion"])
    batch = {k: torch.tensor([dataset[0][k]]) for k in ("input_ids", "labels")}
    before = model(**batch).loss.item()
    history = train_causal_lm(model, tok, dataset, steps=20, learning_rate=1e-2, batch_size=8, seed=0)
    assert not model.training
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 20 and losses[-1] < losses[0]
    assert model(**batch).loss.item() < before

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Shared fixtures: tiny random-init models and a locally trained tokenizer, built at test time (no Hub access).

Fixtures are built rather than shipped because a tokenizer saved by one transformers major cannot always be read by
another (a tokenizer saved by transformers 5.x records `"tokenizer_class": "TokenizersBackend"`, which 4.x cannot
import).
"""

import os
import random
from pathlib import Path

import pytest


# Offline before anything imports huggingface_hub: without network a Hub id would otherwise retry for ~46 s (measured
# here with huggingface_hub 2.4) before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tolerances (keyword sets for `torch.testing.assert_close`), named by why two results may differ at all. float32's
# machine epsilon is 1.2e-7, float64's 2.2e-16; the test vocabularies hold 50 to a few hundred tokens.
# One float32 value computed two ways (another summation order, chunks, TRL's formula, a row batched or alone): a few
# ulp per term, accumulated over a vocabulary-wide sum.
SAME_MATH_FP32 = dict(rtol=1e-5, atol=1e-6)
# One float32 loss normalised two ways (its token sum divided by `num_items_in_batch`, or TRL's mean over tokens).
NORMALISED_TWO_WAYS = dict(rtol=1e-4, atol=1e-6)
# Gradients of such a value: softmax(a) - softmax(b) cancels leading digits, so about one more decade is lost.
GRADIENTS_FP32 = dict(rtol=1e-4, atol=1e-7)
# float64 against a float64 reference: any gap beyond rounding is a formula error.
SAME_MATH_FP64 = dict(rtol=1e-10, atol=1e-12)
GRADIENTS_FP64 = dict(rtol=1e-8, atol=1e-12)
# Parameters after a few optimizer steps whose float32 losses differed only by reordering (batch 4 x accumulation 1
# vs 1 x 4, one rank vs two): AdamW divides by sqrt(v), which magnifies relative differences of small gradients.
AFTER_STEPS_FP32 = dict(rtol=1e-4, atol=1e-6)

WORDS = (
    "the a cat dog sat on mat ran fast slow red blue green big small tree house river sun moon star book read write "
    "question answer summary text short long model teacher student learns suppose you are add two three four five"
).split()


def build_tokenizer(path: Path, vocab_size: int = 400, with_pad: bool = True):
    """Train a tiny byte-level BPE tokenizer with a chat template and save it to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "." for _ in range(2000)]
    corpus.append("Suppose you are a student.")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    kwargs = {"pad_token": "<|pad|>"} if with_pad else {}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
        model_max_length=256,
        **kwargs,
    )
    hf_tok.chat_template = (
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
        "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|endoftext|>\n"
        "{% else %}{{ m['content'] }}\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    hf_tok.save_pretrained(path)
    return hf_tok


def build_model(family: str, tokenizer, n_layer: int, hidden: int = 64, seed: int = 0, vocab_size: int | None = None):
    """Random-init causal LM of `family` ("gpt2" or "llama") sized for CPU tests."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = vocab_size or len(tokenizer)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    if family == "gpt2":
        # Larger init than GPT-2's 0.02 so that teacher and student disagree and divergences are not ~0.
        cfg = GPT2Config(
            vocab_size=vocab, n_layer=n_layer, n_head=2, n_embd=hidden, n_positions=256, initializer_range=0.2,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids
        )
        model = GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab, num_hidden_layers=n_layer, num_attention_heads=2, num_key_value_heads=1,
            hidden_size=hidden, intermediate_size=2 * hidden, max_position_embeddings=256, initializer_range=0.2,
            tie_word_embeddings=False, **ids
        )
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(family)
    model.generation_config.pad_token_id = ids["pad_token_id"]
    model.generation_config.eos_token_id = ids["eos_token_id"]
    return model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A directory holding a tokenizer plus GPT-2 and Llama teacher/student pairs, each saved with the tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer(root / "tokenizer")
    for family in ("gpt2", "llama"):
        for role, layers, seed in (("teacher", 2, 1), ("student", 1, 2)):
            model = build_model(family, tok, n_layer=layers, seed=seed)
            out = root / f"{family}-{role}"
            model.save_pretrained(out)
            tok.save_pretrained(out)
    return root


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")


def load(tiny_dir, name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir / name)


def make_messages_dataset(n: int = 16, seed: int = 0):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return Dataset.from_list(rows)


def make_prompt_completion_dataset(n: int = 16, seed: int = 0):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        rows.append({"prompt": f"Question: {q}\nAnswer:", "completion": f" {a}"})
    return Dataset.from_list(rows)


@pytest.fixture
def gpt2_tokenizer_dir():
    """The real GPT-2 tokenizer files (vocab.json and merges.txt of the Hub `gpt2`) from ../shared/data if present."""
    path = SHARED_DATA / "gpt2_tokenizer"
    if not (path / "vocab.json").exists():
        pytest.skip("../shared/data/gpt2_tokenizer is not present")
    return path

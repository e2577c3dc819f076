# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""A small byte-level BPE tokenizer trained locally with the `tokenizers` library (no Hub access).

Byte-level BPE is GPT-2's scheme, so the demo exercises the same code paths as a real GPT-2 checkpoint (leading-space
tokens, `ByteLevel` decoding) while keeping the vocabulary, hence the embedding and softmax, small enough for a CPU.
The demo trains it on its pretraining corpus, the task rows and [`~promptkd_trainer.demo.tasks.vocabulary_texts`]
with the cap `DemoConfig.vocab_size` (2,048), which that corpus fills; every task word, lower or upper case, with or
without a leading space, is a single token.

Special tokens: `<|endoftext|>` is EOS, BOS and UNK (GPT-2's convention) and `<|pad|>` is a separate pad token. Keeping
pad != eos matters for SFT: TRL masks padding by `pad_token_id`, and with pad == eos the EOS that ends each completion
would be indistinguishable from padding in collators that mask by id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging


logger = logging.get_logger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)

# Texts that are always part of the training corpus, so that they tokenize compactly whatever the data:
# the Alpaca preambles and PromptKD's prompt initialisation text (official scripts' `--prompt-init-text`).
EXTRA_TEXTS = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    "### Instruction:\n### Input:\n### Response:\n",
    "Suppose you are a student.",
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1536,
    save_dir: str | os.PathLike | None = None,
    *,
    min_frequency: int = 2,
    model_max_length: int = 512,
    extra_texts: Iterable[str] = EXTRA_TEXTS,
    extra_texts_repeat: int = 100,
):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a transformers fast tokenizer.

    Args:
        texts (`Iterable[str]`):
            Training corpus, e.g. the prompts and completions of the training split.
        vocab_size (`int`, *optional*, defaults to `1536`):
            Target vocabulary size, special tokens and the 256 byte symbols included. The result can be smaller when
            the corpus has fewer distinct merges than that.
        save_dir (`str` or `os.PathLike`, *optional*):
            If given, the tokenizer is saved there with `save_pretrained` (reloaded by `AutoTokenizer` as
            `TokenizersBackend` in transformers 5).
        min_frequency (`int`, *optional*, defaults to `2`):
            Minimum pair frequency for a merge.
        model_max_length (`int`, *optional*, defaults to `512`):
            Maximum sequence length recorded on the tokenizer.
        extra_texts (`Iterable[str]`, *optional*, defaults to `EXTRA_TEXTS`):
            Texts appended to the corpus (template preambles and the PromptKD prompt-initialisation text).
        extra_texts_repeat (`int`, *optional*, defaults to `100`):
            How many times each of `extra_texts` is added, so that they become few tokens each.

    Returns:
        [`~transformers.PreTrainedTokenizerFast`]: `eos_token == bos_token == unk_token == "<|endoftext|>"`,
        `pad_token == "<|pad|>"` (ids 0 and 1), right padding, no BOS/EOS added by `__call__`.
    """
    # Extra texts are repeated so that their merges outrank the data's rare ones (each appears once otherwise and
    # would stay split into bytes).
    corpus = list(texts) + list(extra_texts) * extra_texts_repeat
    if not corpus:
        raise ValueError("`texts` is empty: the tokenizer needs a corpus to train on.")
    min_vocab = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_vocab:
        raise ValueError(f"`vocab_size` must be at least {min_vocab} (256 bytes + special tokens), got {vocab_size}.")

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
    )
    logger.info(f"Trained a byte-level BPE tokenizer: {len(hf_tok)} tokens on {len(corpus)} texts")
    if save_dir is not None:
        hf_tok.save_pretrained(save_dir)
    return hf_tok

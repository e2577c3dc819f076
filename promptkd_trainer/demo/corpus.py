# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The demo's pretraining corpus: English prose that ships with every Python, plus simple generated sentences.

PromptKD's teachers and students are pretrained LMs (GPT-2, OPT, Llama; paper Section 4.1) that have read a broad
corpus before instruction tuning: a text prefix such as the prompt's initialisation "Suppose you are a student." is
ordinary context for them. The demo's models are pretrained the same way, offline, on

- the Python reference manual that CPython ships as `pydoc_data.topics` (about 450 KB of English prose with code
  examples, present in every CPython install since 3.x: no download, no data files);
- simple generated English sentences about people, school and everyday objects, including "Suppose you are ..."
  sentences, so that the words of the prompt's initialisation are in context at least once in a while.

The corpus is a deterministic function of the Python version and the seed.
"""

from __future__ import annotations

import random
from pydoc_data.topics import topics

from .tasks import NAMES, WORDS


ROLES = ("student", "teacher", "doctor", "farmer", "baker", "painter", "writer", "pilot", "singer", "driver")
PLACES = ("school", "garden", "kitchen", "library", "park", "market", "village", "forest", "river", "city")
VERBS = ("reads", "writes", "finds", "sees", "draws", "likes", "makes", "takes", "keeps", "wants")
ADJECTIVES = ("small", "big", "old", "new", "red", "blue", "quiet", "happy", "long", "short")


def reference_manual_paragraphs() -> list[str]:
    """The paragraphs of CPython's bundled reference manual text (`pydoc_data.topics`), in a fixed order."""
    paragraphs = []
    for name in sorted(topics):
        paragraphs += [p.strip() for p in topics[name].split("\n\n") if len(p.strip()) > 40]
    return paragraphs


def _sentence(rng: random.Random) -> str:
    role, place = rng.choice(ROLES), rng.choice(PLACES)
    adj, word, verb = rng.choice(ADJECTIVES), rng.choice(WORDS), rng.choice(VERBS)
    name = rng.choice(NAMES)
    return rng.choice(
        (
            f"Suppose you are a {role}.",
            f"Suppose you are a {role} in the {place}.",
            f"You are a {role}.",
            f"{name} is a {role}.",
            f"{name} {verb} a {adj} {word} in the {place}.",
            f"The {role} {verb} a {word}.",
            f"A {role} asks a question and the {rng.choice(ROLES)} gives an answer.",
            f"The {adj} {word} is in the {place}.",
            f"Every {role} has a {word}.",
            "Write a short answer to the question.",
        )
    )


def simple_paragraphs(n: int, seed: int = 0) -> list[str]:
    """`n` paragraphs of 3-8 generated sentences each."""
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(3, 8))) for _ in range(n)]


PREAMBLE_JOINERS = (" ", "\n", "\n\n")


def with_preambles(prompts: list[str], fraction: float, seed: int = 0) -> list[str]:
    """`prompts` where a seeded `fraction` of them start with 1-2 generated sentences ([`simple_paragraphs`]'
    sentences) and a space or line break: the preceding context an instruction-tuned LM meets in its data (a system
    prompt, an earlier turn). A teacher tuned only on prompts that start at position 0 learns that the answer
    follows the text at position 0, and a soft prompt prepended before its input then changes its answers.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    rng = random.Random(seed)
    out = []
    for prompt in prompts:
        if rng.random() < fraction:
            preamble = " ".join(_sentence(rng) for _ in range(rng.randint(1, 2)))
            prompt = preamble + rng.choice(PREAMBLE_JOINERS) + prompt
        out.append(prompt)
    return out


def english_corpus(n_simple: int = 3000, seed: int = 0) -> list[str]:
    """Reference-manual paragraphs and `n_simple` generated paragraphs, shuffled with `seed` (one text per row)."""
    texts = reference_manual_paragraphs() + simple_paragraphs(n_simple, seed)
    random.Random(seed).shuffle(texts)
    return texts

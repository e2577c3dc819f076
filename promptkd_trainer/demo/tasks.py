# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""A seeded, synthetic instruction-following benchmark whose answers can be checked exactly.

The PromptKD paper distils instruction-following models (Dolly-trained GPT-2/OPT/Llama) and scores them with ROUGE-L.
This module is a CPU-sized stand-in: ten small task families (arithmetic word problems, string transformations,
counting, look-up in a context, formatting, extraction) written as Alpaca-style instructions with one or more
reference answers, so that a model of a few hundred thousand parameters can learn them in minutes and both exact
match and ROUGE-L are meaningful.

| family | instruction (paraphrases vary) | input | answer |
|---|---|---|---|
| `arithmetic` | "Tom has 5 pens. Tom buys 3 more. How many pens does Tom have now?" | - | "Tom has 8 pens now." * |
| `count` | "How many times does the word cat appear in the list?" | 3-6 words | "cat appears 2 times." * |
| `lookup` | "What is the city?" | 3-5 `key: value` lines | "The city is Rome." * |
| `reverse` | "Reverse the order of the words." | 3-6 words | the words reversed |
| `sort` | "Sort the words in alphabetical order." | 2-4 words | the words sorted |
| `uppercase` | "Rewrite the words in capital letters." | 2-5 words | "CAT DOG" |
| `dedupe` | "Delete the duplicate words." | 3-6 words | first occurrences, in order |
| `commas` | "Join the words with commas." | 3-6 words | "cat, dog, sun" |
| `numbered` | "Write the words as a numbered list." | 2-5 words | "1. cat\\n2. dog" |
| `extract` | "What is the second word?" | 3-6 words | "dog" |

Answers are 1-20 tokens with the demo tokenizer (one token per word). (*) `arithmetic`, `count` and `lookup` answers
have four good wordings ("Tom has 8 pens now.", "Tom has 8 pens.", "The answer is 8 pens.", "There are 8 pens now.");
the completion is one of them at random, and the references are all of them plus the bare value ("8"). As with
open-ended instructions, a model must pick one wording and keep to it, which sampling from a weak model does not.
Families need different skills: copying from the context
(`reverse`, `commas`, `numbered`, `extract`, `lookup`), a learned word mapping (`uppercase`), memorised facts
(`arithmetic`) and comparisons (`count`, `sort`, `dedupe`), so a smaller student lags the teacher unevenly.

Every example is a row with the columns

- `prompt` (`str`): the instruction (and input) already formatted with an Alpaca-style template ending in
  `"### Response:\\n"`;
- `completion` (`str`): the target answer, without EOS (the SFT data appends it);
- `family` (`str`): the task family, one of [`TASK_FAMILIES`];
- `references` (`list[str]`): acceptable answers, `completion` first.

Splits are disjoint (no prompt string appears in two splits) and the whole `DatasetDict` is a deterministic function
of its arguments. The test split is generated first, so it only depends on `seed`, `n_test`, `families` and
`template`: growing `n_train` never changes the test set.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict, Features, List, Value
from transformers.utils import logging

from ..formats import ALPACA_TEMPLATE, ALPACA_TEMPLATE_WITH_INPUT


logger = logging.get_logger(__name__)

# `ALPACA_TEMPLATE*` (imported above) are the package's single copy of the Stanford Alpaca / MiniLLM templates.
# The short templates keep the same sections without the preamble sentence: prompts are about half as long
# (29 vs 57 tokens on average with the demo tokenizer), hence faster CPU demos.
SHORT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
SHORT_TEMPLATE_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

TEMPLATES = {
    "alpaca": (ALPACA_TEMPLATE, ALPACA_TEMPLATE_WITH_INPUT),
    "short": (SHORT_TEMPLATE, SHORT_TEMPLATE_WITH_INPUT),
}

# ---------------------------------------------------------------------------------------------------------------------
# Word pools. Small and closed on purpose: every word becomes one token of the demo tokenizer, so the tasks test
# in-context manipulation (copying, reordering, counting, look-up) rather than spelling.

WORDS = (
    "apple", "bear", "bird", "boat", "book", "bread", "cake", "car", "cat", "chair", "cloud", "coat", "cow", "cup",
    "desk", "dog", "door", "duck", "egg", "fish", "flag", "frog", "goat", "hat", "horse", "jam", "key", "kite",
    "lamp", "leaf", "lemon", "lion", "map", "milk", "moon", "mouse", "nest", "owl", "pear", "pen", "pig", "plum",
    "rain", "ring", "road", "rose", "shoe", "sock", "star", "sun", "table", "tree", "train", "wolf",
)  # fmt: skip

NAMES = ("Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Emma", "Max", "Nora", "Jack", "Lily")

# (singular, plural) objects for the word problems.
ITEMS = (
    ("apple", "apples"), ("book", "books"), ("coin", "coins"), ("pen", "pens"), ("egg", "eggs"), ("card", "cards"),
    ("cake", "cakes"), ("shell", "shells"), ("stamp", "stamps"), ("ball", "balls"), ("flower", "flowers"),
    ("cookie", "cookies"),
)  # fmt: skip

# Facts for the look-up family: key -> candidate values.
FACTS = {
    "name": NAMES,
    "color": ("red", "blue", "green", "yellow", "black", "white", "pink", "brown"),
    "city": ("Paris", "Rome", "London", "Berlin", "Madrid", "Tokyo", "Cairo", "Lima"),
    "pet": ("cat", "dog", "fish", "bird", "mouse", "frog"),
    "fruit": ("apple", "pear", "plum", "lemon", "mango", "grape"),
    "day": ("Monday", "Tuesday", "Friday", "Sunday", "Saturday"),
    "sport": ("tennis", "golf", "chess", "soccer", "rugby"),
    "food": ("bread", "rice", "soup", "cake", "jam", "milk"),
    "age": tuple(str(n) for n in range(5, 60)),
}

ORDINALS = ("first", "second", "third", "last")

# The `facts` family's world: what each person likes, a fixed table (its own seed, not the data's), so that every
# split asks about the same world. 24 people x 5 attributes = 120 facts: a teacher trained on thousands of rows knows
# them all, a student that saw a few dozen rows knows few. (With 200 facts the demo's student learned too few of them
# in its distillation budget for any method to move its answer accuracy; docs/demo.md.)
PEOPLE = NAMES + ("Adam", "Bella", "Carl", "Dora", "Eric", "Fiona", "Gus", "Hana", "Ivan", "Jade", "Kurt", "Theo")
FACT_ATTRIBUTES = ("color", "city", "pet", "sport", "food")
FACTS_WORLD_SEED = 1234
_FACT_QUESTIONS = {
    "color": ("What is {p}'s favourite color?", "Which color does {p} like best?"),
    "city": ("Where does {p} live?", "In which city does {p} live?"),
    "pet": ("What pet does {p} have?", "Which pet does {p} keep?"),
    "sport": ("What sport does {p} play?", "Which sport does {p} like?"),
    "food": ("What is {p}'s favourite food?", "Which food does {p} like best?"),
}
_FACT_ANSWERS = {
    "color": "{p}'s favourite color is {v}.",
    "city": "{p} lives in {v}.",
    "pet": "{p} has a {v}.",
    "sport": "{p} plays {v}.",
    "food": "{p}'s favourite food is {v}.",
}
# Scene sentences before the question: they make each prompt distinct (the splits share no prompt) and say nothing
# about the answer.
_SCENE_ADJECTIVES = ("small", "big", "old", "new", "red", "blue", "quiet", "happy", "long", "short")
_SCENE_PLACES = ("school", "garden", "kitchen", "library", "park", "market", "village", "forest", "river", "city")


def world_facts() -> dict[tuple[str, str], str]:
    """The `facts` family's table: (person, attribute) -> value, the same for every seed and split."""
    rng = random.Random(FACTS_WORLD_SEED)
    return {(p, a): rng.choice(FACTS[a]) for p in PEOPLE for a in FACT_ATTRIBUTES}

# ---------------------------------------------------------------------------------------------------------------------
# Families. Each generator takes a `random.Random` and returns (instruction, input, completion, extra_references,
# answer), where `answer` is the content that [`~promptkd_trainer.demo.answers`] checks (a number, a word or the
# expected output). `input` is "" for instruction-only tasks. Several paraphrases per instruction make the data a
# little less trivial.


def _arithmetic(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    name = rng.choice(NAMES)
    singular, plural = rng.choice(ITEMS)

    def noun(n: int) -> str:
        return singular if n == 1 else plural

    # Small operands: about 200 distinct facts, enough to separate a teacher from a 8x smaller student.
    a = rng.randint(2, 12)
    if rng.random() < 0.5:
        b = rng.randint(1, 9)
        verb = rng.choice(("buys", "finds", "gets", "wins"))
        result, when = a + b, "now"
        instruction = (
            f"{name} has {a} {noun(a)}. {name} {verb} {b} more. How many {plural} does {name} have now?"
        )
    else:
        b = rng.randint(1, a - 1)
        verb = rng.choice(("gives away", "loses", "sells"))
        result, when = a - b, "left"
        instruction = f"{name} has {a} {noun(a)}. {name} {verb} {b}. How many {plural} does {name} have left?"
    r = f"{result} {noun(result)}"
    wordings = [f"{name} has {r} {when}.", f"{name} has {r}.", f"The answer is {r}.", f"There are {r} {when}."]
    return instruction, "", *_pick(rng, wordings, str(result))


def _pick(rng: random.Random, wordings: list[str], value: str) -> tuple[str, list[str], str]:
    """One wording as the completion; every wording and the bare value are references (several good answers)."""
    completion = rng.choice(wordings)
    return completion, [w for w in wordings if w != completion] + [value], value


def _count(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    # Draw the target count first (uniform over 0..3) so that the answer distribution is not skewed.
    pool = rng.sample(WORDS, 3)
    target, others = pool[0], pool[1:]
    n = rng.randint(0, 3)
    length = rng.randint(max(n, 3), 6)
    words = [target] * n + [rng.choice(others) for _ in range(length - n)]
    rng.shuffle(words)
    instruction = rng.choice(
        (
            f"How many times does the word {target} appear in the list?",
            f"Count how many times {target} appears in the list.",
        )
    )
    times = f"{n} time{'' if n == 1 else 's'}"
    wordings = [f"{target} appears {times}.", f"The word {target} appears {times}.", f"It appears {times}.",
                f"The answer is {n}."]
    return instruction, " ".join(words), *_pick(rng, wordings, str(n))


def _lookup(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    keys = rng.sample(sorted(FACTS), rng.randint(3, 4))
    facts = {k: rng.choice(FACTS[k]) for k in keys}
    key = rng.choice(keys)
    instruction = rng.choice((f"What is the {key}?", f"Look up the {key} in the input."))
    context = "\n".join(f"{k}: {v}" for k, v in facts.items())
    value = facts[key]
    wordings = [f"The {key} is {value}.", f"{value} is the {key}.", f"It is {value}.", f"The answer is {value}."]
    return instruction, context, *_pick(rng, wordings, value)


def _word_list(rng: random.Random, low: int, high: int) -> list[str]:
    return rng.sample(WORDS, rng.randint(low, high))


def _reverse(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    words = _word_list(rng, 3, 6)
    instruction = rng.choice(("Reverse the order of the words.", "Write the words in reverse order."))
    answer = " ".join(reversed(words))
    return instruction, " ".join(words), answer, [], answer


def _sort(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    words = _word_list(rng, 2, 4)
    instruction = rng.choice(("Sort the words in alphabetical order.", "Put the words in alphabetical order."))
    answer = " ".join(sorted(words))
    return instruction, " ".join(words), answer, [], answer


def _uppercase(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    words = _word_list(rng, 2, 5)
    instruction = rng.choice(("Rewrite the words in capital letters.", "Convert the words to uppercase."))
    answer = " ".join(w.upper() for w in words)
    return instruction, " ".join(words), answer, [], answer


def _dedupe(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    unique = _word_list(rng, 2, 4)
    words = unique + [rng.choice(unique) for _ in range(rng.randint(1, 2))]
    rng.shuffle(words)
    kept = list(dict.fromkeys(words))
    instruction = rng.choice(
        ("Remove the repeated words and keep the first occurrence of each.", "Delete the duplicate words.")
    )
    answer = " ".join(kept)
    return instruction, " ".join(words), answer, [], answer


def _commas(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    words = _word_list(rng, 3, 6)
    instruction = rng.choice(("Join the words with commas.", "Write the words as a comma-separated list."))
    answer = ", ".join(words)
    return instruction, " ".join(words), answer, [], answer


def _numbered(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    words = _word_list(rng, 2, 5)
    instruction = rng.choice(("Write the words as a numbered list.", "Turn the words into a numbered list."))
    answer = "\n".join(f"{i}. {w}" for i, w in enumerate(words, 1))
    return instruction, " ".join(words), answer, [], answer


def _extract(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    words = _word_list(rng, 3, 6)
    ordinal = rng.choice(ORDINALS)
    index = {"first": 0, "second": 1, "third": 2, "last": -1}[ordinal]
    instruction = rng.choice((f"What is the {ordinal} word?", f"Copy the {ordinal} word of the input."))
    word = words[index]
    wordings = [f"The {ordinal} word is {word}.", f"{word} is the {ordinal} word.", f"It is {word}.",
                f"The answer is {word}."]
    return instruction, " ".join(words), *_pick(rng, wordings, word)


_WORLD = world_facts()


def _facts(rng: random.Random) -> tuple[str, str, str, list[str], str]:
    person, attribute = rng.choice(PEOPLE), rng.choice(FACT_ATTRIBUTES)
    value = _WORLD[person, attribute]
    scene = f"The {rng.choice(_SCENE_ADJECTIVES)} {rng.choice(WORDS)} is in the {rng.choice(_SCENE_PLACES)}."
    question = rng.choice(_FACT_QUESTIONS[attribute]).format(p=person)
    wordings = [_FACT_ANSWERS[attribute].format(p=person, v=value), f"The {attribute} of {person} is {value}.",
                f"It is {value}.", f"The answer is {value}."]
    return f"{scene} {question}", "", *_pick(rng, wordings, value)


_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str, str, list[str], str]]] = {
    "arithmetic": _arithmetic,
    "count": _count,
    "lookup": _lookup,
    "reverse": _reverse,
    "sort": _sort,
    "uppercase": _uppercase,
    "dedupe": _dedupe,
    "commas": _commas,
    "numbered": _numbered,
    "extract": _extract,
    "facts": _facts,
}

TASK_FAMILIES: tuple[str, ...] = tuple(_GENERATORS)
"""Names of the task families, in the order in which [`make_dataset`] cycles through them."""


def format_prompt(instruction: str, input: str = "", template: str = "alpaca") -> str:
    """Format an instruction (and optional input) with an Alpaca-style template.

    Args:
        instruction (`str`):
            Task instruction.
        input (`str`, *optional*, defaults to `""`):
            Context for the instruction; when empty, the template variant without an `### Input:` section is used.
        template (`str`, *optional*, defaults to `"alpaca"`):
            `"alpaca"` (the Stanford Alpaca / MiniLLM template used by PromptKD) or `"short"` (the same sections
            without the preamble sentence).

    Returns:
        `str`: The prompt, ending with `"### Response:\\n"`.
    """
    if template not in TEMPLATES:
        raise ValueError(f"Unknown template {template!r}; expected one of {sorted(TEMPLATES)}.")
    without_input, with_input = TEMPLATES[template]
    if input:
        return with_input.format(instruction=instruction, input=input)
    return without_input.format(instruction=instruction)


def vocabulary_texts(repeat: int = 5) -> list[str]:
    """Lines that use every word of the task pools, lower and upper case, with and without a leading space.

    Adding them to a tokenizer's training corpus (see [`~promptkd_trainer.demo.tokenizer.train_tokenizer`]) makes
    every task word a single token whatever the size of the training split.

    Args:
        repeat (`int`, *optional*, defaults to `5`):
            Copies of each line, so that the merges are frequent enough to be learned.
    """
    words = sorted(set(WORDS) | set(PEOPLE) | {v for values in FACTS.values() for v in values} | set(FACTS))
    words += sorted({w for pair in ITEMS for w in pair} | {w.upper() for w in WORDS})
    lines = ["\n".join(words), " ".join(words)]
    return lines * repeat


@dataclass
class TaskExample:
    """One generated example, before formatting.

    Args:
        family (`str`): Task family.
        instruction (`str`): Instruction text.
        input (`str`): Context (`""` for instruction-only tasks).
        completion (`str`): Target answer, without EOS.
        references (`list[str]`): Acceptable answers, `completion` first.
        answer (`str`): The content a right answer carries (the number, the looked-up value, the word, or the
            expected output of the list families); what [`~promptkd_trainer.demo.answers.answer_correct`] checks.
    """

    family: str
    instruction: str
    input: str
    completion: str
    references: list[str] = field(default_factory=list)
    answer: str = ""

    def to_row(self, template: str = "alpaca") -> dict:
        """The dataset row: `prompt`, `completion`, `family` and `references`."""
        return {
            "prompt": format_prompt(self.instruction, self.input, template),
            "completion": self.completion,
            "family": self.family,
            "references": list(self.references),
            "answer": self.answer,
        }


def generate_example(family: str, rng: random.Random) -> TaskExample:
    """Draw one example of `family` with `rng`.

    Args:
        family (`str`): One of [`TASK_FAMILIES`].
        rng (`random.Random`): Source of randomness; the example is a deterministic function of its state.

    Returns:
        [`TaskExample`]
    """
    if family not in _GENERATORS:
        raise ValueError(f"Unknown task family {family!r}; expected one of {list(TASK_FAMILIES)}.")
    instruction, input, completion, extra, answer = _GENERATORS[family](rng)
    references = [completion] + [r for r in extra if r != completion]
    return TaskExample(family, instruction, input, completion, references, answer)


def make_dataset(
    n_train: int = 8000,
    n_val: int = 200,
    n_test: int = 200,
    seed: int = 0,
    *,
    families: Sequence[str] | None = None,
    template: str = "alpaca",
):
    """Generate the synthetic instruction-following dataset.

    Families are balanced within each split (row `i` of a split is drawn from family `i % len(families)` before the
    split is shuffled), and a prompt already used in any split is redrawn, so the splits are disjoint and free of
    duplicates. The test split is drawn first, then validation, then train.

    Args:
        n_train (`int`, *optional*, defaults to `8000`):
            Number of training rows.
        n_val (`int`, *optional*, defaults to `200`):
            Number of validation rows.
        n_test (`int`, *optional*, defaults to `200`):
            Number of test rows.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the generator; the result is a deterministic function of all arguments.
        families (`Sequence[str]`, *optional*):
            Subset of [`TASK_FAMILIES`] to draw from; defaults to all of them.
        template (`str`, *optional*, defaults to `"alpaca"`):
            Prompt template, `"alpaca"` or `"short"` (see [`format_prompt`]).

    Returns:
        `datasets.DatasetDict`: Splits `train`, `validation` and `test` with columns `prompt`, `completion`, `family`
        and `references`.

    Example:

    ```python
    >>> from promptkd_trainer.demo.tasks import make_dataset
    >>> ds = make_dataset(n_train=100, n_val=10, n_test=10, seed=0, template="short")
    >>> print(ds["train"][0]["prompt"] + ds["train"][0]["completion"])
    ```
    """
    families = tuple(families) if families is not None else TASK_FAMILIES
    if not families:
        raise ValueError("`families` must name at least one task family.")
    unknown = [f for f in families if f not in _GENERATORS]
    if unknown:
        raise ValueError(f"Unknown task families {unknown}; expected a subset of {list(TASK_FAMILIES)}.")
    if template not in TEMPLATES:
        raise ValueError(f"Unknown template {template!r}; expected one of {sorted(TEMPLATES)}.")
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 0:
            raise ValueError(f"`{name}` must be >= 0, got {n}.")

    rng = random.Random(seed)
    seen: set[str] = set()
    max_tries = 1000

    def draw_split(n: int) -> list[dict]:
        rows = []
        for i in range(n):
            family = families[i % len(families)]
            for _ in range(max_tries):
                row = generate_example(family, rng).to_row(template)
                if row["prompt"] not in seen:
                    break
            else:  # pragma: no cover - the families have far more than n distinct prompts
                raise RuntimeError(
                    f"Could not draw a new {family!r} prompt in {max_tries} tries; lower the split sizes."
                )
            seen.add(row["prompt"])
            rows.append(row)
        rng.shuffle(rows)
        return rows

    splits = {}
    for split, n in (("test", n_test), ("validation", n_val), ("train", n_train)):
        splits[split] = draw_split(n)

    features = Features(
        {
            "prompt": Value("string"),
            "completion": Value("string"),
            "family": Value("string"),
            "references": List(Value("string")),
            "answer": Value("string"),
        }
    )
    logger.info(
        f"Generated synthetic tasks: {n_train} train, {n_val} validation, {n_test} test ({len(families)} families)"
    )
    return DatasetDict(
        {
            # from_dict, not from_list: an empty split (n=0) must still carry the columns.
            split: Dataset.from_dict({k: [row[k] for row in splits[split]] for k in features}, features=features)
            for split in ("train", "validation", "test")
        }
    )

# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Answer accuracy: does a generated answer carry the right content, whatever its wording?

ROUGE-L against every good wording rewards an answer's template as much as its content ("The age is 45." scores high
against "The age is 21." although it is wrong). The demo therefore also extracts the content of each answer and
compares it with the truth, per task family:

| family | content extracted | right when |
|---|---|---|
| `arithmetic`, `count` | the first integer in the answer | it equals the true number |
| `lookup` | the look-up values (any key's) that the answer names | exactly one, the true value |
| `facts` | the attribute values (colors, cities, pets, sports, foods) the answer names | exactly one, the true one |
| `extract` | the task words the answer names | exactly one, the true word |
| list families (`reverse`, `sort`, `uppercase`, `dedupe`, `commas`, `numbered`) | the task words, in order | \
the true list, in order |

An answer that names two candidates ("The pet is cat or dog.") is wrong: it does not commit to one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .tasks import FACT_ATTRIBUTES, FACTS, TASK_FAMILIES, WORDS


NUMBER_FAMILIES = ("arithmetic", "count")
LIST_FAMILIES = ("reverse", "sort", "uppercase", "dedupe", "commas", "numbered")
_LOOKUP_VALUES = frozenset(v for values in FACTS.values() for v in values)
_WORLD_VALUES = frozenset(v for a in FACT_ATTRIBUTES for v in FACTS[a])
_TASK_WORDS = frozenset(WORDS) | frozenset(w.upper() for w in WORDS)
_TOKEN = re.compile(r"[A-Za-z]+|\d+")


def extract_answer(family: str, text: str) -> str | None:
    """The content of `text` as a family-`family` answer, in the form of the dataset's `answer` column.

    Returns `None` when the answer carries no content of that kind (no number, no candidate value), and for `lookup`
    and `extract` also when it names more than one distinct candidate.
    """
    if family not in TASK_FAMILIES:
        raise ValueError(f"Unknown task family {family!r}; expected one of {list(TASK_FAMILIES)}.")
    tokens = _TOKEN.findall(text)
    if family in NUMBER_FAMILIES:
        numbers = [t for t in tokens if t.isdigit()]
        return str(int(numbers[0])) if numbers else None
    pool = {"lookup": _LOOKUP_VALUES, "facts": _WORLD_VALUES}.get(family, _TASK_WORDS)
    found = [t for t in tokens if t in pool]
    if family in LIST_FAMILIES:
        return " ".join(found) if found else None
    distinct = list(dict.fromkeys(found))
    return distinct[0] if len(distinct) == 1 else None


def answer_correct(family: str, text: str, answer: str) -> bool:
    """Whether `text` carries the true `answer` (the dataset's `answer` column) of a family-`family` task."""
    extracted = extract_answer(family, text)
    if extracted is None:
        return False
    if family in LIST_FAMILIES:
        # Only the words and their order count, not the separators (commas, numbering, line breaks).
        return extracted == extract_answer(family, answer)
    return extracted == answer


def answer_accuracy(families: Sequence[str], predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Percentage of `predictions` that carry their true answer ([`answer_correct`]), x100."""
    if not (len(families) == len(predictions) == len(answers)):
        raise ValueError(
            f"families, predictions and answers must have the same length, got "
            f"{len(families)}, {len(predictions)}, {len(answers)}."
        )
    if not predictions:
        raise ValueError("No predictions to score.")
    right = sum(answer_correct(f, p, a) for f, p, a in zip(families, predictions, answers))
    return 100.0 * right / len(predictions)

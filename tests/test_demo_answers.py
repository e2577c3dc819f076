# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Answer accuracy on hand-written right and wrong answers, per task family, and the demo's interval arithmetic."""

import math
import random
import statistics

import pytest

from promptkd_trainer.demo.answers import answer_accuracy, answer_correct, extract_answer
from promptkd_trainer.demo.results import Run, Scores, Stats, paired, t_quantile
from promptkd_trainer.demo.tasks import make_dataset


# (family, true answer, right answers, wrong answers), written by hand.
CASES = [
    ("arithmetic", "8",
     ["Tom has 8 pens now.", "The answer is 8 pens.", "8", "There are 8 pens left."],
     ["Tom has 9 pens now.", "The answer is 18 pens.", "Tom has pens.", "", "There are 3 pens left, not 8."]),
    ("count", "2",
     ["cat appears 2 times.", "The word cat appears 2 times.", "The answer is 2.", "It appears 2 times."],
     ["cat appears 1 time.", "The word cat appears 3 times.", "It appears twice.", "The answer is 12."]),
    ("lookup", "21",
     ["The age is 21.", "21 is the age.", "It is 21.", "21"],
     ["The age is 45.", "The age is 21 or 45.", "The answer is tennis.", "It is the age."]),
    ("lookup", "pear",
     ["The fruit is pear.", "pear is the fruit.", "The answer is pear."],
     ["The fruit is plum.", "The fruit is pear, not plum.", "The answer is tennis.", "The fruit is pears."]),
    ("facts", "Tokyo",
     ["Theo lives in Tokyo.", "The city of Theo is Tokyo.", "It is Tokyo.", "Tokyo"],
     ["Theo lives in Paris.", "Theo lives in Tokyo or Rome.", "Theo lives in a city.", "Theo's pet is Tokyo's cat."]),
    ("extract", "dog",
     ["The second word is dog.", "dog is the second word.", "It is dog.", "dog"],
     ["The second word is cat.", "It is dog or cat.", "The second word is.", "dogs"]),
    ("reverse", "sun cat dog",
     ["sun cat dog", "sun, cat, dog"],
     ["dog cat sun", "sun cat", "sun cat dog dog"]),
    ("numbered", "1. lamp\n2. cup",
     ["1. lamp\n2. cup", "1. lamp 2. cup"],
     ["1. cup\n2. lamp", "1. lamp"]),
    ("uppercase", "CAT DOG",
     ["CAT DOG"],
     ["cat dog", "CAT"]),
]  # fmt: skip


@pytest.mark.parametrize("family,truth,right,wrong", CASES, ids=[f"{c[0]}-{c[1][:6]}" for c in CASES])
def test_answer_correct_on_hand_written_answers(family, truth, right, wrong):
    for text in right:
        assert answer_correct(family, text, truth), text
    for text in wrong:
        assert not answer_correct(family, text, truth), text


def test_extract_answer_forms():
    assert extract_answer("arithmetic", "Tom has 07 pens.") == "7"
    assert extract_answer("count", "none") is None
    assert extract_answer("lookup", "The city is Rome.") == "Rome"
    assert extract_answer("lookup", "Rome or Paris") is None  # does not commit to one value
    assert extract_answer("commas", "cat, dog, sun") == "cat dog sun"
    with pytest.raises(ValueError, match="Unknown task family"):
        extract_answer("poetry", "a rose")


def test_every_reference_of_the_dataset_is_right_and_others_answers_are_wrong():
    families = ["arithmetic", "count", "lookup", "extract", "facts"]
    data = make_dataset(300, 0, 0, seed=5, families=families, template="short")
    rows = data["train"]
    for row in rows:
        for ref in row["references"]:
            assert answer_correct(row["family"], ref, row["answer"]), (ref, row["answer"])
    # Another row's completion of the same family is wrong whenever its answer differs.
    rng = random.Random(0)
    for row in rows:
        other = rng.choice([r for r in rows if r["family"] == row["family"]])
        if other["answer"] != row["answer"]:
            assert not answer_correct(row["family"], other["completion"], row["answer"])


def test_answer_accuracy_is_the_percentage_right():
    families = ["arithmetic", "count", "lookup", "extract"]
    predictions = ["There are 5 cakes now.", "The answer is 1.", "The color is red.", "It is owl."]
    answers = ["5", "2", "red", "owl"]
    assert answer_accuracy(families, predictions, answers) == 75.0
    with pytest.raises(ValueError, match="same length"):
        answer_accuracy(families, predictions[:2], answers)


def test_t_quantile_matches_the_table():
    # Two-sided 95 % critical values of Student's t (any statistics table).
    for df, value in ((1, 12.706), (2, 4.303), (5, 2.571), (9, 2.262), (19, 2.093), (29, 2.045)):
        assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-3)


def test_stats_interval_by_hand():
    values = [1.0, -0.5, 2.0, 0.5]
    s = Stats.of(values)
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = 3.182 * sd / math.sqrt(4)  # t_{0.975, 3} = 3.182
    assert (s.mean, s.std) == pytest.approx((mean, sd))
    assert (s.ci95_low, s.ci95_high) == pytest.approx((mean - half, mean + half), abs=1e-3)


def _run(method, seed, rouge, accuracy):
    scores = Scores(
        rougeL_sampled=statistics.fmean(rouge), answer_accuracy_sampled=statistics.fmean(accuracy),
        exact_match_sampled=0.0, rougeL_greedy=0.0, answer_accuracy_greedy=0.0, exact_match_greedy=0.0, samples=1,
        per_prompt_rougeL_sampled=rouge, per_prompt_answer_accuracy_sampled=accuracy,
    )
    return Run(method, seed, scores, 0.0, [])


def test_paired_differences_by_seed_and_variance_split():
    a = [_run("promptkd", 1, [50.0, 60.0, 70.0], [100.0, 0.0, 100.0]), _run("promptkd", 2, [40.0, 40.0, 40.0],
                                                                            [0.0, 0.0, 100.0])]
    b = [_run("onpolicy", 2, [42.0, 38.0, 40.0], [0.0, 0.0, 0.0]), _run("onpolicy", 1, [50.0, 50.0, 50.0],
                                                                         [100.0, 100.0, 0.0])]
    p = paired(a, b)
    # Seed 1: (50+60+70)/3 - 50 = 10; seed 2: 40 - 40 = 0 (paired by seed, not by position in the list).
    assert p.rougeL_sampled.values == pytest.approx([10.0, 0.0])
    assert p.answer_accuracy_sampled.values == pytest.approx([200 / 3 - 200 / 3, 100 / 3])
    within_seed1 = statistics.variance([0.0, 10.0, 20.0]) / 3
    within_seed2 = statistics.variance([-2.0, 2.0, 0.0]) / 3
    v = p.variance["rougeL_sampled"]
    assert v["within_seed_var"] == pytest.approx((within_seed1 + within_seed2) / 2)
    assert v["between_seed_var"] == pytest.approx(statistics.variance([10.0, 0.0]))
    with pytest.raises(ValueError, match="No common seeds"):
        paired(a, [_run("onpolicy", 3, [1.0], [0.0])])

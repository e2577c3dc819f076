# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`PromptKDConfig` validation and the GKD-compatibility contract of its defaults."""

import logging

import pytest
from trl.experimental.gkd import GKDConfig

from promptkd_trainer import PromptKDConfig


def make(**kwargs):
    return PromptKDConfig("out", use_cpu=True, report_to="none", **kwargs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"reg_coef": float("inf")}, "reg_coef"),
        ({"reg_coef": float("nan")}, "reg_coef"),
        ({"loss_temperature": float("inf")}, "loss_temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"teacher_learning_rate": float("inf")}, "teacher_learning_rate"),
        ({"teacher_weight_decay": float("nan")}, "teacher_weight_decay"),
        ({"num_virtual_tokens": True}, "num_virtual_tokens"),  # bool is an int subclass: True would mean 1 token
        ({"num_virtual_tokens": 7.0}, "num_virtual_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"top_k": False}, "top_k"),
        ({"divergence_chunk_size": True}, "divergence_chunk_size"),
        ({"prompt_init_text": ""}, "prompt_init_text"),
        ({"prompt_init_text": "  \n"}, "prompt_init_text"),
    ],
)
def test_invalid_values_are_rejected(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        make(**kwargs)


def test_valid_edge_values_are_accepted():
    make(reg_coef=0, loss_temperature=2, num_virtual_tokens=0, prompt_init_text="")  # no prompt: the text is unused
    make(prompt_init_text=None)  # random initialisation
    assert make(teacher_learning_rate=None).teacher_learning_rate is None


def test_empty_prompt_init_text_message_says_what_to_do():
    with pytest.raises(ValueError, match="Use None for a random initialisation"):
        make(prompt_init_text=" ")


@pytest.fixture
def warnings_of_config(caplog):
    """Records of the config module's logger (transformers loggers do not propagate by default)."""
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("promptkd_trainer.promptkd_config")
    logger.propagate = True
    caplog.set_level(logging.WARNING, logger="promptkd_trainer.promptkd_config")
    yield caplog
    logger.propagate = False


@pytest.mark.parametrize(
    "kwargs, warns",
    [
        ({"beta": 0.9}, True),  # GKD's beta with PromptKD's default reverse KL: no effect
        ({"beta": 0.9, "skew_alpha": 0.2, "student_loss_type": "skew_reverse_kl"}, True),
        ({"beta": 0.9, "student_loss_type": "jsd"}, False),
        ({"beta": 0.9, "prompt_loss_type": "jsd"}, False),
        ({"beta": 0.9, "reg_loss_type": "jsd"}, False),
        ({"beta": 0.9, "reg_loss_type": "jsd", "reg_coef": 0.0}, True),  # the regulariser is off
        ({"beta": 0.9, "prompt_loss_type": "jsd", "num_virtual_tokens": 0}, True),  # no prompt: only the student term
        ({}, False),  # the default beta is not "set"
    ],
)
def test_beta_without_a_jsd_term_warns(warnings_of_config, kwargs, warns):
    make(**kwargs)
    messages = [r.getMessage() for r in warnings_of_config.records if "`beta=" in r.getMessage()]
    assert bool(messages) is warns, messages
    if warns:
        assert "has no effect" in messages[0] and "'jsd'" in messages[0]


def test_jsd_terms_lists_the_terms_that_use_beta():
    assert make().jsd_terms() == []
    assert make(student_loss_type="jsd", reg_loss_type="jsd").jsd_terms() == ["student_loss_type", "reg_loss_type"]


# The five shared fields whose defaults differ from GKD's, and the value each config gives them.
DIFFERENT_FROM_GKD = {
    "lmbda": 1.0, "temperature": 1.0, "max_new_tokens": 256, "learning_rate": 5e-5, "max_length": 512
}


def test_defaults_that_differ_from_gkd_are_the_documented_ones():
    """Exactly these shared fields differ from GKDConfig, and the docstring's table names each with both defaults."""
    ours, gkd = PromptKDConfig.__dataclass_fields__, GKDConfig.__dataclass_fields__
    shared = set(ours) & set(gkd)
    differ = {n for n in shared if ours[n].default != gkd[n].default}
    assert differ == set(DIFFERENT_FROM_GKD)
    table = PromptKDConfig.__doc__.split("| field |")[1].split("\n\n")[0]
    for name, value in DIFFERENT_FROM_GKD.items():
        assert ours[name].default == value
        row = next(line for line in table.splitlines() if line.strip().startswith(f"| `{name}`"))
        cells = [c.strip().strip("`") for c in row.strip().strip("|").split("|")]
        assert (float(cells[1]), float(cells[2])) == (gkd[name].default, value), row
    assert ours["beta"].default == gkd["beta"].default


def test_readme_states_the_differing_defaults_where_it_claims_gkd_compatibility():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("GKD") :]
    for name in DIFFERENT_FROM_GKD:
        assert f"`{name}`" in section[:4000], name


def test_bf16_default_follows_transformers_availability_check(monkeypatch):
    """bf16=None resolves through transformers' is_torch_bf16_gpu_available (the check TrainingArguments uses)."""
    import transformers.training_args

    import promptkd_trainer.promptkd_config as module

    monkeypatch.setattr(module, "is_torch_bf16_gpu_available", lambda: False)
    assert PromptKDConfig("out", report_to="none").bf16 is False
    monkeypatch.setattr(module, "is_torch_bf16_gpu_available", lambda: True)
    # TrainingArguments validates bf16 with the same check: make it pass on this CPU machine too.
    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: True)
    assert PromptKDConfig("out", report_to="none").bf16 is True
    assert make().bf16 is False  # use_cpu=True wins
    assert PromptKDConfig("out", report_to="none", bf16=False).bf16 is False  # an explicit value is kept

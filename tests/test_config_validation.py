# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`PromptKDConfig` validation and the contract of its defaults with TRL's GKDConfig and DistillationConfig."""

import dataclasses
import logging
import warnings

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
    "kwargs, beta, loss_type",
    [
        ({}, 1.0, "reverse_kl"),  # the paper's reverse KL, DistillationConfig's default beta
        ({"beta": 0.0}, 0.0, "forward_kl"),
        ({"beta": 1.0}, 1.0, "reverse_kl"),
        ({"beta": 0.3}, 0.3, "jsd"),
        ({"student_loss_type": "forward_kl"}, 0.0, "forward_kl"),
        ({"student_loss_type": "reverse_kl"}, 1.0, "reverse_kl"),
        ({"student_loss_type": "forward_kl", "beta": 0.0}, 0.0, "forward_kl"),
        ({"student_loss_type": "jsd"}, 0.5, "jsd"),  # DistillationConfig's "0.5 = JSD"
        ({"student_loss_type": "jsd", "beta": 0.2}, 0.2, "jsd"),
        ({"student_loss_type": "jsd", "beta": 1.0}, 1.0, "jsd"),  # the end point is the reverse KL exactly
        ({"student_loss_type": "skew_reverse_kl"}, None, "skew_reverse_kl"),  # set by skew_alpha, not beta
    ],
)
def test_beta_and_student_loss_type_are_one_knob(kwargs, beta, loss_type):
    config = make(**kwargs)
    assert (config.beta, config.student_loss_type) == (beta, loss_type)
    # The resolved pair is a valid config of its own (a saved config reloads to the same thing).
    again = make(beta=config.beta, student_loss_type=config.student_loss_type)
    assert (again.beta, again.student_loss_type) == (beta, loss_type)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"student_loss_type": "reverse_kl", "beta": 0.0}, "is `beta=1.0`, but `beta=0.0` is set"),
        ({"student_loss_type": "forward_kl", "beta": 0.5}, "is `beta=0.0`, but `beta=0.5` is set"),
        ({"student_loss_type": "skew_forward_kl", "beta": 0.5}, "has no effect with `student_loss_type='skew_"),
        ({"beta": 1.5}, r"`beta` must be in \[0, 1\]"),
        ({"beta": float("nan")}, r"`beta` must be in \[0, 1\]"),
        ({"student_loss_type": "kl"}, "`student_loss_type` must be one of"),
        ({"prompt_beta": 2.0}, "`prompt_beta` must be in"),
    ],
)
def test_beta_conflicts_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_fields_changed_apart_after_init_are_refused_by_the_trainer_check():
    config = make()
    config.beta = 0.0  # student_loss_type still says reverse KL: the trainer would silently ignore beta
    with pytest.raises(ValueError, match="disagrees with `student_loss_type='reverse_kl'`"):
        config.check_consistency()
    config = make()
    config.max_completion_length = 8
    with pytest.raises(ValueError, match="they are one setting"):
        config.check_consistency()


@pytest.mark.parametrize(
    "kwargs, warns",
    [
        ({"prompt_beta": 0.9}, True),  # no 'jsd' prompt or regulariser term: no effect
        ({"prompt_beta": 0.9, "student_loss_type": "jsd"}, True),  # the student's JSD uses `beta`, not prompt_beta
        ({"prompt_beta": 0.9, "prompt_loss_type": "jsd"}, False),
        ({"prompt_beta": 0.9, "reg_loss_type": "jsd"}, False),
        ({"prompt_beta": 0.9, "reg_loss_type": "jsd", "reg_coef": 0.0}, True),  # the regulariser is off
        ({"prompt_beta": 0.9, "prompt_loss_type": "jsd", "num_virtual_tokens": 0}, True),  # no prompt term
        ({}, False),  # the default is not "set"
    ],
)
def test_prompt_beta_without_a_jsd_prompt_term_warns(warnings_of_config, kwargs, warns):
    make(**kwargs)
    messages = [r.getMessage() for r in warnings_of_config.records if "`prompt_beta=" in r.getMessage()]
    assert bool(messages) is warns, messages
    if warns:
        assert "has no effect" in messages[0]


def test_jsd_terms_lists_the_terms_that_use_the_generalized_jsd():
    assert make().jsd_terms() == []
    assert make(beta=0.5, reg_loss_type="jsd").jsd_terms() == ["student_loss_type", "reg_loss_type"]


@pytest.mark.parametrize(
    "kwargs, value",
    [({}, 256), ({"max_completion_length": 8}, 8), ({"max_new_tokens": 8}, 8),
     ({"max_completion_length": 8, "max_new_tokens": 8}, 8)],
)
def test_max_completion_length_and_max_new_tokens_are_one_value(kwargs, value):
    config = make(**kwargs)
    assert config.max_completion_length == config.max_new_tokens == value


def test_max_completion_length_conflict_and_type_are_refused():
    with pytest.raises(ValueError, match="disagree: they are DistillationConfig's and GKD's names"):
        make(max_completion_length=8, max_new_tokens=16)
    with pytest.raises(ValueError, match="`max_completion_length` must be an integer"):
        make(max_completion_length=8.0)


def test_use_vllm_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="`use_vllm=True` is not supported.*not implemented.*vLLM is (not )?instal"):
        make(use_vllm=True)


def test_vllm_fields_without_use_vllm_warn_that_they_are_unused(warnings_of_config):
    make(vllm_mode="server", vllm_gpu_memory_utilization=0.5)
    messages = [r.getMessage() for r in warnings_of_config.records]
    assert any("vllm_mode='server'" in m and "vllm_gpu_memory_utilization=0.5" in m and "no effect" in m
               for m in messages), messages
    warnings_of_config.clear()
    make()
    assert not [r for r in warnings_of_config.records if "vllm" in r.getMessage()]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_tool_calling_iterations": 3}, "does not call tools"),
        ({"generation_kwargs": {"max_new_tokens": 4}}, "must not set `max_new_tokens`: set `max_completion_length`"),
        ({"generation_kwargs": {"num_return_sequences": 2}}, "one completion per prompt"),
        ({"generation_kwargs": {"eos_token_id": 3}}, "end tokens"),
        ({"generation_kwargs": {"top_kk": 3}}, r"not GenerationConfig fields: \['top_kk'\]"),
        ({"generation_kwargs": "[1, 2]"}, "`generation_kwargs` must be a dict"),
        ({"min_p": 1.5}, "`min_p` must be in"),
        ({"repetition_penalty": 0.0}, "`repetition_penalty` must be > 0"),
        ({"num_completions_to_print": 0}, "`num_completions_to_print`"),
    ],
)
def test_distillation_config_settings_that_cannot_apply_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_dict_fields_parse_from_json_strings_as_in_trl():
    config = make(generation_kwargs='{"no_repeat_ngram_size": 3}', chat_template_kwargs='{"enable_thinking": false}')
    assert config.generation_kwargs == {"no_repeat_ngram_size": 3}
    assert config.chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({}, None),
        ({"cache_implementation": "static"}, None),  # caching does not change the distribution
        ({"generation_kwargs": {"use_cache": True}}, None),
        ({"top_p": 0.95}, "top_p=0.95"),
        ({"top_k": 10}, "top_k=10"),
        ({"min_p": 0.05}, "min_p=0.05"),
        ({"repetition_penalty": 1.1}, "repetition_penalty=1.1"),
        ({"temperature": 0.7}, "temperature=0.7"),
        ({"generation_kwargs": {"num_beams": 2}}, "generation_kwargs['num_beams']=2"),
    ],
)
def test_sampling_off_the_papers_warns_that_it_changes_the_method(warnings_of_config, kwargs, named):
    config = make(**kwargs)
    messages = [r.getMessage() for r in warnings_of_config.records if "On-policy sampling departs" in r.getMessage()]
    assert bool(messages) is (named is not None), messages
    assert bool(config.off_policy_sampling()) is (named is not None)
    if named:
        assert named in messages[0] and "not the paper's on-policy distillation" in messages[0]


def test_sampling_temperature_only_warns_about_the_loss_temperature(warnings_of_config):
    make(temperature=0.7)
    assert any("Set `loss_temperature`" in r.getMessage() for r in warnings_of_config.records)
    warnings_of_config.clear()
    make(temperature=0.7, loss_temperature=0.7)
    assert not any("Set `loss_temperature`" in r.getMessage() for r in warnings_of_config.records)


def test_every_distillation_config_field_is_accepted():
    """A DistillationConfig YAML parses into PromptKDConfig: every field exists here (TRL 1.16)."""
    from trl import DistillationConfig

    missing = set(DistillationConfig.__dataclass_fields__) - set(PromptKDConfig.__dataclass_fields__)
    assert not missing, sorted(missing)


def _table_rows():
    """The rows of the docstring's table of defaults: {field: (gkd, distillation, promptkd)} as text."""
    table = PromptKDConfig.__doc__.split("| field |")[1].split("\n\n")[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = tuple(cells[1:4])
    return rows


def test_defaults_that_differ_from_trl_are_the_documented_ones():
    """The shared fields whose effective defaults differ from GKDConfig's or DistillationConfig's are exactly the
    table's rows, each with the three defaults it states."""
    from trl import DistillationConfig

    common = dict(output_dir="out", use_cpu=True, bf16=False, report_to="none")
    ours = make()
    trl_configs = {"gkd": GKDConfig(**common), "distillation": DistillationConfig(**common)}
    derived = {"output_dir", "logging_dir", "bf16", "remove_unused_columns", "dataset_kwargs", "max_new_tokens"}
    differ = set()
    for name, theirs in trl_configs.items():
        for field_name in set(PromptKDConfig.__dataclass_fields__) & set(type(theirs).__dataclass_fields__):
            if field_name not in derived and getattr(ours, field_name) != getattr(theirs, field_name):
                differ.add(field_name)
    rows = _table_rows()
    # `max_new_tokens` is DistillationConfig's `max_completion_length`: compared through that name.
    assert differ == set(rows) - {"max_new_tokens"} | {"max_completion_length"}
    for field_name, cells in rows.items():
        for cell, config in zip(cells, (trl_configs["gkd"], trl_configs["distillation"], ours)):
            renamed = field_name == "max_new_tokens" and config is not trl_configs["gkd"]
            name = "max_completion_length" if renamed else field_name
            expected = getattr(config, name, None)
            if cell == "none":
                assert not hasattr(config, name), (field_name, cell)
            elif isinstance(expected, bool):
                assert cell == str(expected), (field_name, cell, expected)
            else:
                assert float(cell) == expected, (field_name, cell, expected)


def test_readme_states_the_differing_defaults_where_it_claims_trl_compatibility():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Quickstart") :]
    for name in _table_rows():
        assert f"`{name}`" in section[:6000], name
    assert "DistillationConfig" in section[:6000]


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



def _checkpointing_warnings(build, **kwargs) -> tuple[PromptKDConfig, list[str]]:
    """`build(**kwargs)` and the checkpointing FutureWarnings it raised (setup.cfg's filter bypassed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = build(**kwargs)
    messages = [str(w.message) for w in caught if w.category is FutureWarning]
    return config, [m for m in messages if "checkpointing" in m]


def test_default_config_raises_no_checkpointing_future_warning():
    """TRL's default (checkpointing on) is kept, under the name this transformers reads without a deprecation
    warning; a user who sets the old name still hears of the deprecation from transformers."""
    config, caught = _checkpointing_warnings(make)
    assert caught == []
    assert config.gradient_checkpointing is True  # TRL's SFTConfig default
    renamed = hasattr(config, "activation_checkpointing")  # transformers releases that renamed the field
    if renamed:
        assert config.activation_checkpointing is True
        off, caught = _checkpointing_warnings(make, activation_checkpointing=False)
        assert caught == [] and off.gradient_checkpointing is False and off.activation_checkpointing is False
    off, caught = _checkpointing_warnings(make, gradient_checkpointing=False)
    assert off.gradient_checkpointing is False and len(caught) == int(renamed)
    # A copy of the args (`dataclasses.replace`, as accelerate and TRL make them) neither warns nor changes it.
    copy, caught = _checkpointing_warnings(lambda: dataclasses.replace(config))
    assert caught == [] and copy.gradient_checkpointing is True

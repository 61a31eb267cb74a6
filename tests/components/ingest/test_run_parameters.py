"""The run's runtime parameters are checked by the YAML's rules, with the lines `thaw run` prints."""

import json

import pytest

from components.ingest.run_parameters import check_run_parameters
from components.spec import ConfigError
from components.train.options import TrainerConfig
from pipeline import config as config_lib

BAD_STAGES = [{"name": "head", "epochs": 2, "trainable": "none", "optimizer": "adamz", "learning_rate": -0.1},
              {"name": "fine_tune", "epochs": 0, "trainable": "top:1"}]


def defaults() -> tuple[dict, dict]:
    """The two parameters as `thaw compile` writes their defaults."""
    config = config_lib.load()
    training = TrainerConfig(backbone=config.backbone, head=config.head, training=config.training,
                             max_pixels=config.data.max_pixels).model_dump(mode="json")
    return training, config.data.gate_limits()


def yaml_problems(tmp_path, text: str) -> list[str]:
    (tmp_path / "thaw.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        config_lib.load(tmp_path / "thaw.yaml")
    return caught.value.problems


def test_a_bad_training_parameter_gets_the_lines_thaw_run_gives_for_the_yaml(tmp_path):
    training, limits = defaults()
    training["training"]["stages"] = BAD_STAGES
    with pytest.raises(ConfigError) as caught:
        check_run_parameters(json.dumps(training), json.dumps(limits))
    expected = yaml_problems(tmp_path, "training:\n  stages: " + json.dumps(BAD_STAGES) + "\n")
    assert caught.value.problems == expected
    assert any(line.startswith("training.stages[0].optimizer: ") and "adamz" in line for line in expected), expected
    assert any(line.startswith("training.stages[0].learning_rate: ") for line in expected), expected
    assert any(line.startswith("training.stages[1].epochs: ") for line in expected), expected
    assert "the run's runtime parameters (`training`, `data_limits`): invalid configuration" in str(caught.value)


def test_a_bad_data_limits_parameter_reads_as_the_data_section(tmp_path):
    training, limits = defaults()
    limits.update(min_images_per_class=0, max_label_drift="a lot", typo=1)
    with pytest.raises(ConfigError) as caught:
        check_run_parameters(json.dumps(training), json.dumps(limits))
    expected = yaml_problems(tmp_path, "data: {min_images_per_class: 0, max_label_drift: a lot}\n")
    assert caught.value.problems[:2] == expected and len(expected) == 2
    # An unknown key is named as in the YAML; the fields it lists are the ones this parameter may set.
    assert caught.value.problems[2].startswith("data.typo: unknown field; known fields are max_bad_fraction, ")


def test_both_bad_at_once_are_said_at_once_and_good_defaults_pass():
    training, limits = defaults()
    check_run_parameters(json.dumps(training), json.dumps(limits))
    check_run_parameters("", "")  # not set: the component's own defaults
    with pytest.raises(ConfigError) as caught:
        check_run_parameters("{not json", json.dumps({**limits, "max_bad_fraction": 2}))
    assert [p.split(":")[0] for p in caught.value.problems] == ["not valid JSON", "data.max_bad_fraction"]

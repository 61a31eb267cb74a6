"""The configuration: defaults run, YAML loads, every bad field is named."""

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from components.ingest.data_limits import DataLimits
from components.serve.budgets import LatencyBudgets
from components.spec import parse
from components.train.options import HeadConfig, StageConfig, TrainerConfig
from pipeline import config as config_lib
from pipeline.config import ConfigError

from tests.conftest import REPO



def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_valid_and_train_the_imagenet_backbone_at_its_own_size(workdir, monkeypatch):
    from demo import pretrained

    monkeypatch.delenv(pretrained.BACKBONE_DIR_ENV, raising=False)
    config = config_lib.load()
    assert config.data.root.endswith("build/demo/data")
    # No backbone named: EfficientNet-Lite0 with ImageNet weights, where `thaw backbone` converts it, at 224x224.
    assert config.backbone.path == str(pretrained.cached_dir() / "backbone.keras")
    assert "/backbones/efficientnet_lite0-" in config.backbone.path
    assert config.backbone.image_size == 224 and config.backbone.is_default()
    assert [(s.name, s.trainable) for s in config.training.stages] == [("head", "none"), ("fine_tune", "all")]
    assert config.training.stages[1].learning_rate < config.training.stages[0].learning_rate
    assert config.output_dir == str(workdir / "thaw-output")
    assert config.metadata_path == str(workdir / "thaw-output" / "metadata.sqlite")
    assert config.serving_path == str(workdir / "thaw-output" / "serving")


def test_a_prepared_backbone_folder_is_the_default_where_it_is_set(workdir, monkeypatch):
    monkeypatch.setenv("THAW_BACKBONE_DIR", "/opt/thaw/backbones/efficientnet_lite0")
    config = config_lib.load()
    assert config.backbone.path == "/opt/thaw/backbones/efficientnet_lite0/backbone.keras"
    assert config.backbone.is_default()
    named = config_lib.load(None, {"backbone.path": "mine.keras"})
    assert named.backbone.path == str(workdir / "mine.keras") and not named.backbone.is_default()


def test_the_digits_demo_carries_its_own_backbone_and_schedule(tiny_demo, workdir):
    from demo.digits import DEMO_STAGES, demo_stages

    config = config_lib.load(tiny_demo["config"])
    assert config.backbone.path == tiny_demo["backbone"] and config.backbone.image_size == 32
    assert config.data.root == tiny_demo["data"]
    # Written in its own file, not left to the defaults (which it must not follow when they change).
    assert yaml.safe_load(Path(tiny_demo["config"]).read_text())["training"]["stages"] == list(DEMO_STAGES)
    assert config.training.stages == demo_stages()
    assert config.output_dir == str(workdir / "thaw-output")  # as `thaw run` with no arguments writes


def test_relative_paths_resolve_against_the_yaml_file(workdir):
    conf_dir = workdir / "conf"
    conf_dir.mkdir()
    path = write(conf_dir / "thaw.yaml", """
        output_dir: out
        data: {root: images}
        backbone: {path: models/backbone.keras, image_size: 64}
    """)
    config = config_lib.load(path)
    assert config.output_dir == str(conf_dir / "out")
    assert config.data.root == str(conf_dir / "images")
    assert config.backbone.path == str(conf_dir / "models" / "backbone.keras")
    assert config.backbone.image_size == 64


def test_overrides_resolve_against_the_working_directory(workdir):
    config = config_lib.load(None, {"data.root": "pics", "output_dir": "runs/1"})
    assert config.data.root == str(workdir / "pics")
    assert config.output_dir == str(workdir / "runs" / "1")


def test_remote_paths_are_left_alone(workdir):
    config = config_lib.load(None, {"data.root": "gs://bucket/images"})
    assert config.data.root == "gs://bucket/images"


def test_stages_load_from_yaml(workdir):
    path = write(workdir / "thaw.yaml", """
        training:
          batch_size: 8
          stages:
            - {name: head, epochs: 2, trainable: none, learning_rate: 0.01}
            - {name: top, epochs: 3, trainable: "top:20%", learning_rate: 1.0e-4, warmup_epochs: 1,
               optimizer: adamw, weight_decay: 0.01, layer_lr_decay: 0.7, patience: 2}
            - {name: all, epochs: 1, trainable: all, learning_rate: 1.0e-5, decay: constant}
    """)
    config = config_lib.load(path)
    assert [(s.name, s.epochs, s.trainable) for s in config.training.stages] == [
        ("head", 2, "none"), ("top", 3, "top:20%"), ("all", 1, "all")]
    assert config.training.stages[2].learning_rate == pytest.approx(1e-5)
    top = config.training.stages[1]
    assert (top.optimizer, top.weight_decay, top.layer_lr_decay, top.patience) == ("adamw", 0.01, 0.7, 2)


def test_trainer_settings_are_checked_field_by_field(workdir):
    path = write(workdir / "thaw.yaml", """
        backbone: {architecture: MobileNetV9, input_scaling: bgr}
        head: {pooling: mean, dense_units: [0], dropout: 1.5}
        training:
          mixed_precision: maybe
          augment: {flip: diagonal, crop: 2}
          stages:
            - {name: a, trainable: "top:0"}
            - {name: b, trainable: "top:150%"}
            - {name: c, trainable: "from:"}
            - {name: d, trainable: some}
            - {name: e, trainable: auto, patience: 0, optimizer: lamb, decay: step, warmup_epochs: 5,
               layer_lr_decay: 0, monitor: loss}
    """)
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.load(path)
    message = str(error.value)
    for expected in (
            "backbone.architecture: 'MobileNetV9' is not a keras.applications model; known: ConvNeXtBase",
            "backbone.input_scaling: use auto, none, unit, tf, torch or caffe; got 'bgr'",
            "head.pooling: use avg, max or flatten", "head.dense_units[0]: must be >= 1", "head.dropout",
            "training.mixed_precision: use auto, on or off", "training.augment.flip", "training.augment.crop",
            "training.stages[0].trainable: top:N needs a number of layers >= 1, got 'top:0'",
            "training.stages[1].trainable: top:P% needs a percentage in (0, 100], got 'top:150%'",
            "training.stages[2].trainable: from:LAYER needs a layer name",
            "training.stages[3].trainable: use none, all, top:N (layers), top:P% (of the layers), from:LAYER or auto",
            "training.stages[4].patience: trainable auto unfreezes the next block",
            "training.stages[4].optimizer", "training.stages[4].decay", "training.stages[4].warmup_epochs",
            "training.stages[4].layer_lr_decay", "training.stages[4].monitor"):
        assert expected in message, expected


def test_every_bad_field_is_named_at_once(workdir):
    path = write(workdir / "bad.yaml", """
        data: {splits: {train: 0.9, validation: 0.2, test: 0.2}}
        training:
          batch_size: 0
          stages:
            - {name: head, epochs: 1, learning_rate: 0.01}
            - {name: top, epochs: 0, learning_rate: -0.1}
        gate: {min_accuracy: 1.5}
    """)
    with pytest.raises(ConfigError) as err:
        config_lib.load(path)
    message = str(err.value)
    assert str(path) in message
    for field in ("data.splits: fractions must add up to 1", "training.batch_size",
                  "training.stages[1].epochs", "training.stages[1].learning_rate", "gate.min_accuracy"):
        assert field in message, field
    assert len(err.value.problems) == 5


def test_unknown_fields_and_wrong_types_are_named(workdir):
    path = write(workdir / "bad.yaml", """
        trainig: {}
        backbone: {image_size: big}
        training: {stages: {name: head}}
    """)
    with pytest.raises(ConfigError) as err:
        config_lib.load(path)
    message = str(err.value)
    assert "trainig: unknown field" in message
    assert "backbone.image_size: expected an integer, got 'big'" in message
    assert "training.stages: expected a list" in message


def test_duplicate_stage_names_and_missing_splits(workdir):
    with pytest.raises(ConfigError) as err:
        config_lib.load(None, {
            "data.splits": {"train": 1.0},
            "training.stages": [{"name": "a"}, {"name": "a"}],
        })
    message = str(err.value)
    assert "data.splits: needs a 'validation' split" in message and "needs a 'test' split" in message
    assert "training.stages[1].name: 'a' is used by more than one stage" in message


def test_unreadable_and_non_mapping_files(workdir):
    with pytest.raises(ConfigError, match="cannot read the file"):
        config_lib.load(workdir / "missing.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config_lib.load(write(workdir / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_lib.load(write(workdir / "broken.yaml", "a: [1,\n"))


def test_the_example_configuration_is_valid(workdir):
    config = config_lib.load(REPO / "thaw.example.yaml")
    assert config.pipeline_name == "thaw"
    assert config.training.stages


def test_the_splits_are_train_validation_and_test_and_an_old_eval_split_is_explained(workdir):
    assert config_lib.load().data.splits == {"train": 0.7, "validation": 0.15, "test": 0.15}
    with pytest.raises(ConfigError) as err:  # a thaw.yaml written before the held-out test split
        config_lib.load(None, {"data.splits": {"train": 0.8, "eval": 0.2}})
    assert err.value.problems == [
        "data.splits: the 'eval' split is now two: 'validation' (the schedule's early stopping and best epoch) "
        "and 'test' (held out for the gate); write e.g. {train: 0.7, validation: 0.15, test: 0.15}"]


def test_data_limits_are_checked_and_handed_to_the_gate(workdir):
    config = config_lib.load()
    assert config.data.gate_limits() == {"max_bad_fraction": 0.05, "min_images_per_class": 40,
                                         "min_images_per_split": 2, "max_class_imbalance": 10.0,
                                         "max_label_drift": 0.25}
    with pytest.raises(ConfigError) as err:
        config_lib.load(None, {"data.max_bad_fraction": 1.5, "data.max_class_imbalance": 0.5,
                               "data.min_side": 0, "data.max_label_drift": 0})
    message = str(err.value)
    for field in ("data.max_bad_fraction", "data.max_class_imbalance", "data.min_side", "data.max_label_drift"):
        assert field in message, field


def test_a_manifest_is_a_valid_data_root(workdir):
    (workdir / "images.csv").write_text("uri,label\n")
    config = config_lib.load(None, {"data.root": "images.csv"})
    assert config.data.root == str(workdir / "images.csv")


def test_a_gate_that_checks_nothing_is_refused(workdir):
    with pytest.raises(ConfigError, match="gate: min_accuracy 0 with max_accuracy_drop 1 lets every model through"):
        config_lib.load(None, {"gate.min_accuracy": 0, "gate.max_accuracy_drop": 1})
    config_lib.load(None, {"gate.min_accuracy": 0, "gate.max_accuracy_drop": 0.05})  # a drop limit alone is a gate


def test_serving_budgets_are_checked(workdir):
    config = config_lib.load()
    assert config.serving.budgets() == {"p99_ms_batch_1": 1000.0, "p99_ms_batch_n": 10000.0, "batch_size": 32}
    with pytest.raises(ConfigError) as err:
        config_lib.load(None, {"serving.keep_versions": 0, "serving.p99_ms_batch_1": -1, "serving.batch_size": 1})
    for field in ("serving.keep_versions", "serving.p99_ms_batch_1", "serving.batch_size"):
        assert field in str(err.value), field


def test_beam_steps_name_a_runner_unless_one_is_given(workdir):
    # Beam's default DirectRunner would first download its Prism runner from GitHub.
    assert config_lib.ThawConfig().beam_args()[0] == "--runner=FnApiRunner"
    config = config_lib.load(None, {"beam_pipeline_args": ["--direct_running_mode=in_memory"]})
    assert config.beam_args() == ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
    config = config_lib.load(None, {"beam_pipeline_args": ["--runner=DataflowRunner", "--project=p"]})
    assert config.beam_args() == ["--runner=DataflowRunner", "--project=p"]


def test_beam_runner_dask_names_beams_dask_runner_and_the_scheduler(workdir):
    config = config_lib.load(None, {"beam.runner": "dask", "beam.dask_address": "tcp://dask-scheduler:8786",
                                    "beam_pipeline_args": ["--dask_npartitions=8"]})
    assert config.beam_args() == ["--runner=pipeline.dask_runner.DaskRunner",
                                  "--dask_client_address=tcp://dask-scheduler:8786", "--dask_npartitions=8"]
    # The defaults' direct-runner options stay; the DaskRunner ignores them.
    assert config_lib.load(None, {"beam.runner": "dask", "beam.dask_address": "tls://10.0.0.5:8786"}).beam_args()[:2] \
        == [f"--runner={config_lib.DASK_RUNNER}", "--dask_client_address=tls://10.0.0.5:8786"]
    # Named in beam_pipeline_args in full, with a scheduler, it is taken as given.
    args = [f"--runner={config_lib.DASK_RUNNER}", "--dask_client_address=tcp://127.0.0.1:8786"]
    assert config_lib.load(None, {"beam_pipeline_args": args}).beam_args() == args


@pytest.mark.parametrize("overrides,problem", [
    ({"beam.runner": "dask"}, "beam.dask_address: runner dask needs the scheduler's address"),
    ({"beam.runner": "dask", "beam.dask_address": "dask-scheduler"},
     "beam.dask_address: give the Dask scheduler's address as tcp://HOST:PORT"),
    ({"beam.runner": "dask", "beam.dask_address": "http://dask-scheduler:8787/status"},
     "beam.dask_address: 'http://dask-scheduler:8787/status' is a web address (the dashboard's"),
    ({"beam.dask_address": "tcp://dask-scheduler:8786"}, "beam.runner: dask_address is set but runner is fnapi"),
    ({"beam.runner": "spark"}, "beam.runner: use fnapi or dask; got 'spark'"),
    ({"beam.runner": "dask", "beam.dask_address": "tcp://h:8786", "beam_pipeline_args": ["--runner=FnApiRunner"]},
     "beam_pipeline_args: names --runner=FnApiRunner while beam.runner is dask"),
    ({"beam_pipeline_args": ["--runner=DaskRunner"]}, "beam_pipeline_args: Beam 2.77 knows no runner named 'DaskRunner'"),
    ({"beam_pipeline_args": ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                             "--dask_client_address=tcp://h:8786"]},
     "beam_pipeline_args: Beam 2.77's own DaskRunner runs only a pipeline's last branch"),
    ({"beam_pipeline_args": ["--runner", config_lib.DASK_RUNNER]},
     "beam_pipeline_args: the DaskRunner without --dask_client_address=tcp://HOST:8786 starts a throwaway"),
])
def test_a_bad_beam_runner_is_named_with_its_fix(workdir, overrides, problem):
    with pytest.raises(ConfigError) as err:
        config_lib.load(None, overrides)
    assert problem in str(err.value)


@pytest.mark.parametrize("yaml_text,problem", [
    # an unknown key, with the nearest known one
    ("training: {stages: [{name: head, epoch: 3}]}",
     "training.stages[0].epoch: unknown field (did you mean epochs?); known fields are auto_max_blocks, decay, "
     "epochs, layer_lr_decay, learning_rate, monitor, name, optimizer, patience, restore_best, stem_lr_factor, "
     "trainable, warmup_epochs, weight_decay"),
    # a wrong type: nothing is guessed, not even a number in quotes
    ("backbone: {image_size: big}", "backbone.image_size: expected an integer, got 'big'"),
    ("training: {stages: [{name: head, epochs: '3'}]}", "training.stages[0].epochs: expected an integer, got '3'"),
    ("backbone: {trust_code: 1}", "backbone.trust_code: expected true or false, got 1"),
    # out of range, with the range and what its bounds mean
    ("training: {stages: [{name: head}, {name: top, learning_rate: -0.1}]}",
     "training.stages[1].learning_rate: must be in (0, 1), got -0.1"),
    ("training: {steps_per_epoch: -1}", "training.steps_per_epoch: must be >= 0 (0 = one pass over the data), got -1"),
    ("training: {stages: [{name: head, patience: -1}]}",
     "training.stages[0].patience: must be >= 0 (0 = no early stopping), got -1"),
    ("backbone: {input_scaling: bgr}", "backbone.input_scaling: use auto, none, unit, tf, torch or caffe; got 'bgr'"),
    # rules across fields
    ("training: {stages: [{name: head, epochs: 2, warmup_epochs: 3}]}",
     "training.stages[0].warmup_epochs: must be in [0, epochs=2], got 3"),
    ("training: {stages: [{name: top, trainable: auto}]}",
     "training.stages[0].patience: trainable auto unfreezes the next block after `patience` epochs without "
     "improvement, so it needs patience >= 1"),
    ("training: {stages: []}", "training.stages: needs at least one stage (e.g. the head alone)"),
    ("gate: {min_accuracy: 0, max_accuracy_drop: 1}",
     "gate: min_accuracy 0 with max_accuracy_drop 1 lets every model through; set a floor or a maximum drop"),
    ("backbone: {path: ''}", "backbone.path: name a .keras/.h5 file, a SavedModel directory or a TF Hub module, "
                             "or set backbone.architecture"),
])
def test_each_kind_of_problem_is_one_line_naming_its_path_and_the_fix(workdir, yaml_text, problem):
    with pytest.raises(ConfigError) as err:
        config_lib.load(write(workdir / "thaw.yaml", yaml_text))
    assert err.value.problems == [problem]
    assert str(err.value) == f"{workdir / 'thaw.yaml'}: invalid configuration:\n  {problem}"


def test_a_valid_configuration_is_frozen(workdir):
    config = config_lib.load()
    with pytest.raises(ValidationError, match="frozen"):
        config.gate.min_accuracy = 0.0
    with pytest.raises(ValidationError, match="frozen"):
        config.training.stages[0].epochs = 3


def test_the_head_has_one_default_dropout():
    # The Trainer once built the head with dropout 0.0 when the section left it out, against 0.2 here.
    assert HeadConfig().dropout == config_lib.load().head.dropout == 0.2
    assert TrainerConfig.model_validate({"backbone": {"path": "b.keras"}, "max_pixels": 10}).head.dropout == 0.2


def test_the_trainers_json_reads_back_as_the_configuration(workdir):
    config = config_lib.load(None, {"training.stages": [{"name": "head", "epochs": 2, "learning_rate": 0.01}]})
    sent = TrainerConfig(backbone=config.backbone, head=config.head, training=config.training,
                         max_pixels=config.data.max_pixels).model_dump_json()
    received = parse(TrainerConfig, sent, "custom_config")
    assert received.training == config.training and received.head == config.head
    assert received.backbone.model_dump() == config.backbone.model_dump()


def test_the_trainer_refuses_an_unknown_key_in_its_custom_config_by_name():
    from components.train.trainer import run_fn

    custom_config = {"backbone": {"path": "b.keras"}, "max_pixels": 10,
                     "training": {"stages": [{"name": "head", "epochs": 2, "learnig_rate": 0.01}]}}
    with pytest.raises(ConfigError) as err:
        run_fn(SimpleNamespace(custom_config=custom_config))
    assert err.value.problems == [
        "training.stages[0].learnig_rate: unknown field (did you mean learning_rate?); known fields are "
        "auto_max_blocks, decay, epochs, layer_lr_decay, learning_rate, monitor, name, optimizer, patience, "
        "restore_best, stem_lr_factor, trainable, warmup_epochs, weight_decay"]
    assert str(err.value).startswith("the Trainer's custom_config (the pipeline's `training` runtime parameter)")


def test_the_data_gate_refuses_an_unknown_key_in_its_limits_by_name():
    from components.ingest.data_gate import DataGate

    gate = DataGate.EXECUTOR_SPEC.executor_class._FUNCTION
    with pytest.raises(ConfigError) as err:  # refused before any artifact is read
        gate(statistics=None, anomalies=None, report=None, verdict=None,
             limits_json='{"min_images_per_class": 5, "max_label_drfit": 0.1}')
    assert err.value.problems == [
        "max_label_drfit: unknown field (did you mean max_label_drift?); known fields are max_bad_fraction, "
        "max_class_imbalance, max_label_drift, min_images_per_class, min_images_per_split"]
    assert parse(DataLimits, '{"min_images_per_class": 5}', "limits").min_images_per_class == 5
    with pytest.raises(ConfigError, match=r"min_images_per_class: expected an integer, got 5.5"):
        parse(DataLimits, '{"min_images_per_class": 5.5}', "limits")
    with pytest.raises(ConfigError, match="limits: invalid configuration:\n  not valid JSON"):
        parse(DataLimits, '{"min_images_per_class": ', "limits")


def test_serving_validation_refuses_an_unknown_key_in_its_budgets_by_name():
    from components.serve.serving_validator import ServingValidator

    validate = ServingValidator.EXECUTOR_SPEC.executor_class._FUNCTION
    with pytest.raises(ConfigError) as err:  # refused before the model is looked at
        validate(model=None, blessing=None, max_pixels=100, budgets_json='{"p99_ms_batch_1": 50, "batch": 8}')
    assert err.value.problems == ["batch: unknown field (did you mean batch_size?); known fields are batch_size, "
                                  "p99_ms_batch_1, p99_ms_batch_n"]
    assert config_lib.load().serving.budgets() == LatencyBudgets().model_dump()


def test_the_schema_describes_every_field_for_an_editor(capsys):
    from pipeline import cli

    assert cli.main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    stages = schema["$defs"]["TrainingConfig"]["properties"]["stages"]
    assert stages["items"] == {"$ref": "#/$defs/StageConfig"} and stages["minItems"] == 1
    stage = schema["$defs"]["StageConfig"]
    assert stage["additionalProperties"] is False and stage["required"] == ["name"]
    assert set(stage["properties"]) == set(StageConfig.model_fields)
    assert all(field.get("description") for field in stage["properties"].values())
    rate = stage["properties"]["learning_rate"]
    assert (rate["exclusiveMinimum"], rate["exclusiveMaximum"], rate["default"]) == (0, 1, 0.001)
    assert stage["properties"]["optimizer"]["enum"] == ["adam", "adamw", "sgd", "rmsprop"]
    assert "'head'" not in json.dumps(schema["properties"])  # sections are references, described once
    # The example configuration is what the schema allows; a typo is not. Draft 7 too: the YAML
    # language server's.
    example = yaml.safe_load((REPO / "thaw.example.yaml").read_text())
    typo = {"training": {"stages": [{"name": "a", "lr": 1}]}}
    for validator in (jsonschema.Draft202012Validator(schema), jsonschema.Draft7Validator(schema)):
        assert not list(validator.iter_errors(example))
        assert [e.message for e in validator.iter_errors(typo)] == [
            "Additional properties are not allowed ('lr' was unexpected)"]


def test_thaw_config_prints_the_configuration_as_it_will_run(workdir, capsys):
    from pipeline import cli

    write(workdir / "thaw.yaml", "data: {root: images}\ntraining: {batch_size: 8}\n")
    assert cli.main(["config", "--config", "thaw.yaml"]) == 0
    printed = write(workdir / "printed.yaml", capsys.readouterr().out)
    assert yaml.safe_load(printed.read_text())["data"]["root"] == str(workdir / "images")
    assert config_lib.load(printed) == config_lib.load(workdir / "thaw.yaml")
    write(workdir / "bad.yaml", "training: {batch_size: 0}\n")
    assert cli.main(["config", "--config", "bad.yaml"]) == 2
    assert "training.batch_size: must be >= 1, got 0" in capsys.readouterr().err

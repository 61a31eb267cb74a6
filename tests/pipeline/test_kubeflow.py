"""thaw compile: the same DAG as a KFP v2 pipeline spec for the Kubeflow UI."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import cli

CLUSTER = """
output_dir: gs://bucket/thaw
serving_dir: /models/thaw
data: {root: gs://bucket/images}
backbone: {path: gs://bucket/backbone.keras}
kubeflow:
  image: ghcr.io/example/thaw:0.1
  trainer_gpus: 2
  trainer_memory: 24G
  node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kfp")
    (folder / "cluster.yaml").write_text(CLUSTER)
    assert cli.main(["compile", "--config", str(folder / "cluster.yaml"), "--output", str(folder / "p.yaml")]) == 0
    return folder / "p.yaml"


def test_the_document_is_a_pipeline_spec_and_a_platform_spec(compiled):
    pipeline, platform = list(yaml.safe_load_all(compiled.read_text()))
    spec = json_format.ParseDict(pipeline, pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "thaw"
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    import kfp.components
    assert kfp.components.load_component_from_file(str(compiled)) is not None


def test_every_component_runs_the_configured_image(compiled):
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    images = {name: executor["container"]["image"]
              for name, executor in pipeline["deploymentSpec"]["executors"].items() if "container" in executor}
    assert len(images) >= 10 and set(images.values()) == {"ghcr.io/example/thaw:0.1"}


def test_the_trainer_alone_can_run_the_gpu_image(tmp_path):
    (tmp_path / "gpu.yaml").write_text(CLUSTER.replace("  trainer_gpus: 2", "  trainer_gpus: 2\n  trainer_image: ghcr.io/example/thaw-gpu:0.1"))
    assert cli.main(["compile", "--config", str(tmp_path / "gpu.yaml"), "--output", str(tmp_path / "p.yaml")]) == 0
    pipeline = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    images = {name: executor["container"]["image"]
              for name, executor in pipeline["deploymentSpec"]["executors"].items() if "container" in executor}
    assert images.pop("Trainer_executor") == "ghcr.io/example/thaw-gpu:0.1"
    assert len(images) >= 10 and set(images.values()) == {"ghcr.io/example/thaw:0.1"}


def test_the_trainer_asks_for_gpus_cpu_and_memory_on_gpu_nodes(compiled):
    pipeline, platform = list(yaml.safe_load_all(compiled.read_text()))
    resources = pipeline["deploymentSpec"]["executors"]["Trainer_executor"]["container"]["resources"]
    assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "2"}
    assert resources["cpuLimit"] == 4.0 and resources["memoryLimit"] == 24.0
    trainer = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["Trainer_executor"]
    assert trainer["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}
    assert trainer["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_failed_trainer_is_retried_to_resume_from_its_checkpoint(compiled):
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb

    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    task = json_format.ParseDict(pipeline["root"]["dag"]["tasks"]["Trainer"], pb.PipelineTaskSpec())
    assert task.retry_policy.max_retry_count == 3 and task.retry_policy.backoff_duration.seconds == 60
    assert "retryPolicy" not in pipeline["root"]["dag"]["tasks"]["Evaluator"]


def test_every_run_ends_with_a_report_the_kfp_ui_shows(compiled):
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    tasks = pipeline["root"]["dag"]["tasks"]
    conditions = {}
    for name in ("RunReport", "StoppedRunReport"):
        component = pipeline["components"][tasks[name]["componentRef"]["name"]]
        output = component["outputDefinitions"]["artifacts"]["report"]["artifactType"]
        # TFX writes a custom type as an instance schema; the KFP backend names
        # the MLMD type after its title, and the UI renders system.HTML as a page.
        title = output.get("schemaTitle") or yaml.safe_load(output["instanceSchema"])["title"]
        assert title == "system.HTML", output
        conditions[name] = tasks[name]["triggerPolicy"]["condition"]
    # One after the push, one for a run the data gate stopped: exactly one of them runs.
    passed = "metadata['passed'] == 1.0)"
    train = "(inputs.artifacts['_DataFingerprint.fingerprint'].artifacts[0].metadata['train'] == 1.0) && "
    assert conditions["RunReport"].startswith(train + "(") and conditions["RunReport"].endswith(passed), conditions
    assert conditions["StoppedRunReport"].startswith(train + "!((") and passed in conditions["StoppedRunReport"], \
        conditions
    assert "pushed_model" in tasks["RunReport"]["inputs"]["artifacts"]
    # (and DataFingerprint's record, which only its condition reads)
    assert set(tasks["StoppedRunReport"]["inputs"]["artifacts"]) == {"ingestion_report", "verdict", "examples",
                                                                     "_DataFingerprint.fingerprint"}


def test_nothing_trains_unless_the_data_gate_passed(compiled):
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    tasks = pipeline["root"]["dag"]["tasks"]
    for name in ("Transform", "Trainer", "Evaluator", "ServingValidator", "AtomicPusher"):
        condition = tasks[name]["triggerPolicy"]["condition"]
        assert "_DataGate.verdict" in condition and "passed" in condition, name
    # ... and nothing is even ingested unless the data changed since the served model was trained (or forced).
    assert "metadata['train'] == 1.0" in tasks["ImageExampleGen"]["triggerPolicy"]["condition"]
    assert "triggerPolicy" not in tasks["DataFingerprint"] and "triggerPolicy" not in tasks["ServedModel"]


def test_user_code_is_referenced_by_module_path(compiled):
    text = compiled.read_text()
    assert "components.train.trainer.run_fn" in text and "components.train.preprocessing.preprocessing_fn" in text
    assert "module_file" not in json.dumps(next(yaml.safe_load_all(text))["deploymentSpec"])


def test_a_cpu_trainer_gets_no_accelerator_and_no_platform_document(tmp_path):
    (tmp_path / "cpu.yaml").write_text(CLUSTER.replace("trainer_gpus: 2", "trainer_gpus: 0")
                                       .replace("  node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}\n", ""))
    assert cli.main(["compile", "--config", str(tmp_path / "cpu.yaml"), "--output", str(tmp_path / "p.yaml")]) == 0
    docs = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert len(docs) == 1
    assert "accelerator" not in docs[0]["deploymentSpec"]["executors"]["Trainer_executor"]["container"]["resources"]


def test_runtime_parameters_a_ui_run_can_change_have_the_configured_defaults(compiled):
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    parameters = pipeline["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == {"data_root", "data_limits", "training", "force"}
    assert parameters["force"]["defaultValue"] == "false"
    assert parameters["data_root"]["defaultValue"] == "gs://bucket/images"
    assert json.loads(parameters["data_limits"]["defaultValue"])["min_images_per_class"] == 40
    training = json.loads(parameters["training"]["defaultValue"])
    assert [s["epochs"] for s in training["training"]["stages"]] == [10, 10]
    assert all(p["isOptional"] for p in parameters.values())


def test_every_artifact_type_in_the_spec_is_one_the_kubeflow_entrypoint_can_load(compiled):
    # TFX's KFP v2 container entrypoint imports a custom artifact's class from
    # its type name (kubeflow_v2_entrypoint_utils), before the executor runs.
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils

    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    failures = []
    for name, component in sorted(pipeline["components"].items()):
        for key, spec in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            artifact = pb.RuntimeArtifact(uri=f"gs://bucket/thaw/{name}/{key}")
            json_format.ParseDict(spec["artifactType"], artifact.type)
            try:  # what the entrypoint does with each output before it calls the executor
                kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict({key: pb.ArtifactList(artifacts=[artifact])})
            except ImportError as exc:
                failures.append(f"{name}.{key}: {exc}")
    assert failures == []


def test_the_first_task_is_handed_the_training_and_data_limits_parameters_to_check(compiled):
    # DataFingerprint, the first task that reads the data, checks them before it reads a file
    # (components.ingest.run_parameters); only ServedModel, which reads no image, runs before it.
    # ImageExampleGen is handed them too and checks them again.
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    for name in ("DataFingerprint", "ImageExampleGen"):
        given = pipeline["root"]["dag"]["tasks"][name]["inputs"]["parameters"]
        assert json.dumps(given["training_json"]).count('"training"') == 1, given["training_json"]
        assert json.dumps(given["limits_json"]).count('"data_limits"') == 1, given["limits_json"]
    assert pipeline["root"]["dag"]["tasks"]["DataFingerprint"]["dependentTasks"] == ["ServedModel"]
    assert "dependentTasks" not in pipeline["root"]["dag"]["tasks"]["ServedModel"]
    given = pipeline["root"]["dag"]["tasks"]["DataFingerprint"]["inputs"]["parameters"]
    assert given["force"] == {"componentInputParameter": "force"}


def test_kfp_caching_is_set_on_purpose_for_every_task(compiled):
    # The backend's cache key (backend/src/v2/cacheutils/cache.go) holds no file under data.root and no
    # serving directory: a cached ServedModel, DataFingerprint or ImageExampleGen would hand on a stale answer.
    from pipeline.kubeflow import CACHING

    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    tasks = pipeline["root"]["dag"]["tasks"]
    assert {name: task.get("cachingOptions") for name, task in tasks.items()} == {
        name: {"enableCache": False} for name in tasks}
    assert {"ServedModel", "DataFingerprint", "ImageExampleGen", "ImportSchemaGen"} <= set(CACHING) <= set(tasks)


def test_every_executor_is_a_container_the_open_source_backend_runs(compiled):
    # The OSS backend compiles container and importer executors only
    # (backend/src/v2/compiler/argocompiler/dag.go: "resolver executors not
    # implemented"); TFX's Resolver would compile to a resolver executor.
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    kinds = {name: next(iter(executor)) for name, executor in pipeline["deploymentSpec"]["executors"].items()}
    assert set(kinds.values()) == {"container"}, kinds
    assert "ServedModel" in pipeline["root"]["dag"]["tasks"]
    baseline = pipeline["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["artifacts"]["baseline_model"]
    assert baseline["taskOutputArtifact"] == {"producerTask": "ServedModel", "outputArtifactKey": "baseline"}


def test_every_task_runs_the_entrypoint_that_gives_tfx_its_input_types(compiled):
    from pipeline import kfp_entrypoint

    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    commands = {executor["container"]["command"] == kfp_entrypoint.COMMAND
                for executor in pipeline["deploymentSpec"]["executors"].values()}
    assert commands == {True}


def test_the_entrypoint_types_each_input_as_its_component_declares():
    from pipeline.kfp_entrypoint import with_declared_types

    declared = {"artifacts": {"examples": {"artifactType": {"instanceSchema": "title: tfx.Examples\n"}}},
                "parameters": {"exclude_splits": {"parameterType": "STRING"}}}
    # What the OSS backend's driver passes (an empty schema) and what kfp.local passes (system.Artifact).
    for passed in ({"instanceSchema": ""}, {"schemaTitle": "system.Artifact"}):
        executor_input = {"inputs": {"artifacts": {"examples": {"artifacts": [
            {"name": "7", "uri": "gs://b/examples", "type": passed, "metadata": {"span": 0}}]}},
            "parameterValues": {"exclude_splits": "[]"}}, "outputs": {"outputFile": "/tmp/out.json"}}
        typed = json.loads(with_declared_types(json.dumps(executor_input), json.dumps(declared)))
        artifact = typed["inputs"]["artifacts"]["examples"]["artifacts"][0]
        assert artifact["type"] == {"instanceSchema": "title: tfx.Examples\n"}
        assert artifact["uri"] == "gs://b/examples" and artifact["metadata"] == {"span": 0}
        assert typed["inputs"]["parameterValues"] == {"exclude_splits": "[]"}


def test_every_beam_step_names_its_runner(compiled):
    # Beam's default DirectRunner first downloads its Prism runner from GitHub.
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    for name in ("ImageExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = pipeline["deploymentSpec"]["executors"][f"{name}_executor"]["container"]["args"]
        assert "--runner=FnApiRunner" in args, name


def test_a_run_from_the_ui_writes_under_the_configured_pipeline_root(compiled):
    # The baseline step finds earlier runs' pushes there.
    pipeline = next(yaml.safe_load_all(compiled.read_text()))
    assert pipeline["defaultPipelineRoot"] == "gs://bucket/thaw/pipeline"
    assert '"gs://bucket/thaw/pipeline"' in json.dumps(
        pipeline["root"]["dag"]["tasks"]["ServedModel"]["inputs"]["parameters"]["pipeline_root"])


def test_the_report_reads_blessed_and_pushed_as_kubeflow_passes_them():
    # Locally ML Metadata keeps ints; on Kubeflow they arrive as KFP metadata
    # numbers, which TFX's entrypoint turns into JSON structs.
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact as tfx_artifact

    from components.report.summary import custom_property

    local, kubeflow = metadata_store_pb2.Artifact(), metadata_store_pb2.Artifact()
    local.custom_properties["blessed"].int_value = 1
    local.custom_properties["pushed_destination"].string_value = "/models/thaw/7"
    for key, value in (("blessed", 1.0), ("pushed_destination", "/models/thaw/7")):
        kubeflow.custom_properties[key].struct_value.CopyFrom(
            tfx_artifact._encode_struct_value(value))  # noqa: SLF001  (what the entrypoint calls)
    for artifact in (local, kubeflow):
        assert custom_property(artifact, "blessed") == 1
        assert custom_property(artifact, "pushed_destination") == "/models/thaw/7"
        assert custom_property(artifact, "pushed") is None


def test_with_no_backbone_named_the_pods_train_on_the_one_the_image_carries(tmp_path, monkeypatch, capsys):
    from demo.pretrained import IMAGE_BACKBONE_DIR

    monkeypatch.delenv("THAW_BACKBONE_DIR", raising=False)
    (tmp_path / "default.yaml").write_text(CLUSTER.replace("backbone: {path: gs://bucket/backbone.keras}\n", ""))
    assert cli.main(["compile", "--config", str(tmp_path / "default.yaml"), "--output", str(tmp_path / "p.yaml")]) == 0
    assert f"backbone {IMAGE_BACKBONE_DIR}/backbone.keras at 224x224" in capsys.readouterr().out
    text = (tmp_path / "p.yaml").read_text()
    assert f"{IMAGE_BACKBONE_DIR}/backbone.keras" in text
    assert "/backbones/efficientnet_lite0-" not in text  # never this machine's cache


def test_a_named_backbone_is_compiled_as_named(compiled):
    text = compiled.read_text()
    assert "gs://bucket/backbone.keras" in text and "/opt/thaw/backbones" not in text

"""Compiling the same DAG for Kubeflow Pipelines: ``thaw compile``.

``create_pipeline(config)`` is compiled unchanged by KubeflowV2DagRunner to a
KFP v2 pipeline spec (YAML), which the Kubeflow UI and the kfp client upload.
What only Kubeflow needs is added here, outside the DAG: the image every
component runs, the Trainer's CPU, memory and GPUs (as a ResourceSpec), and,
because TFX writes no Kubernetes platform spec, the Trainer's node selector and
tolerations as a second YAML document in the form kfp-kubernetes writes and
the KFP backend applies. Every TFX task runs pipeline.kfp_entrypoint, which
gives TFX's entrypoint the input types the KFP backend does not pass.
"""

from __future__ import annotations

import os
import re
import tempfile

import yaml
from google.protobuf import json_format, struct_pb2
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.orchestration.data_types import RuntimeParameter

from pipeline import kfp_entrypoint
from pipeline.config import ThawConfig, memory_gigabytes
from pipeline.dag import create_pipeline

TRAINER = "Trainer"


def trainer_resources(config: ThawConfig) -> pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec:
    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
        cpu_limit=config.kubeflow.trainer_cpu,
        memory_limit=memory_gigabytes(config.kubeflow.trainer_memory),
    )
    if config.kubeflow.trainer_gpus:
        spec.accelerator.type = config.kubeflow.gpu_resource
        spec.accelerator.count = config.kubeflow.trainer_gpus
    return spec


def platform_spec(config: ThawConfig, executor_label: str) -> dict | None:
    """The kfp-kubernetes platform document placing the Trainer on GPU nodes, or None."""
    executor = k8s_pb2.KubernetesExecutorConfig()
    executor.node_selector.labels.update(config.kubeflow.node_selector)
    for toleration in config.kubeflow.tolerations if config.kubeflow.trainer_gpus else []:
        executor.tolerations.append(json_format.ParseDict(toleration.model_dump(exclude_none=True),
                                                          k8s_pb2.Toleration()))
    if not executor.node_selector.labels and not executor.tolerations:
        return None
    spec = pipeline_spec_pb2.PlatformSpec()
    struct = struct_pb2.Struct()
    struct.update(json_format.MessageToDict(executor))
    spec.platforms["kubernetes"].deployment_spec.executors[executor_label].CopyFrom(struct)
    return json_format.MessageToDict(spec)


def _with_parameter_defaults(spec: dict, pipeline) -> str:
    """The spec with each runtime parameter's default, so a UI run needs no typing.

    TFX leaves the defaults out of the YAML (it expects a Vertex job to carry
    them); the KFP backend and UI read them from the pipeline's root inputs.
    """
    defaults = {value.name: value.default
                for component in pipeline.components
                for value in component.exec_properties.values()
                if isinstance(value, RuntimeParameter)}
    for name, parameter in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items():
        if name in defaults:
            parameter["defaultValue"] = defaults[name]
            parameter["isOptional"] = True
    comments = "".join(line + "\n" for line in document_header(spec))
    return comments + yaml.safe_dump(spec, sort_keys=True)


def document_header(spec: dict) -> list[str]:
    return ["# PIPELINE DEFINITION", f"# Name: {spec['pipelineInfo']['name']}",
            "# Compiled by thaw compile from the same create_pipeline(config) LocalDagRunner runs."]


def for_the_image(config: ThawConfig) -> ThawConfig:
    """``config`` as the pods run it: with no backbone named, the one the image carries.

    The default backbone's path here is this machine's cache (or its
    $THAW_BACKBONE_DIR); the Dockerfile's image carries the converted
    EfficientNet-Lite0 at demo.pretrained.IMAGE_BACKBONE_DIR instead.
    """
    from demo.pretrained import IMAGE_BACKBONE_DIR

    if not config.backbone.is_default():
        return config
    backbone = config.backbone.model_copy(update={"path": f"{IMAGE_BACKBONE_DIR}/backbone.keras"})
    return config.model_copy(update={"backbone": backbone})


_CONDITION_INPUT = re.compile(r"inputs\.artifacts\['([^']+)'\]")


def conditions_on_own_inputs(spec: dict) -> None:
    """Makes each trigger condition name the artifact under the input name its task has.

    TFX's compiler writes a condition on an upstream artifact as
    ``inputs.artifacts['_<Producer>.<key>']`` and adds that input to the task,
    except when the task already takes the same artifact under its own name
    (StoppedRunReport takes DataGate's verdict as ``verdict``): then the
    condition names an input the task does not have, which the backend's CEL
    (expression.go, Condition) fails on ("no such key"), so the task errs
    instead of running or being skipped.
    """
    for name, task in spec["root"]["dag"]["tasks"].items():
        condition = task.get("triggerPolicy", {}).get("condition")
        if not condition:
            continue
        inputs = task.get("inputs", {}).get("artifacts", {})

        def own_name(match):
            wanted = match.group(1)
            if wanted in inputs:
                return match.group(0)
            producer, _, key = wanted.lstrip("_").rpartition(".")
            same = [n for n, source in inputs.items()
                    if source.get("taskOutputArtifact") == {"producerTask": producer, "outputArtifactKey": key}]
            if not same:
                raise ValueError(f"task {name}'s condition {condition!r} reads {wanted}, which is not among its "
                                 f"inputs ({', '.join(sorted(inputs))})")
            return f"inputs.artifacts['{same[0]}']"

        task["triggerPolicy"]["condition"] = _CONDITION_INPUT.sub(own_name, condition)


# KFP's own caching, set per task on purpose. The backend's cache key (backend/src/v2/cacheutils/cache.go,
# GenerateCacheKey) is the names of the input artifacts, the input parameter values, the output artifacts'
# types, and the image, command, PVCs and env; the driver (backend/src/v2/driver) reuses the outputs of the
# newest task with that key when the task's cachingOptions.enableCache is true. Nothing outside those is in
# the key: not the files under data.root, not the serving directory, not the pipeline root's records.
# So a task that reads any of those would, cached, hand on a stale answer, and every other task takes
# artifacts that are new in each run (their producers are never cached), so caching them saves nothing.
CACHING = {
    "ServedModel": (False, "reads the serving directory and the push records, which are not in the cache key: "
                           "cached, it would name a model that is no longer served"),
    "DataFingerprint": (False, "reads the files under data_root and the last run's record, which are not in the "
                               "key: cached, it would say 'unchanged' (or 'changed') for ever. This is Thaw's own "
                               "'no work redone' check, by content hash"),
    "ImageExampleGen": (False, "reads the files under data_root (and the last ingestion's record and examples); "
                               "its key is only the parameter values, the same every night: cached, new images "
                               "would never be ingested"),
    "ImportSchemaGen": (False, "reads the schema file by path; cached, an edited schema would never be read"),
}
NEW_INPUTS = "takes artifacts made new in this run (their producers are never cached): a cache key never repeats"


def set_caching(spec: dict) -> None:
    """Writes each task's cachingOptions explicitly (see CACHING), so neither the compiler's default nor a
    later change of the pipeline-wide enable_cache decides it by accident."""
    for name, task in spec["root"]["dag"]["tasks"].items():
        enabled, _ = CACHING.get(name, (False, NEW_INPUTS))
        task["cachingOptions"] = {"enableCache": enabled}


def compile_pipeline(config: ThawConfig, output: str) -> str:
    """Writes the KFP v2 pipeline spec for ``config`` to ``output``; returns its path.

    On a cluster every path in the configuration (output_dir, data.root,
    backbone.path, serving_dir) must be one the pods can read: gs://, or a
    volume mounted at the same path. A configuration that names no backbone
    trains on the one the image carries (for_the_image).
    """
    config = for_the_image(config)
    pipeline = create_pipeline(config)
    trainer = next(c for c in pipeline.components if c.id == TRAINER)
    trainer.with_platform_config(trainer_resources(config))
    with tempfile.TemporaryDirectory() as tmp:
        runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
                default_image=config.kubeflow.image, use_pipeline_spec_2_1=True),
            output_dir=tmp, output_filename="pipeline.yaml")
        runner.run(pipeline)
        with open(os.path.join(tmp, "pipeline.yaml")) as f:
            document = f.read()
    spec = yaml.safe_load(document)
    # A run started in the UI is given this root (frontend NewRunV2.tsx fills
    # the run's pipeline root from it); ServedModel looks for earlier
    # runs' pushes under the configured root, so the runs must write there.
    spec["defaultPipelineRoot"] = config.pipeline_root
    conditions_on_own_inputs(spec)
    set_caching(spec)
    for executor in spec["deploymentSpec"]["executors"].values():
        if executor.get("container", {}).get("command") == kfp_entrypoint.TFX_COMMAND:
            executor["container"]["command"] = kfp_entrypoint.COMMAND
    if config.kubeflow.trainer_image:
        trainer_executor = spec["components"][spec["root"]["dag"]["tasks"][TRAINER]["componentRef"]["name"]]
        spec["deploymentSpec"]["executors"][trainer_executor["executorLabel"]]["container"]["image"] = (
            config.kubeflow.trainer_image)
    if config.kubeflow.trainer_retries:
        # A retried Trainer (a preempted GPU node) keeps its output URIs, so it
        # finds its checkpoints and resumes at the next epoch.
        spec["root"]["dag"]["tasks"][TRAINER]["retryPolicy"] = {
            "maxRetryCount": config.kubeflow.trainer_retries, "backoffDuration": "60s",
            "backoffFactor": 2.0, "backoffMaxDuration": "1800s"}
    document = _with_parameter_defaults(spec, pipeline)
    executor_label = spec["root"]["dag"]["tasks"][TRAINER]["componentRef"]["name"]
    executor_label = spec["components"][executor_label]["executorLabel"]
    platform = platform_spec(config, executor_label)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write(document)
        if platform:
            f.write("---\n")
            yaml.safe_dump(platform, f, sort_keys=True)
    return output

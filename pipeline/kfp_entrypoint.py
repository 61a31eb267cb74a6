"""The command of every task in the compiled spec: TFX's KFP v2 entrypoint, given each input's type.

TFX's entrypoint (tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor)
imports each input artifact's Python class from the type the executor input
carries. The open-source KFP backend does not carry it: its driver reads an
upstream output back from ML Metadata with an empty schema
(backend/src/v2/metadata/client.go, GetOutputArtifactsByExecutionId:
``Schema: "" // TODO(Bobgy): figure out how to get schema``), and kfp.local
passes ``system.Artifact``. Either way the entrypoint cannot find the class
(``Could not import system.Artifact``) and the task fails before its
executor runs. Every TFX task's arguments also hold its own inputs' declared
types (``--json_serialized_inputs_spec_args``), so this entrypoint puts each
declared type on the input and hands over to TFX's, unchanged otherwise.
``thaw compile`` writes this module as every TFX task's command.

It also runs TFX on the KFP launcher's local copies where the pipeline root is
an object store TensorFlow cannot open: a stock Kubeflow install keeps
artifacts in MinIO (``minio://mlpipeline/v2/artifacts``), and TensorFlow has no
``minio://`` file system (nor ``s3://`` without tensorflow-io, which does not
load on TF >= 2.18). The launcher downloads each input artifact to a local path
before the command runs and uploads each output from one after it ends
(``/minio/<bucket>/...``, ``/s3/<bucket>/...``: launcher_v2.go,
``LocalPathForURI``), so every artifact URI is rewritten to that path on the
way in and back on the way out, in the executor output the launcher reads
(whose URIs replace the ones it uploads to: ``mergeRuntimeArtifacts``).
``gs://`` stays as it is: TensorFlow reads and writes it directly.
"""

from __future__ import annotations

import json
import logging
import os

from absl import app
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

from components.artifacts import launcher_path, stored_uri

log = logging.getLogger(__name__)

COMMAND = ["python", "-m", "pipeline.kfp_entrypoint"]
TFX_COMMAND = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]


def with_declared_types(executor_input_json: str, inputs_spec_json: str) -> str:
    """The executor input with each input artifact typed as the component declares it."""
    executor_input = json.loads(executor_input_json)
    declared = json.loads(inputs_spec_json).get("artifacts", {})
    for name, artifact_list in executor_input.get("inputs", {}).get("artifacts", {}).items():
        if name not in declared:
            continue
        for artifact in artifact_list.get("artifacts", []):
            artifact["type"] = declared[name]["artifactType"]
    return json.dumps(executor_input)


def _artifacts(executor_io: dict):
    """Every artifact of an executor input's or output's ``artifacts`` map."""
    for artifact_list in executor_io.get("artifacts", {}).values():
        yield from artifact_list.get("artifacts", [])


def to_launcher_paths(executor_input_json: str) -> str:
    """The executor input with each artifact on an object store TF cannot open read at the launcher's local copy."""
    executor_input = json.loads(executor_input_json)
    for side in ("inputs", "outputs"):
        for artifact in _artifacts(executor_input.get(side, {})):
            local = launcher_path(artifact["uri"])
            if local != artifact["uri"]:
                log.info("%s artifact %s read at the launcher's copy %s", side[:-1], artifact["uri"], local)
                artifact["uri"] = local
    return json.dumps(executor_input)


def _stored(value):
    """``value`` with every launcher path in it (a string, or inside lists and maps) back as its URI."""
    if isinstance(value, str):
        return stored_uri(value)
    if isinstance(value, list):
        return [_stored(v) for v in value]
    if isinstance(value, dict):
        return {k: _stored(v) for k, v in value.items()}
    return value


def to_stored_uris(executor_output: dict) -> dict:
    """The executor output with each launcher path (artifact URIs, metadata values) back as its object-store URI."""
    for artifact in _artifacts(executor_output):
        if "uri" in artifact:
            artifact["uri"] = stored_uri(artifact["uri"])
        if "metadata" in artifact:
            artifact["metadata"] = _stored(artifact["metadata"])
    return executor_output


def main(parsed_argv) -> None:
    args, beam_args = parsed_argv
    if args.json_serialized_inputs_spec_args:
        args.json_serialized_invocation_args = with_declared_types(
            args.json_serialized_invocation_args, args.json_serialized_inputs_spec_args)
    args.json_serialized_invocation_args = to_launcher_paths(args.json_serialized_invocation_args)
    kubeflow_v2_run_executor.main((args, beam_args))
    output_file = json.loads(args.json_serialized_invocation_args).get("outputs", {}).get("outputFile")
    if output_file and os.path.exists(output_file):
        with open(output_file) as f:
            executor_output = json.load(f)
        with open(output_file, "w") as f:
            json.dump(to_stored_uris(executor_output), f)


if __name__ == "__main__":
    app.run(main, flags_parser=kubeflow_v2_run_executor._parse_flags)  # noqa: SLF001  (TFX's own flags)

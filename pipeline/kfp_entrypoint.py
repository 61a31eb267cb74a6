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
"""

from __future__ import annotations

import json

from absl import app
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

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


def main(parsed_argv) -> None:
    args, beam_args = parsed_argv
    if args.json_serialized_inputs_spec_args:
        args.json_serialized_invocation_args = with_declared_types(
            args.json_serialized_invocation_args, args.json_serialized_inputs_spec_args)
    kubeflow_v2_run_executor.main((args, beam_args))


if __name__ == "__main__":
    app.run(main, flags_parser=kubeflow_v2_run_executor._parse_flags)  # noqa: SLF001  (TFX's own flags)

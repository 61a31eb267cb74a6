"""Runs a compiled pipeline spec with KFP's own local executor (kfp.local), as the cluster would.

kfp.local reads the spec, builds each task's executor input from it as the
cluster's driver does, runs each task's container command, and passes
artifacts and their metadata between tasks. Two runners:

- ``SubprocessRunner`` (the default): each task's command runs as a
  subprocess in this environment, which is what the Dockerfile installs;
- ``DockerRunner`` (``docker_runner()``): each task runs in a container of the
  built image, through a Docker-compatible API (podman's, here), with the
  pipeline root mounted at its own path as kfp.local mounts it.

Where kfp.local lacks what the KFP backend has, the gap is bridged here, in
test code only, one named bridge each; nothing in the spec is changed:

- CONTAINER_COMMANDS (SubprocessRunner only): its handler refuses any task that
  is not a KFP lightweight Python component ("only supports running
  Lightweight Python Components"); the backend runs any container command. The
  bridge lifts that check, so each task's own command runs in this environment.
  The DockerRunner needs no bridge: it runs the task's container as it is.
- CEL_CONDITIONS: kfp.local evaluates a task's trigger condition only over
  parameters; a condition on an input artifact's metadata, which the backend
  evaluates with CEL over the task's executor input
  (backend/src/v2/expression/expression.go, Condition: the ExecutorInput's
  fields as variables, a missing key an error, a result that is not a bool an
  error), is False there, so every conditional task is skipped. The bridge
  builds the task's inputs (its artifacts with their URIs and metadata) as the
  ExecutorInput proto and evaluates the condition with a real CEL runtime
  (cel-expr-python, Google's C++ CEL), declared as the backend declares it.
- TASK_FOLDERS: kfp.local names a task's folder after its component name less
  a "comp-" prefix, which the KFP SDK writes and TFX does not ("Trainer"
  becomes "er"). The bridge cuts the prefix only where there is one.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import yaml
from cel_expr_python import cel
from google.protobuf import json_format
from kfp import components, local
from kfp.dsl import utils as dsl_utils
from kfp.local import executor_input_utils, subprocess_task_handler
from kfp.local.orchestrator import enhanced_dag_orchestrator
from kfp.pipeline_spec import pipeline_spec_pb2

# The backend's condition environment: DeclareContextProto(ExecutorInput), i.e.
# each of its fields a variable of the field's message type.
CEL_ENV = cel.NewEnv(descriptor_pool=pipeline_spec_pb2.DESCRIPTOR.pool, variables={
    "inputs": cel.Type("ml_pipelines.ExecutorInput.Inputs"),
    "outputs": cel.Type("ml_pipelines.ExecutorInput.Outputs")})


class ConditionError(RuntimeError):
    """CEL rejected a trigger condition, or it did not evaluate to a bool: the backend fails the task the same way."""


def conditional_tasks(spec: dict) -> dict[str, list[dict]]:
    """Each trigger condition in the spec -> the specs of the tasks it guards."""
    found = {}
    for task in spec["root"]["dag"]["tasks"].values():
        if task.get("triggerPolicy", {}).get("condition"):
            found.setdefault(task["triggerPolicy"]["condition"], []).append(task)
    return found


def executor_inputs(task: dict, io_store) -> pipeline_spec_pb2.ExecutorInput:
    """The task's executor input as the driver gives it: each input artifact with its URI and metadata."""
    executor_input = pipeline_spec_pb2.ExecutorInput()
    for name, source in task.get("inputs", {}).get("artifacts", {}).items():
        output = source.get("taskOutputArtifact")
        if not output:
            continue
        try:
            artifact = io_store.get_task_output(output["producerTask"], output["outputArtifactKey"])
        except ValueError:  # its producer has not run (yet, or at all): absent, and CEL errs if the condition reads it
            continue
        runtime = executor_input.inputs.artifacts[name].artifacts.add()
        runtime.name, runtime.uri = artifact.name, artifact.uri
        runtime.type.schema_title = artifact.schema_title
        json_format.ParseDict(artifact.metadata, runtime.metadata)
    return executor_input


def evaluate(condition: str, executor_input: pipeline_spec_pb2.ExecutorInput) -> bool:
    """The condition evaluated with CEL over the executor input, as the backend's Expr.Condition does."""
    try:
        result = CEL_ENV.compile(condition).eval(
            data={"inputs": executor_input.inputs, "outputs": executor_input.outputs})
    except Exception as e:  # the runtime's own error types are not exported
        raise ConditionError(f"CEL could not evaluate the trigger condition {condition!r}: {e}") from e
    if result.type() == cel.Type.ERROR:
        raise ConditionError(f"CEL could not evaluate the trigger condition {condition!r}: {result.value()}")
    if result.type() != cel.Type.BOOL:
        raise ConditionError(f"the trigger condition {condition!r} is not a bool in CEL: {result.value()!r}")
    return result.value()


@contextlib.contextmanager
def bridges(spec: dict, subprocess_runner: bool = True):
    """The bridges above, in force inside the ``with`` block only."""
    handler = subprocess_task_handler.SubprocessTaskHandler
    evaluator = enhanced_dag_orchestrator.ConditionEvaluator
    saved = (handler.validate_not_container_component, evaluator.evaluate_condition,
             executor_input_utils.get_local_task_resource_name)
    guarded = conditional_tasks(spec)

    def cel_conditions(condition, io_store):
        if not condition or not condition.strip():
            return True
        # kfp.local passes the condition without its task. Several tasks share one condition string
        # (Transform ... AtomicPusher): each, over the inputs it has so far, must agree.
        inputs = [executor_inputs(task, io_store) for task in guarded[condition]]
        (verdict,) = {evaluate(condition, executor_input) for executor_input in inputs}
        return verdict

    def task_folders(component_name):
        prefix = dsl_utils.COMPONENT_NAME_PREFIX
        return component_name[len(prefix):] if component_name.startswith(prefix) else component_name

    if subprocess_runner:
        handler.validate_not_container_component = lambda self, full_command: None  # CONTAINER_COMMANDS
    evaluator.evaluate_condition = staticmethod(cel_conditions)  # CEL_CONDITIONS
    executor_input_utils.get_local_task_resource_name = task_folders  # TASK_FOLDERS
    try:
        yield
    finally:
        handler.validate_not_container_component = saved[0]
        evaluator.evaluate_condition = staticmethod(saved[1])
        executor_input_utils.get_local_task_resource_name = saved[2]


def docker_runner(**container_run_args) -> local.DockerRunner:
    """kfp.local's DockerRunner (the Docker API at $DOCKER_HOST); arguments are the Docker SDK's ``containers.run``'s."""
    return local.DockerRunner(**container_run_args)


def run(spec_path: str | Path, pipeline_root: str | Path, runner=None, **arguments) -> tuple[Path, float]:
    """Runs the spec's pipeline with ``arguments`` (runtime parameters); any failed task raises.

    ``runner``: a kfp.local runner, by default a SubprocessRunner in this
    environment. Returns the run's folder under ``pipeline_root`` (one folder
    per task, named after it) and the run's wall time in seconds.
    """
    spec = next(yaml.safe_load_all(Path(spec_path).read_text()))
    before = set(Path(pipeline_root).glob("*")) if Path(pipeline_root).exists() else set()
    runner = runner or local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline = components.load_component_from_file(str(spec_path))
    started = time.monotonic()
    with bridges(spec, subprocess_runner=isinstance(runner, local.SubprocessRunner)):
        pipeline(**arguments)
    wall = time.monotonic() - started
    (folder,) = set(Path(pipeline_root).glob("*")) - before
    return folder, wall

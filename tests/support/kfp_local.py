"""Runs a compiled pipeline spec with KFP's own local executor (kfp.local), as the cluster would.

kfp.local reads the spec, builds each task's executor input from it as the
cluster's driver does, runs each task's container command as a subprocess
(here the "container" is this environment, which is what the Dockerfile
installs), and passes artifacts and their metadata between tasks.

Where kfp.local lacks what the KFP backend has, the gap is bridged here, in
test code only, one named bridge each; nothing in the spec is changed:

- CONTAINER_COMMANDS: kfp.local's SubprocessRunner refuses any task that is
  not a KFP lightweight Python component ("only supports running Lightweight
  Python Components"); the backend runs any container command. The bridge
  lifts that check, so each task's own command runs in this environment.
- ARTIFACT_CONDITIONS: kfp.local evaluates a task's trigger condition only over
  parameters; a condition on an input artifact's metadata, which the backend
  evaluates with CEL over the task's executor input
  (backend/src/v2/expression/expression.go, Condition), is False there, so
  every conditional task is skipped. The bridge puts the upstream artifact's
  metadata value into the condition, then lets kfp.local evaluate the rest.
- TASK_FOLDERS: kfp.local names a task's folder after its component name less
  a "comp-" prefix, which the KFP SDK writes and TFX does not ("Trainer"
  becomes "er"). The bridge cuts the prefix only where there is one.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import yaml
from kfp import components, local
from kfp.dsl import utils as dsl_utils
from kfp.local import executor_input_utils, subprocess_task_handler
from kfp.local.orchestrator import enhanced_dag_orchestrator

_ARTIFACT_METADATA = re.compile(r"inputs\.artifacts\['([^']+)'\]\.artifacts\[0\]\.metadata\['([^']+)'\]")


def _artifact_inputs(spec: dict) -> dict[str, tuple[str, str]]:
    """Each task input artifact's name -> (producer task, output key), from the spec."""
    found = {}
    for task in spec["root"]["dag"]["tasks"].values():
        for name, source in task.get("inputs", {}).get("artifacts", {}).items():
            output = source.get("taskOutputArtifact")
            if output:
                found[name] = (output["producerTask"], output["outputArtifactKey"])
    return found


@contextlib.contextmanager
def bridges(spec: dict):
    """The three bridges above, in force inside the ``with`` block only."""
    handler = subprocess_task_handler.SubprocessTaskHandler
    evaluator = enhanced_dag_orchestrator.ConditionEvaluator
    saved = (handler.validate_not_container_component, evaluator.evaluate_condition,
             executor_input_utils.get_local_task_resource_name)
    inputs = _artifact_inputs(spec)
    evaluate = evaluator.evaluate_condition

    def artifact_conditions(condition, io_store):
        def metadata_value(match):
            producer, key = inputs[match.group(1)]
            return repr(io_store.get_task_output(producer, key).metadata[match.group(2)])
        return evaluate(_ARTIFACT_METADATA.sub(metadata_value, condition), io_store)

    def task_folders(component_name):
        prefix = dsl_utils.COMPONENT_NAME_PREFIX
        return component_name[len(prefix):] if component_name.startswith(prefix) else component_name

    handler.validate_not_container_component = lambda self, full_command: None  # CONTAINER_COMMANDS
    evaluator.evaluate_condition = staticmethod(artifact_conditions)  # ARTIFACT_CONDITIONS
    executor_input_utils.get_local_task_resource_name = task_folders  # TASK_FOLDERS
    try:
        yield
    finally:
        handler.validate_not_container_component = saved[0]
        evaluator.evaluate_condition = staticmethod(saved[1])
        executor_input_utils.get_local_task_resource_name = saved[2]


def run(spec_path: str | Path, pipeline_root: str | Path, **arguments) -> tuple[Path, float]:
    """Runs the spec's pipeline with ``arguments`` (runtime parameters); any failed task raises.

    Returns the run's folder under ``pipeline_root`` (one folder per task,
    named after it) and the run's wall time in seconds.
    """
    spec = next(yaml.safe_load_all(Path(spec_path).read_text()))
    before = set(Path(pipeline_root).glob("*")) if Path(pipeline_root).exists() else set()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    pipeline = components.load_component_from_file(str(spec_path))
    started = time.monotonic()
    with bridges(spec):
        pipeline(**arguments)
    wall = time.monotonic() - started
    (folder,) = set(Path(pipeline_root).glob("*")) - before
    return folder, wall

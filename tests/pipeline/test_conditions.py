"""The compiled spec's trigger conditions, evaluated with CEL as the KFP backend evaluates them.

The backend (backend/src/v2/expression/expression.go, Condition) compiles each
task's ``triggerPolicy.condition`` in a CEL environment whose variables are the
ExecutorInput's fields and evaluates it over the task's executor input: a
missing key is an error, a result that is not a bool is an error.
tests/support/kfp_local.py evaluates them that way with Google's C++ CEL
runtime; here each condition meets the verdicts DataGate can hand over.
"""

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import cli
from tests.support.kfp_local import ConditionError, conditional_tasks, evaluate

TRAINING = {"Transform", "Trainer", "Evaluator", "ServingValidator", "AtomicPusher", "RunReport"}
# What runs after DataFingerprint when the data changed (or the run was forced): ingestion and the data gate.
DATA = {"ImageExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "DataGate"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kfp-conditions")
    (folder / "thaw.yaml").write_text(
        "output_dir: gs://bucket/thaw\ndata: {root: gs://bucket/images}\n"
        "backbone: {path: gs://bucket/backbone.keras}\nkubeflow: {image: thaw:test}\n")
    assert cli.main(["compile", "--config", str(folder / "thaw.yaml"), "--output", str(folder / "p.yaml")]) == 0
    return next(yaml.safe_load_all((folder / "p.yaml").read_text()))


def executor_input(task: dict, metadata: dict) -> pipeline_spec_pb2.ExecutorInput:
    """The task's executor input with every upstream artifact carrying ``metadata`` (KFP metadata: numbers are doubles)."""
    names = task["inputs"]["artifacts"]
    return json_format.ParseDict({"inputs": {"artifacts": {
        name: {"artifacts": [{"uri": f"gs://bucket/run/{name}", "metadata": metadata}]} for name in names}}},
        pipeline_spec_pb2.ExecutorInput())


def tasks_run(spec, metadata: dict) -> set[str]:
    """The conditional tasks that run when every upstream artifact carries ``metadata``, each over its own inputs."""
    return {name for name, task in spec["root"]["dag"]["tasks"].items()
            if task.get("triggerPolicy", {}).get("condition")
            and evaluate(task["triggerPolicy"]["condition"], executor_input(task, metadata))}


def test_a_passed_verdict_runs_training_and_only_it(spec):
    assert tasks_run(spec, {"train": 1.0, "passed": 1.0}) == DATA | TRAINING


def test_a_failed_verdict_runs_only_the_stopped_run_report(spec):
    # TFX wrote its condition on an input it does not have ('_DataGate.verdict'; it takes the
    # verdict as 'verdict'): CEL failed it with "no such key" until thaw compile renamed it.
    assert tasks_run(spec, {"train": 1.0, "passed": 0.0}) == DATA | {"StoppedRunReport"}


def test_unchanged_data_runs_nothing_after_the_fingerprint(spec):
    # DataFingerprint's train 0: no ingestion, no data gate, no training, no report; only ServedModel and it ran.
    assert tasks_run(spec, {"train": 0.0, "passed": 1.0}) == set()
    assert set(spec["root"]["dag"]["tasks"]) - set(conditional_tasks_names(spec)) == {"ServedModel", "DataFingerprint"}


def test_unchanged_data_skips_even_the_tasks_whose_verdict_never_came(spec):
    # On the backend DataGate did not run, so its verdict is not among a task's inputs: CEL's && is false
    # when its first operand is, whatever the second (a missing key) would be.
    for name, task in spec["root"]["dag"]["tasks"].items():
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition:
            inputs = executor_input(task, {"train": 0.0})
            assert evaluate(condition, inputs) is False, name


def conditional_tasks_names(spec) -> list[str]:
    return [name for name, task in spec["root"]["dag"]["tasks"].items() if task.get("triggerPolicy", {}).get("condition")]


def test_a_verdict_without_the_key_is_an_error_as_on_the_backend_not_false(spec):
    condition, (task, *_) = next((c, t) for c, t in conditional_tasks(spec).items() if "passed" in c)
    with pytest.raises(ConditionError, match="passed"):
        evaluate(condition, executor_input(task, {"found": 1.0, "train": 1.0}))


def test_cel_not_python_reads_the_condition():
    metadata = json_format.ParseDict({"inputs": {"artifacts": {"v": {"artifacts": [
        {"uri": "gs://b/v", "metadata": {"passed": 1.0, "name": "x"}}]}}}}, pipeline_spec_pb2.ExecutorInput())
    at = "inputs.artifacts['v'].artifacts[0].metadata"
    assert evaluate(f"{at}['passed'] == 1", metadata) is True
    # A key that is not there is an error, not False (the bridge before CEL read it as False).
    with pytest.raises(ConditionError, match="Key not found"):
        evaluate(f"{at}['nope'] == 1", metadata)
    # Python would read these; CEL rejects them.
    with pytest.raises(ConditionError):
        evaluate(f"{at}['passed'] == 1 and True", metadata)
    with pytest.raises(ConditionError, match="not a bool"):
        evaluate(f"{at}['name']", metadata)


def test_local_runs_skip_a_node_whose_any_condition_is_false_whatever_order_tfx_reads_them(tmp_path):
    """LocalDagRunner's side of the same rule (pipeline.runners.filter_conditionals_as_cel): Transform is under
    two conditions; on an unchanged run DataGate never ran, so its ``passed`` cannot be read. TFX reads the two
    in protobuf-map order and fails the node when it meets that one first; CEL's && (and ours) skips it."""
    from tfx.dsl.compiler import compiler
    from tfx.orchestration.portable.input_resolution import exceptions, node_inputs_resolver

    from components.artifacts import DataFingerprint, DataVerdict
    from pipeline import config as config_lib
    from pipeline.dag import create_pipeline
    from pipeline.runners import filter_conditionals_as_cel

    ir = compiler.Compiler().compile(create_pipeline(config_lib.load(None, {"output_dir": str(tmp_path)})))
    (transform,) = [n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == "Transform"]
    conditionals = transform.inputs.conditionals
    (on_verdict,) = [k for k, c in conditionals.items() if "_DataGate.verdict" in str(c)]
    (on_fingerprint,) = [k for k, c in conditionals.items() if "_DataFingerprint.fingerprint" in str(c)]

    def inputs(train: int, passed: int | None) -> dict:
        fingerprint = DataFingerprint()
        fingerprint.set_int_custom_property("train", train)
        verdicts = []
        if passed is not None:
            verdicts = [DataVerdict()]
            verdicts[0].set_int_custom_property("passed", passed)
        return {"_DataFingerprint.fingerprint": [fingerprint], "_DataGate.verdict": verdicts}

    verdict_first = {k: conditionals[k] for k in (on_verdict, on_fingerprint)}
    fingerprint_first = {k: conditionals[k] for k in (on_fingerprint, on_verdict)}
    unchanged = inputs(train=0, passed=None)
    with pytest.raises(exceptions.FailedPreconditionError, match="Invalid conditional expression"):
        node_inputs_resolver._filter_conditionals([unchanged], verdict_first)  # TFX's own: the node fails
    for order in (verdict_first, fingerprint_first):
        assert filter_conditionals_as_cel([unchanged], order) == []  # skipped
        assert len(filter_conditionals_as_cel([inputs(1, 1)], order)) == 1  # both true: it runs
        assert filter_conditionals_as_cel([inputs(1, 0)], order) == []  # the data gate stopped it
        with pytest.raises(exceptions.FailedPreconditionError):  # none false, one unreadable: fails, as before
            filter_conditionals_as_cel([inputs(1, None)], order)

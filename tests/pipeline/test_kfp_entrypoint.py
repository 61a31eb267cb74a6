"""pipeline/kfp_entrypoint.py on a stock Kubeflow install's MinIO root, as the KFP launcher runs it.

The launcher (kubeflow/pipelines backend/src/v2/component/launcher_v2.go)
downloads each input artifact to ``LocalPathForURI(uri)`` (``/minio/<bucket>/...``)
before the command runs, makes the folders above each output's local path, runs
the command with the executor input's URIs unchanged (``minio://...``), then
reads the executor output file (whose URIs replace its own:
``mergeRuntimeArtifacts``) and uploads each output from its local path. The
test makes the folders the launcher would, places earlier runs' artifacts
where the pod sees the store mounted ($THAW_STORE_MOUNT: the launcher copies
no pipeline root), runs the real entrypoint on the compiled
ServedModel task, and reads back what the launcher would upload and
record.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from components.artifacts import CHECKPOINT_ROOT_ENV, STORE_MOUNT_ENV, launcher_path, store_mount, stored_uri
from components.train.trainer import CHECKPOINT_DIR, checkpoint_dir
from pipeline import cli
from pipeline.kfp_entrypoint import to_launcher_paths, to_stored_uris
from tests.conftest import REPO


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kfp-minio")
    (folder / "thaw.yaml").write_text(
        "output_dir: minio://mlpipeline/v2/artifacts/thaw\n"
        "serving_dir: /models/thaw\n"
        "data: {root: /data/images}\n"
        "backbone: {path: /data/backbone.keras}\n"
        "kubeflow: {image: thaw:test}\n")
    assert cli.main(["compile", "--config", str(folder / "thaw.yaml"), "--output", str(folder / "p.yaml")]) == 0
    return next(yaml.safe_load_all((folder / "p.yaml").read_text()))


@pytest.fixture
def bucket():
    """A bucket name of this test's own; its launcher copies under /minio are removed afterwards."""
    name = f"thaw-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(f"/minio/{name}", ignore_errors=True)


def test_uris_map_to_the_launchers_local_paths_and_back():
    assert launcher_path("minio://mlpipeline/v2/artifacts/x") == "/minio/mlpipeline/v2/artifacts/x"
    assert launcher_path("s3://b/k") == "/s3/b/k"
    assert launcher_path("gs://b/k") == "gs://b/k"  # TensorFlow opens gs:// itself
    assert launcher_path("/local/k") == "/local/k"
    for uri in ("minio://mlpipeline/a/b", "s3://b/k", "gs://b/k", "/local/k"):
        assert stored_uri(launcher_path(uri)) == uri


def test_the_executor_input_is_read_at_the_local_copies_and_the_output_names_the_stored_uris():
    executor_input = {
        "inputs": {"artifacts": {"examples": {"artifacts": [{"uri": "minio://mlpipeline/v2/run/Gen/examples"}]},
                                 "schema": {"artifacts": [{"uri": "gs://b/run/Schema/schema"}]}},
                   "parameterValues": {"data_root": "minio://mlpipeline/images"}},
        "outputs": {"artifacts": {"model": {"artifacts": [{"uri": "s3://b/run/Trainer/model"}]}},
                    "outputFile": "/tmp/kfp_outputs/output_metadata.json"}}
    local = json.loads(to_launcher_paths(json.dumps(executor_input)))
    assert local["inputs"]["artifacts"]["examples"]["artifacts"][0]["uri"] == "/minio/mlpipeline/v2/run/Gen/examples"
    assert local["inputs"]["artifacts"]["schema"]["artifacts"][0]["uri"] == "gs://b/run/Schema/schema"
    assert local["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"] == "/s3/b/run/Trainer/model"
    # Parameters are not artifacts: the launcher copies none of them.
    assert local["inputs"]["parameterValues"] == executor_input["inputs"]["parameterValues"]
    out = to_stored_uris({"artifacts": {"model": {"artifacts": [
        {"uri": "/s3/b/run/Trainer/model", "metadata": {"path": "/minio/m/x", "n": 1.0, "l": ["/s3/b/y"]}}]}}})
    artifact = out["artifacts"]["model"]["artifacts"][0]
    assert artifact == {"uri": "s3://b/run/Trainer/model", "metadata": {"path": "minio://m/x", "n": 1.0,
                                                                         "l": ["s3://b/y"]}}


def run_served_model(spec, executor_input: dict, env: dict) -> subprocess.CompletedProcess:
    """The compiled ServedModel task's own command and arguments, ``{{$}}`` filled in as the launcher does."""
    container = spec["deploymentSpec"]["executors"]["ServedModel_executor"]["container"]
    args = [a.replace("{{$}}", json.dumps(executor_input)) for a in container["args"]]
    return subprocess.run([sys.executable, *container["command"][1:], *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)


def pod_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != STORE_MOUNT_ENV}
    return {**env, **extra}


def executor_input_for(bucket: str, tmp_path: Path) -> dict:
    root = f"minio://{bucket}/v2/artifacts"
    # The serving directory is not readable from this pod, so the baseline is the newest push not rolled back.
    return {"inputs": {"parameterValues": {"pipeline_root": root, "serving_dir": str(tmp_path / "no-serving-dir")}},
            "outputs": {"artifacts": {"baseline": {"artifacts": [{
                "name": "baseline", "type": {"schemaTitle": "tfx.Model"},
                "uri": f"{root}/run-2/ServedModel/baseline"}]}},
                "outputFile": str(tmp_path / "kfp_outputs" / "output_metadata.json")}}


def test_the_baseline_step_finds_a_blessed_model_where_the_store_is_mounted(spec, bucket, tmp_path):
    root = f"minio://{bucket}/v2/artifacts"
    model = f"{root}/run-1/Trainer/model"
    mount = tmp_path / "store"
    env = pod_env(**{STORE_MOUNT_ENV: str(mount)})
    # Run 1's artifacts, as the pod sees the bucket mounted.
    assert store_mount(model) is None  # not in this process: only the task's
    saved = mount / bucket / "v2/artifacts/run-1/Trainer/model/Format-Serving"
    saved.mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    blessing = mount / bucket / "v2/artifacts/run-1/Evaluator/blessing"
    blessing.mkdir(parents=True)
    (blessing / "BLESSED").touch()
    (blessing / "baseline.json").write_text(json.dumps({"model": model, "blessed_at": 1.0}))
    pushed = mount / bucket / "v2/artifacts/run-1/AtomicPusher/pushed_model"
    pushed.mkdir(parents=True)
    (pushed / "push.json").write_text(json.dumps({"model": model, "destination": "gs://serving/1", "pushed_at": 2.0}))
    # The launcher makes the folder above each output's local path.
    output = f"{root}/run-2/ServedModel/baseline"
    Path(launcher_path(output)).parent.mkdir(parents=True)

    done = run_served_model(spec, executor_input_for(bucket, tmp_path), env)
    assert done.returncode == 0, done.stderr[-3000:]
    # What the launcher uploads to `output`: the record, naming stored URIs, never a pod's local path.
    record = json.loads((Path(launcher_path(output)) / "baseline.json").read_text())
    assert record["model"] == model and "the newest model pushed and not rolled back" in record["why"]
    # What it records in ML Metadata: the executor output's URI and metadata, stored URIs again.
    (artifact,) = json.loads((tmp_path / "kfp_outputs" / "output_metadata.json").read_text())[
        "artifacts"]["baseline"]["artifacts"]
    assert artifact["uri"] == output
    assert artifact["metadata"]["baseline_model"] == model and artifact["metadata"]["found"] == 1


def test_the_baseline_step_refuses_a_root_it_cannot_read_rather_than_finding_no_baseline(spec, bucket, tmp_path):
    done = run_served_model(spec, executor_input_for(bucket, tmp_path), pod_env())
    assert done.returncode != 0
    assert f"cannot search the pipeline root minio://{bucket}/v2/artifacts" in done.stderr
    assert f"set {STORE_MOUNT_ENV}" in done.stderr


def test_checkpoints_of_a_launcher_copy_go_where_a_retried_task_finds_them(monkeypatch, tmp_path):
    # Stored artifacts (a local path, gs://) keep them in the model_run folder: a retry gets the same URI.
    assert checkpoint_dir("gs://b/run/Trainer/model_run") == f"gs://b/run/Trainer/model_run/{CHECKPOINT_DIR}"
    local = "/minio/mlpipeline/v2/run/Trainer/model_run"
    monkeypatch.delenv(CHECKPOINT_ROOT_ENV, raising=False)
    assert checkpoint_dir(local) == f"{local}/{CHECKPOINT_DIR}"  # dies with the pod; logged
    monkeypatch.setenv(CHECKPOINT_ROOT_ENV, str(tmp_path))
    first = checkpoint_dir(local)
    assert first.startswith(str(tmp_path)) and first == checkpoint_dir(local)  # the retry's, the same
    assert checkpoint_dir("/minio/mlpipeline/v2/other/Trainer/model_run") != first

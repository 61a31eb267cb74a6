"""The compiled spec with every task in a container of the built image, and the image run as a pod runs it.

Runs with `make image-test` (scripts/image-test.sh), which builds the image
(`make image`), serves podman's Docker-compatible API on a socket and names
both here: $THAW_TEST_IMAGE and $DOCKER_HOST. Without them the module is
skipped (`make test` runs without a container engine).

1. The three runs of tests/e2e/test_kubeflow_run.py (blessed and pushed;
   refused against run 1's model; stopped by the data gate), the same tests,
   with kfp.local's DockerRunner: each task's command runs in the image, with
   the pipeline root mounted at its own path as kfp.local mounts it and the
   test's folder (the demo's images and backbone, the serving directory) and
   the checkout's schemas/ (the configuration's data.schema) mounted the same way; no network, a read-only root and a /tmp of its own.
   Each task's wall time, and the start-up of one (a container, a fresh
   Python importing TF and TFX), are printed and written to
   $THAW_TIMINGS_JSON when set.
2. `thaw run` on the demo in the image as a pod runs it: an arbitrary UID
   with no home, a read-only root filesystem, no network; it may write only
   to the mounted output and /tmp.
"""

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.test_kubeflow_run import (  # noqa: F401  (the same runs and tests, in containers)
    WALL, compiled, first_run, shuffled_run, stopped_run,
    test_a_run_the_data_gate_stops_ends_with_the_stopped_run_report, test_the_first_run_blesses_pushes_and_reports,
    test_the_second_run_on_shuffled_labels_is_refused_against_the_first_model)
from tests.conftest import REPO
from tests.support import kfp_local

IMAGE = os.environ.get("THAW_TEST_IMAGE")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not (IMAGE and os.environ.get("DOCKER_HOST")),
    reason="needs the built image and a Docker API: run `make image-test`")]

# As a pod: no network, a read-only root, a writable /tmp.
POD_LIKE = {"network_disabled": True, "read_only": True, "tmpfs": {"/tmp": "rw,exec,size=4g"}}
TASKS = {}  # task -> wall seconds of its container, in the order they ran


@pytest.fixture(scope="module")
def kfp_image():
    return IMAGE


@pytest.fixture(scope="module")
def kfp_runner(tmp_path_factory):
    """kfp.local's DockerRunner, with the test's temp folder bound at its own path (as a volume would be)."""
    import docker

    base = str(tmp_path_factory.getbasetemp())
    # The data contract the configuration names (data.schema defaults to the checkout's schemas/).
    schemas = str(REPO / "schemas")
    return kfp_local.docker_runner(
        mounts=[docker.types.Mount(target=base, source=base, type="bind"),
                docker.types.Mount(target=schemas, source=schemas, type="bind", read_only=True)],
        user=f"{os.getuid()}:{os.getgid()}", **POD_LIKE)


@pytest.fixture(scope="module", autouse=True)
def task_times():
    """Times each task's container: kfp.local's DockerTaskHandler.run, keyed by the task's folder."""
    from kfp.local import docker_task_handler

    handler = docker_task_handler.DockerTaskHandler
    run = handler.run

    def timed(self):
        started = time.monotonic()
        try:
            return run(self)
        finally:
            invocation = self.full_command[self.full_command.index("--json_serialized_invocation_args") + 1]
            task = Path(json.loads(invocation)["outputs"]["outputFile"]).parent.name
            TASKS[f"{len(TASKS) + 1:02d} {task}"] = time.monotonic() - started

    handler.run = timed
    yield
    handler.run = run


def test_task_times_and_their_start_up(stopped_run, capsys):
    import docker

    client = docker.from_env()
    started = time.monotonic()
    client.containers.run(IMAGE, ["python", "-c", "import pipeline.kfp_entrypoint"], remove=True, **POD_LIKE)
    start_up = time.monotonic() - started
    timings = {"start_up_s": round(start_up, 1), "runs_s": {k: round(v, 1) for k, v in WALL.items()},
               "tasks_s": {k: round(v, 1) for k, v in TASKS.items()}}
    with capsys.disabled():
        print("\ncontainer runs:", json.dumps(timings, indent=1))
    if os.environ.get("THAW_TIMINGS_JSON"):
        Path(os.environ["THAW_TIMINGS_JSON"]).write_text(json.dumps(timings, indent=2))
    assert len(WALL) == 3 and len(TASKS) >= 12 + 12 + 7


def test_thaw_run_on_the_demo_as_a_pod_runs_it(tmp_path):
    import docker

    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the pod's volume: writable by whatever UID the cluster picks
    client = docker.from_env()
    container = client.containers.run(
        IMAGE, ["thaw", "run", "--output", "/out/run"], user="4242:4242", detach=True,
        mounts=[docker.types.Mount(target="/out", source=str(out), type="bind")], **POD_LIKE)
    try:
        code = container.wait(timeout=1800)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, logs[-4000:]
    pushed = [p for p in (out / "run" / "serving").iterdir() if p.name.isdigit()]
    assert len(pushed) == 1 and (pushed[0] / "saved_model.pb").exists(), logs[-2000:]

"""Faults around a run, produced for real: overlapping runs and pushes, a disk that fills up.

Each test makes the fault the way production would meet it (two processes, a
small filesystem mounted for the test) and checks that nothing already
produced is lost. The README's reliability table lists them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.serve import serving_dir
from tests.conftest import REPO

PUSHER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from components.serve import serving_dir
model, base, ready, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
open(ready + "." + str(os.getpid()), "w").close()
while len([f for f in os.listdir(os.path.dirname(ready)) if f.startswith(os.path.basename(ready))]) < 2:
    time.sleep(0.01)  # both processes start pushing together
for _ in range(n):
    print(os.path.basename(serving_dir.push(model, base, keep=100)), flush=True)
"""


def a_model(root: Path, size: int = 1000) -> str:
    """A stand-in SavedModel folder (the serving directory copies files; it does not load them)."""
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * size)
    return str(root)


def versions_on_disk(base: str) -> list[str]:
    return sorted(name for name in os.listdir(base) if name != serving_dir.PUSH_LOCK)


def test_two_processes_pushing_into_one_serving_directory_take_turns(tmp_path):
    # Large enough that a push takes a while: the window in which two pushes race.
    model, base = a_model(tmp_path / "model", size=20_000_000), str(tmp_path / "serving")
    pushers = [subprocess.Popen([sys.executable, "-c", PUSHER, str(REPO), model, base, str(tmp_path / "ready"), "6"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in pushers]
    for p, (_, err) in zip(pushers, outputs):
        assert p.returncode == 0, err
    pushed = [int(v) for out, _ in outputs for v in out.split()]
    assert len(pushed) == 12 and len(set(pushed)) == 12  # no number used twice
    assert versions_on_disk(base) == sorted(str(v) for v in pushed)  # every push whole, no staging left
    for version in pushed:
        assert (Path(base) / str(version) / "variables" / "variables.data-00000-of-00001").read_bytes() == b"x" * 20_000_000


def _ingest(data, output, config, log: Path, *extra):
    """A real `thaw ingest` process; its stdout and stderr go to log.out and log.err."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ingest", str(data), "--output", str(output),
                             "--config", str(config), "--json", *extra], cwd=REPO,
                            stdout=open(log.with_suffix(".out"), "w"), stderr=open(log.with_suffix(".err"), "w"))


def _wait_for(what: str, done, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_second_run_on_the_same_output_refuses_naming_the_first_or_waits_for_it(tiny_demo, tmp_path):
    config = tmp_path / "thaw.yaml"
    config.write_text(json.dumps({"backbone": {"path": str(tiny_demo["backbone"])},
                                  "beam_pipeline_args": ["--direct_running_mode=in_memory"]}))
    out, lock = tmp_path / "out", tmp_path / "out" / ".thaw-run.lock"
    first = _ingest(tiny_demo["data"], out, config, tmp_path / "first")
    _wait_for("the first run to take the output directory",
              lambda: first.poll() is not None or (lock.exists() and str(first.pid) in lock.read_text()))
    assert first.poll() is None, (tmp_path / "first.err").read_text()
    # The first run is frozen while it holds the directory, as a long run would be, so the
    # others meet it mid-run however slowly they start on a busy machine.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        refused = _ingest(tiny_demo["data"], out, config, tmp_path / "refused")
        assert refused.wait(timeout=300) == 4, (tmp_path / "refused.err").read_text()
        refusal = (tmp_path / "refused.err").read_text()
        assert f"a run on {out} is already in progress: pid {first.pid} on host" in refusal
        assert "(thaw ingest " in refusal and "--wait" in refusal
        assert "step 1 of" not in refusal  # nothing was started
        waiting = _ingest(tiny_demo["data"], out, config, tmp_path / "waiting", "--wait")
        _wait_for("the --wait run to say whom it waits for",
                  lambda: "waiting for the run" in (tmp_path / "waiting.err").read_text() or waiting.poll() is not None)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=600) == 0, (tmp_path / "first.err").read_text()
    assert waiting.wait(timeout=600) == 0, (tmp_path / "waiting.err").read_text()
    assert f"waiting for the run already going on {out}: pid {first.pid}" in (tmp_path / "waiting.err").read_text()
    # Both runs are whole in the one metadata store: each found every file.
    for name in ("first", "waiting"):
        summary = (tmp_path / f"{name}.out").read_text().strip().splitlines()[-1]
        assert json.loads(summary)["ingested"] == 250
    assert lock.read_text() == ""  # released, and nobody named as holding it


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB mounted for the test: a disk that really fills up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:  # the rootfs environment runs as root in its own mount namespace
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip()}): run the tests through bin/thaw-env")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Writes one file until the disk is full; returns it (delete it to give the space back)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_disk_filling_up_mid_push_leaves_the_served_version_alone(small_disk, tmp_path):
    model = a_model(tmp_path / "model", size=200_000)
    base = str(small_disk / "serving")
    served = serving_dir.push(model, base, keep=5)
    filler = fill(small_disk)
    os.truncate(filler, os.path.getsize(filler) - 100_000)  # room for half of the next version
    with pytest.raises(OSError) as failed:
        serving_dir.push(model, base, keep=5)
    assert base in str(failed.value) and "No space left on device" in str(failed.value)
    assert f"version {os.path.basename(served)} keeps serving" in str(failed.value)
    assert versions_on_disk(base) == [os.path.basename(served)]  # no partial version, no staging folder
    assert (Path(served) / "variables" / "variables.data-00000-of-00001").stat().st_size == 200_000

    filler.unlink()  # space is back: the next push goes through, above the served version
    after = serving_dir.push(model, base, keep=5)
    assert int(os.path.basename(after)) > int(os.path.basename(served))
    assert versions_on_disk(base) == [os.path.basename(served), os.path.basename(after)]


def test_a_disk_filling_up_mid_checkpoint_keeps_the_last_epoch_and_the_rerun_resumes(small_disk, caplog):
    import tf_keras

    from components.train.checkpoints import STATE_FILE, CheckpointError
    from components.train.options import StageConfig
    from components.train.schedule import run_schedule
    from tests.support.schedule_job import classifier, toy_data

    checkpoints = small_disk / "checkpoints"
    stages = [StageConfig(name="head", epochs=3, trainable="none", learning_rate=1e-2, decay="constant")]

    class FillAfterFirstEpoch(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                fill(small_disk)

    tf_keras.utils.set_random_seed(0)
    model, backbone = classifier()
    with pytest.raises(CheckpointError) as failed:
        run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=4,
                     checkpoint_dir=str(checkpoints), callbacks=[FillAfterFirstEpoch()])
    message = str(failed.value)
    assert f"could not write the checkpoint {checkpoints}/latest-s0-e2" in message
    assert "No space left on device" in message and f"{checkpoints}/latest-s0-e1" in message
    state = json.loads((checkpoints / STATE_FILE).read_text())
    assert state["global_epoch"] == 1 and state["latest"].endswith("latest-s0-e1")
    assert sorted(p.name for p in checkpoints.iterdir() if "-e2" in p.name or p.suffix == ".tmp") == []

    (small_disk / "filler").unlink()
    caplog.clear()
    caplog.set_level("INFO", logger="components.train.schedule")
    model, backbone = classifier()
    (result,) = run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=4,
                             checkpoint_dir=str(checkpoints))
    assert "after 1 of its epochs" in caplog.text and result.epochs_run == 3
    assert [m for m in caplog.messages if m.startswith("head epoch")][0].startswith("head epoch 2/3")

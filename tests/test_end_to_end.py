"""The real DAG on tiny real data: ingested, trained, blessed, pushed, served."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline import config as config_lib
from pipeline.runners import run_local

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent

# Loads the pushed SavedModel the way TF Serving does (no Keras, no Thaw code)
# and classifies the images named on the command line.
CLASSIFY = r"""
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
images = [open(p, "rb").read() for p in sys.argv[2:]]
out = serve(image_bytes=tf.constant(images))
print(json.dumps({
    "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in serve.structured_input_signature[1].items()},
    "classes": [c.decode() for c in out["classes"].numpy()],
    "sums": out["probabilities"].numpy().sum(axis=1).tolist(),
}))
"""


@pytest.fixture(scope="module")
def first_run(tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = config_lib.load(None, {
        "data.root": tiny_demo["data"],
        "backbone.path": tiny_demo["backbone"],
        "output_dir": str(out),
        "beam_pipeline_args": ["--direct_running_mode=in_memory"],
        "gate.min_accuracy": 0.6,
    })
    return config, run_local(config)


def test_the_pipeline_ingests_trains_blesses_and_pushes(first_run):
    config, summary = first_run
    assert summary.ingested == 150 and summary.quarantined == []
    assert summary.classes == ["eight", "five", "nine", "seven", "six"]
    assert set(summary.splits) == {"train", "eval"} and sum(summary.splits.values()) == 150
    assert [s["name"] for s in summary.stages] == ["head", "top"]
    assert summary.stages[1]["trainable_params"] > summary.stages[0]["trainable_params"]
    assert summary.metrics["accuracy"] >= 0.6
    assert summary.metrics["example_count"] == summary.splits["eval"]
    assert summary.blessed is True and summary.verdict == []
    assert summary.pushed and Path(summary.pushed_to).parent == Path(config.serving_path)
    assert (Path(summary.pushed_to) / "saved_model.pb").exists()


def test_the_pushed_model_classifies_images_in_a_fresh_process(first_run, tiny_demo):
    _, summary = first_run
    images = sorted(Path(tiny_demo["data"]).glob("*/*.png"))[::3]
    result = subprocess.run([sys.executable, "-c", CLASSIFY, summary.pushed_to, *map(str, images)],
                            capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["inputs"] == {"image_bytes": ["string", [None]]}
    assert out["sums"] == pytest.approx([1.0] * len(images), abs=1e-4)
    truth = [p.parent.name for p in images]
    accuracy = sum(t == c for t, c in zip(truth, out["classes"])) / len(images)
    assert accuracy >= 0.6, list(zip(truth, out["classes"]))


def test_the_next_run_is_gated_against_the_last_blessed_model(first_run):
    config, first = first_run
    config.gate.min_accuracy = 1.0  # a floor no model here reaches: must not push
    config.training.stages = config.training.stages[:1]
    before = sorted(p.name for p in Path(config.serving_path).iterdir())
    summary = run_local(config)
    assert summary.baseline_metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])
    assert summary.blessed is False and not summary.pushed
    assert any("is " in line and "at least 1" in line for line in summary.verdict), summary.verdict
    assert any("not blessed" in line for line in summary.lines())
    assert sorted(p.name for p in Path(config.serving_path).iterdir()) == before


def test_anomalies_and_small_classes_stop_the_run_before_training(tiny_demo, workdir, capsys):
    schema = (REPO / "schemas" / "image_classification" / "schema.pbtxt").read_text()
    (workdir / "schema.pbtxt").write_text(schema.replace('  value: "png"\n', ""))  # PNG no longer allowed
    (workdir / "thaw.yaml").write_text(
        f"output_dir: out\n"
        f"beam_pipeline_args: [--direct_running_mode=in_memory]\n"
        f"data: {{root: {tiny_demo['data']}, schema: schema.pbtxt, min_images_per_class: 100}}\n"
        f"backbone: {{path: {tiny_demo['backbone']}}}\n")
    assert cli.main(["run", "--config", "thaw.yaml", "--json"]) == cli.DATA_STOPPED
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["data_passed"] is False and summary["ingested"] == 150
    assert any("feature 'format'" in p for p in summary["problems"])
    assert any("class 'five' has 30 images, fewer than the minimum of 100" in p for p in summary["problems"])
    assert "data validation: STOPPED the run before training:" in out
    pipeline_root = workdir / "out" / "pipeline"
    assert (pipeline_root / "DataGate").is_dir()
    for never_ran in ("Transform", "Trainer", "Evaluator", "Pusher"):
        assert not (pipeline_root / never_ran).exists(), never_ran


def test_ingest_accounts_for_every_file_as_json(tiny_demo, workdir, capsys):
    data = workdir / "data"
    shutil.copytree(tiny_demo["data"], data)
    (data / "five" / "empty.png").write_bytes(b"")
    (data / "six" / "notes.txt").write_text("not an image")
    assert cli.main(["ingest", str(data), "--output", "out", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["classes"] == ["eight", "five", "nine", "seven", "six"]
    assert result["ingested"] == 150 and sum(result["splits"].values()) == 150
    assert result["quarantined"] == [
        {"path": "five/empty.png", "reason": "empty file"},
        {"path": "six/notes.txt", "reason": "not an image (no known image header)"},
    ]
    assert result["data_passed"] is True
    assert not (workdir / "out" / "pipeline" / "Trainer").exists()

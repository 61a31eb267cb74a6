"""The real DAG on tiny real data: ingested, trained, blessed, pushed, served."""

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline import config as config_lib
from pipeline.runners import run_local
from tests.support.headless_chromium import chromium, render
from tests.support.http_fakes import json_server
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

STEPS = []  # the first run's progress: (k, n, node, state)

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


# Files the first run must quarantine (path under the data root, code), so the
# report's list of quarantined files is checked on a real run.
BAD_FILES = [("five/empty.png", "empty"), ("six/notes.jpg", "not_an_image")]


@pytest.fixture(scope="module")
def first_run(tiny_demo, tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "images"
    shutil.copytree(tiny_demo["data"], data)  # the session's demo stays clean for the other tests
    (data / "five" / "empty.png").write_bytes(b"")
    (data / "six" / "notes.jpg").write_text("a text file with an image's name")
    out = tmp_path_factory.mktemp("run")
    config = config_lib.load(tiny_demo["config"], {   # the digits demo's own backbone, image size and schedule
        "data.root": str(data),
        "output_dir": str(out),
        "beam_pipeline_args": ["--direct_running_mode=in_memory"],
        "gate.min_accuracy": 0.6,
        "gate.min_macro_recall": 0.5,
        "gate.min_class_recall": 0.2,
    })
    return config, run_local(config, on_step=lambda *step: STEPS.append(step))


def test_the_pipeline_ingests_trains_blesses_and_pushes(first_run):
    config, summary = first_run
    assert summary.ingested == 250
    assert [(q["path"], q["code"]) for q in summary.quarantined] == BAD_FILES
    assert summary.warnings == ["2 of 252 files (0.8%) were quarantined (1 empty, 1 not_an_image)"]
    assert summary.classes == ["eight", "five", "nine", "seven", "six"]
    assert set(summary.splits) == {"train", "validation", "test"} and sum(summary.splits.values()) == 250
    assert summary.backbone["image_size"] == 32 and summary.backbone["path"] == config.backbone.path
    assert summary.backbone["architecture"] == "the digits demo's small CNN (demo.digits.build_backbone_model)"
    assert any(line.startswith("backbone: the digits demo's small CNN") for line in summary.lines())
    assert [s["name"] for s in summary.stages] == ["head", "fine_tune"]
    assert summary.stages[1]["trainable_params"] > summary.stages[0]["trainable_params"]
    assert summary.metrics["accuracy"] >= 0.6
    # The gate graded on the held-out test split; the schedule's number is the validation split's.
    assert summary.metrics["example_count"] == summary.splits["test"]
    lines = summary.lines()
    assert (f"test accuracy {summary.metrics['accuracy']:.4f} (test split, the gate's number (held out: nothing "
            "in training saw it))") in lines, lines
    assert (f"validation accuracy {summary.stages[-1]['best_val_accuracy']:.4f} (validation split, the "
            "schedule's number: the epochs were chosen on it)") in lines, lines
    assert 0.5 <= summary.metrics["macro_recall"] <= 1
    assert summary.blessed is True and summary.verdict == []
    assert summary.pushed and Path(summary.pushed_to).parent == Path(config.serving_path)
    assert (Path(summary.pushed_to) / "saved_model.pb").exists()
    assert [(k, n) for k, n, _, _ in STEPS] == [(k, 14) for k in range(1, 15)]
    # LocalDagRunner announces a node under a false condition (StoppedRunReport
    # here) as it starts it, then skips it: 14 steps, 13 of them run. The served
    # model and the data fingerprint come first: nothing is served yet, so it trains.
    nodes = [node for _, _, node, state in STEPS if state == "running"]
    assert nodes[:3] == ["ServedModel", "DataFingerprint", "ImageExampleGen"], nodes
    assert nodes[-2:] == ["AtomicPusher", "RunReport"] and len(nodes) == 14
    assert summary.fingerprint["train"] is True and summary.fingerprint["why"] == "no model is served yet"


def confusion_matrix(page: str) -> tuple[list[str], list[str], list[list[int]]]:
    """The report's confusion matrix as it reads it: (predicted names, actual names, counts)."""
    import html

    (table,) = re.findall(r"<div class='confusion-matrix'>(.*?)</div>", page, flags=re.S)
    rows = [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)]
    return rows[0][1:], [row[0] for row in rows[1:]], [[int(c) for c in row[1:]] for row in rows[1:]]


def assert_the_evaluation_is_drawn(page: str, summary) -> None:
    """Every class on both axes, counts adding up to the test split, and the curves: not just some images."""
    predicted, actual, counts = confusion_matrix(page)
    assert predicted == actual and sorted(actual) == summary.classes, (predicted, actual)
    assert sum(map(sum, counts)) == summary.splits["test"] == summary.metrics["example_count"]
    assert sum(counts[i][i] for i in range(len(counts))) / summary.splits["test"] == pytest.approx(
        summary.metrics["accuracy"], abs=1e-4)
    assert 'alt="Confusion matrix (test split)" src="data:image/png;base64,' in page
    assert 'alt="training curves" src="data:image/png;base64,' in page
    assert "could not draw" not in page
    text = html.unescape(page)  # the report escapes every text it writes ("gate&#x27;s")
    assert "test accuracy <b>" in text and "the gate's number" in text and "the schedule's number" in text


def report_artifact(pipeline_root: Path, node: str) -> str:
    """The HTML a RunReport step wrote at its output's URI (a value artifact: one file)."""
    (page,) = (pipeline_root / node / "report").glob("*/value")
    return page.read_text()


def test_the_run_ends_with_its_report_as_an_html_artifact(first_run):
    config, summary = first_run
    page = report_artifact(Path(config.pipeline_root), "RunReport")
    assert page.startswith("<!DOCTYPE html>") and "a better model was pushed" in page
    for section in ("<h2>Data</h2>", "<h2>Training</h2>", "<h2>Evaluation</h2>", "<h2>Push</h2>"):
        assert section in page, section
    assert os.path.basename(summary.pushed_to) in page and "data:image/png;base64," in page
    assert_the_evaluation_is_drawn(page, summary)
    assert "http://" not in page and "https://" not in page
    assert not (Path(config.pipeline_root) / "StoppedRunReport").exists()


def test_the_signatures_names_dtypes_and_shapes(first_run):
    import tensorflow as tf

    _, summary = first_run
    model = tf.saved_model.load(summary.pushed_to)
    assert set(model.signatures) == {"serving_default", "serving_examples", "transform_features"}
    outputs = {"probabilities": ("float32", [None, 5]), "class_ids": ("int64", [None]),
               "classes": ("string", [None]), "top_k_probabilities": ("float32", [None, 5]),
               "top_k_classes": ("string", [None, 5])}
    for name, input_name in (("serving_default", "image_bytes"), ("serving_examples", "examples")):
        signature = model.signatures[name]
        inputs = signature.structured_input_signature[1]
        assert {k: (v.dtype.name, v.shape.as_list()) for k, v in inputs.items()} == {input_name: ("string", [None])}
        got = {k: (v.dtype.name, v.shape.as_list()) for k, v in signature.structured_outputs.items()}
        assert got == outputs, name
    transform = model.signatures["transform_features"]
    assert set(transform.structured_outputs) == {"image_bytes", "label_id"}


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


def test_the_pushed_model_passed_serving_validation(first_run):
    _, summary = first_run
    assert summary.serving_passed is True and summary.serving["problems"] == []
    assert set(summary.serving["bad_inputs"].values()) == {"InvalidArgument"}
    assert len(summary.serving["bad_inputs"]) == 4
    assert set(summary.serving["latency_ms"]) == {"batch_1", "batch_32"}
    # ... and loaded, warmed up, asked and attacked again in the TF Serving image's TensorFlow.
    served = summary.serving["serving_runtime"]
    assert (served["checked"], served["tf_version"], served["passed"]) == (True, "2.19.1", True)
    assert set(served["bad_inputs"].values()) == {"InvalidArgument"} and served["warmup_requests"] == 9


def test_the_warmup_requests_are_prediction_logs_of_real_images(first_run):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    _, summary = first_run
    path = Path(summary.pushed_to) / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    assert len(logs) == 9  # 8 single images, then one batch of all 8
    request = logs[0].predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    image = tf.make_ndarray(request.inputs["image_bytes"])[0]
    assert tf.io.decode_image(image).shape[-1] in (1, 3)


def test_predict_with_the_pushed_model_locally_and_over_rest(first_run, tiny_demo, capsys):
    _, summary = first_run
    serving = str(Path(summary.pushed_to).parent)
    images = [str(p) for p in sorted(Path(tiny_demo["data"]).glob("*/*.png"))[:4]]
    assert cli.main(["predict", "--model", serving, "--json", *images]) == 0
    local = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["image"] for row in local] == images
    assert all(set(row) >= {"image", "class", "probability", "top_k"} for row in local)
    assert all(row["class"] in summary.classes and 0 < row["probability"] <= 1 for row in local)
    with rest_server(summary.pushed_to) as url:
        assert cli.main(["predict", "--model", f"{url}/v1/models/thaw", "--json", *images]) == 0
        remote = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [(r["class"], round(r["probability"], 4)) for r in remote] == [
            (r["class"], round(r["probability"], 4)) for r in local]
        not_an_image = Path(images[0]).with_name("notes.txt")
        not_an_image.write_text("no pixels here")
        try:
            assert cli.main(["predict", "--model", f"{url}/v1/models/thaw", str(not_an_image)]) == 2
        finally:
            not_an_image.unlink()
        assert f"{not_an_image}: {url}/v1/models/thaw:predict answered 400" in capsys.readouterr().err


def test_the_report_shows_every_stage_of_the_run_and_fetches_nothing(first_run):
    from components.report.report import write_report

    config, summary = first_run
    page = Path(write_report(config.output_dir)).read_text()
    for heading in ("<h2>Data</h2>", "<h2>Training</h2>", "<h2>Evaluation</h2>", "<h2>Serving validation</h2>",
                    "<h2>Push</h2>", "Recall per class", "Samples"):
        assert heading in page, heading
    for name in summary.classes:
        assert f"<th>{name}</th>" in page  # a row of thumbnails per class
    assert page.count('src="data:image/png;base64,') >= 5 * 1 + 3  # thumbnails, sizes, curves, confusion matrix
    assert_the_evaluation_is_drawn(page, summary)  # the thumbnails alone would pass the count
    assert "BLESSED" in page and Path(summary.pushed_to).name in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: no network


@pytest.mark.skipif(chromium() is None,
                    reason="no chromium on PATH: install Debian's chromium (apt-get install chromium)")
def test_the_report_renders_in_a_browser_with_no_errors_and_lists_every_quarantined_file(first_run, tmp_path):
    from PIL import Image

    from components.report.report import write_report

    config, summary = first_run
    page = Path(write_report(config.output_dir, str(tmp_path / "report.html")))
    result = render(page, tmp_path / "report.png", tmp_path / "profile", width=1200, height=3000)
    assert result.errors == []
    assert result.requests[0] == page.as_uri()
    assert all(url.startswith("data:image/png;base64,") for url in result.requests[1:])
    assert len(result.requests) >= 5 + 3  # thumbnails, sizes, curves, confusion matrix: all drawn
    screenshot = Image.open(result.png).convert("RGB")
    assert screenshot.size == (1200, 3000)
    assert len(screenshot.getcolors(1200 * 3000)) > 16  # plots and thumbnails, not a blank page
    assert len(summary.quarantined) == len(BAD_FILES)
    rows = [line.rstrip("\t") for line in result.text.splitlines()]  # an empty detail's cell: a trailing tab
    for entry in summary.quarantined:  # each on its own row, as a reader sees it
        assert f"{entry['path']}\t{entry['code']}\t{entry['detail']}".rstrip("\t") in rows, entry


def test_a_worse_candidate_is_not_pushed_and_serving_is_untouched(first_run):
    config, first = first_run
    # The first run's configuration, but with no floor but one: the comparison with the last
    # blessed model stops this candidate, and so does one class's recall.
    settings = config.model_dump(by_alias=True)
    settings["gate"].update(min_accuracy=0.0, min_macro_recall=0.0, min_class_recall=0.0,
                            class_recall_floors={"five": 0.99})
    settings["training"]["stages"] = [{"name": "barely", "epochs": 1, "trainable": "none", "learning_rate": 1e-6}]
    config = config_lib.ThawConfig.model_validate(settings)
    before = snapshot(config.serving_path)
    summary = run_local(config)
    assert summary.baseline_metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])
    assert summary.metrics["accuracy"] < first.metrics["accuracy"]
    assert summary.blessed is False and not summary.pushed
    change = [line for line in summary.verdict if "change of -" in line]
    assert len(change) == 1 and f"the baseline's {first.metrics['accuracy']:.4f}" in change[0], summary.verdict
    assert any(line.startswith("accuracy (label=five)") and "at least 0.99" in line for line in summary.verdict)
    assert any(line.startswith("gate: not blessed: accuracy (overall)") for line in summary.lines())
    assert snapshot(config.serving_path) == before


def test_rollback_serves_the_previous_version_again(first_run, capsys):
    from components.serve import serving_dir

    config, first = first_run
    newer = serving_dir.push(first.pushed_to, config.serving_path, keep=5)
    assert cli.main(["rollback", "--output", config.output_dir]) == 0
    assert f"TF Serving now serves version {Path(first.pushed_to).name}" in capsys.readouterr().out
    assert serving_dir.versions(config.serving_path)[-1] == int(Path(first.pushed_to).name)
    assert not Path(newer).exists()


def test_label_drift_against_the_served_models_training_data_is_judged_through_the_pipeline(first_run, tmp_path):
    """Through the DAG (ServedModel -> DataGate, as `thaw ingest` runs it), not by calling judge():
    the served model's class counts travel in its assets.extra, and a run whose training split's
    class shares moved is stopped; one whose served model lacks them says so instead of skipping."""
    import hashlib

    from components.ingest.image_records import split_for
    from components.model_contract import LABEL_COUNTS_FILE

    config, first = first_run
    data = tmp_path / "drifted"
    shutil.copytree(config.data.root, data)
    splits = list(config.data.splits.items())
    moved = [p for p in sorted((data / "six").glob("*.png"))
             if split_for(hashlib.sha256(p.read_bytes()).hexdigest(), splits) == "train"][:6]
    for image in moved:  # six's training images become fives: both classes' shares move
        image.rename(data / "five" / image.name)
    drifted = config.model_copy(update={"data": config.data.model_copy(update={
        "root": str(data), "max_label_drift": 0.01, "min_images_per_class": 20})})
    summary = run_local(drifted, through="validation")
    served = json.loads((Path(first.pushed_to) / "assets.extra" / LABEL_COUNTS_FILE).read_text())
    assert sum(served.values()) == first.splits["train"]
    drift = summary.data_checks["label_drift"]
    assert drift is not None and drift > 0.01, summary.data_checks
    assert summary.data_passed is False
    assert any("label distribution drifted by" in p and "against the served model's training data" in p
               for p in summary.problems), summary.problems
    # The served model without its class counts: the drift is not measured, and the run says so.
    counts = Path(first.artifacts["Model"]) / "Format-Serving" / "assets.extra" / LABEL_COUNTS_FILE
    counts.rename(counts.with_suffix(".away"))
    try:
        summary = run_local(drifted, through="validation")
    finally:
        counts.with_suffix(".away").rename(counts)
    assert summary.data_checks["label_drift"] is None
    assert any(w.startswith("label drift not measured: the served model") for w in summary.warnings), summary.warnings


def snapshot(folder: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def rest_server(model_dir: str):
    """A local stand-in for TF Serving's REST predict endpoint, backed by the real model.

    It follows TF Serving's documented row format: {"instances": [{"b64": ...}]}
    in, {"predictions": [{output: value, ...}]} out, 400 with {"error"} on bad input.
    """
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]

    def handle(method, path, query, body, headers):
        if method != "POST" or path != "/v1/models/thaw:predict" or body.get("signature_name") != "serving_default":
            return 404, {"error": f"no such endpoint {method} {path}"}
        try:
            images = [base64.b64decode(i["b64"]) for i in body["instances"]]
            out = serve(image_bytes=tf.constant(images))
        except tf.errors.InvalidArgumentError as exc:
            return 400, {"error": str(exc).splitlines()[0]}
        return 200, {"predictions": [{k: json_value(v.numpy()[i]) for k, v in out.items()}
                                     for i in range(len(images))]}

    return json_server(handle)


def json_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def test_anomalies_and_small_classes_stop_the_run_before_training(tiny_demo, workdir, capsys):
    schema = (REPO / "schemas" / "image_classification" / "schema.pbtxt").read_text()
    (workdir / "schema.pbtxt").write_text(schema.replace('  value: "png"\n', ""))  # PNG no longer allowed
    (workdir / "thaw.yaml").write_text(
        f"output_dir: out\n"
        f"beam_pipeline_args: [--direct_running_mode=in_memory]\n"
        f"data: {{root: {tiny_demo['data']}, schema: schema.pbtxt, min_images_per_class: 100}}\n"
        f"backbone: {{path: {tiny_demo['backbone']}, image_size: 32}}\n")
    assert cli.main(["run", "--config", "thaw.yaml", "--json"]) == cli.DATA_STOPPED
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["data_passed"] is False and summary["ingested"] == 250
    assert any("feature 'format'" in p for p in summary["problems"])
    assert any("class 'five' has 50 images, fewer than the minimum of 100" in p for p in summary["problems"])
    assert "data validation: STOPPED the run before training:" in out
    pipeline_root = workdir / "out" / "pipeline"
    assert (pipeline_root / "DataGate").is_dir()
    for never_ran in ("Transform", "Trainer", "Evaluator", "Pusher", "RunReport"):
        assert not (pipeline_root / never_ran).exists(), never_ran
    page = report_artifact(pipeline_root, "StoppedRunReport")
    assert "stopped by the data gate before training" in page and "fewer than the minimum of 100" in page


def test_ingest_accounts_for_every_file_as_json(tiny_demo, workdir, capsys):
    data = workdir / "data"
    shutil.copytree(tiny_demo["data"], data)
    (data / "five" / "empty.png").write_bytes(b"")
    (data / "six" / "notes.txt").write_text("not an image")
    assert cli.main(["ingest", str(data), "--output", "out", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["classes"] == ["eight", "five", "nine", "seven", "six"]
    assert result["ingested"] == 250 and sum(result["splits"].values()) == 250
    assert [(q["path"], q["code"]) for q in result["quarantined"]] == [
        ("five/empty.png", "empty"), ("six/notes.txt", "not_an_image")]
    assert all(set(q) == {"path", "code", "detail", "reason"} for q in result["quarantined"])
    assert result["data_passed"] is True
    assert not (workdir / "out" / "pipeline" / "Trainer").exists()
    page = (workdir / "out" / "report.html").read_text()
    for entry in result["quarantined"]:
        assert f"<td>{entry['path']}</td><td>{entry['code']}</td><td>{entry['detail']}</td>" in page

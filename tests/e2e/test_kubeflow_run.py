"""The YAML `thaw compile` writes, run by KFP's own local executor: three runs, one pipeline root.

1. the demo's images: every task succeeds, the model is blessed and pushed,
   and the run ends with its report;
2. the same images with their labels shuffled, given as the ``data_root``
   runtime parameter: the baseline step finds run 1's model, the Evaluator
   refuses the candidate, nothing is pushed;
3. a ``data_limits`` runtime parameter no data set meets: the data gate stops
   the run, which ends with the stopped-run report and no Trainer.

The bridges over what kfp.local lacks are in tests/support/kfp_local.py.
Each task runs as a subprocess in this environment here; the same runs with
every task in a container of the built image are tests/e2e/test_container_run.py.
"""

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import yaml

from demo.digits import DEMO_STAGES
from pipeline import cli
from tests.support import kfp_local

pytestmark = pytest.mark.e2e

WALL = {}  # run -> seconds, printed at the end of the module


@pytest.fixture(scope="module")
def kfp_runner():
    """The kfp.local runner: None, a SubprocessRunner in this environment."""
    return None


@pytest.fixture(scope="module")
def kfp_image():
    """The image the compiled spec names (the SubprocessRunner runs none)."""
    return "thaw:test"


@pytest.fixture(scope="module")
def compiled(tiny_demo, tmp_path_factory, kfp_image):
    folder = tmp_path_factory.mktemp("kfp-run")
    (folder / "thaw.yaml").write_text(
        f"output_dir: {folder / 'out'}\n"
        f"data: {{root: {tiny_demo['data']}}}\n"
        f"backbone: {{path: {tiny_demo['backbone']}, image_size: 32}}\n"
        f"training: {{stages: {json.dumps(list(DEMO_STAGES))}}}\n"
        f"beam_pipeline_args: [--direct_running_mode=in_memory]\n"
        f"gate: {{min_accuracy: 0.6, min_macro_recall: 0.5}}\n"
        f"kubeflow: {{image: {kfp_image}}}\n")
    assert cli.main(["compile", "--config", str(folder / "thaw.yaml"), "--output", str(folder / "pipeline.yaml")]) == 0
    return folder


def pipeline_root(compiled) -> Path:
    return compiled / "out" / "pipeline"


def serving(compiled) -> dict[str, bytes]:
    folder = compiled / "out" / "serving"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tasks(run: Path) -> set[str]:
    return {p.name for p in run.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def first_run(compiled, kfp_runner):
    run, WALL["run 1 (demo)"] = kfp_local.run(compiled / "pipeline.yaml", pipeline_root(compiled), kfp_runner)
    return run


@pytest.fixture(scope="module")
def shuffled_run(compiled, first_run, tiny_demo, tmp_path_factory, kfp_runner):
    """The demo's images, each moved to a class chosen at random (the class sizes kept)."""
    data = tmp_path_factory.mktemp("shuffled") / "images"
    images = sorted(Path(tiny_demo["data"]).glob("*/*.png"))
    labels = [p.parent.name for p in images]
    random.Random(13).shuffle(labels)
    for image, label in zip(images, labels):
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, data / label / image.name)
    before = serving(compiled)
    run, WALL["run 2 (shuffled labels)"] = kfp_local.run(compiled / "pipeline.yaml", pipeline_root(compiled),
                                                         kfp_runner, data_root=str(data))
    return run, data, before


@pytest.fixture(scope="module")
def stopped_run(compiled, shuffled_run, kfp_runner):
    limits = json.loads(parameter_defaults(compiled)["data_limits"])
    limits["min_images_per_class"] = 1000
    run, WALL["run 3 (stopped by the data gate)"] = kfp_local.run(
        compiled / "pipeline.yaml", pipeline_root(compiled), kfp_runner, data_limits=json.dumps(limits))
    return run


def parameter_defaults(compiled) -> dict[str, str]:
    spec = next(yaml.safe_load_all((compiled / "pipeline.yaml").read_text()))
    return {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}


def text_of(page: Path) -> str:
    """An HTML page's text, one space between words."""
    html = re.sub(r"<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def test_the_first_run_blesses_pushes_and_reports(compiled, first_run):
    assert {"DataFingerprint", "ImageExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "ServedModel",
            "DataGate", "Transform", "Trainer", "Evaluator", "ServingValidator", "AtomicPusher",
            "RunReport"} == tasks(first_run)
    assert not (first_run / "ServedModel" / "baseline" / "baseline.json").exists()  # nothing served yet
    assert (first_run / "Evaluator" / "blessing" / "BLESSED").exists()
    record = read(first_run / "Evaluator" / "blessing", "baseline.json")
    assert record["model"] == str(first_run / "Trainer" / "model")
    push = read(first_run / "AtomicPusher" / "pushed_model", "push.json")  # what the next run's baseline finds
    assert push["model"] == str(first_run / "Trainer" / "model")
    versions = [p for p in (compiled / "out" / "serving").iterdir() if p.name.isdigit()]
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").exists()
    page = text_of(first_run / "RunReport" / "report")
    assert f"a better model was pushed : {versions[0]}" in page and "not blessed" not in page, page[:600]
    assert "Confusion matrix (test split)" in (first_run / "RunReport" / "report").read_text()
    assert "could not draw" not in page


def test_the_second_run_on_shuffled_labels_is_refused_against_the_first_model(compiled, first_run, shuffled_run):
    run, data, before = shuffled_run
    # The data_root runtime parameter reached ingestion: it read the shuffled images.
    assert read(run / "ImageExampleGen" / "report", "ingestion_report.json")["data"] == str(data)
    assert read(first_run / "ImageExampleGen" / "report", "ingestion_report.json")["data"] != str(data)
    baseline = read(run / "ServedModel" / "baseline", "baseline.json")
    assert baseline["model"] == str(first_run / "Trainer" / "model")
    assert (run / "Evaluator" / "blessing" / "NOT_BLESSED").exists()
    assert not (run / "Evaluator" / "blessing" / "BLESSED").exists()
    assert serving(compiled) == before  # nothing new pushed
    page = text_of(run / "RunReport" / "report")
    assert "not blessed" in page
    # TFMA evaluated run 1's model beside the candidate.
    assert re.search(r"baseline \(the served model\) accuracy \d\.\d{4} \d\.\d{4}", page), page[:2000]
    assert "RunReport" in tasks(run) and "StoppedRunReport" not in tasks(run)


def test_a_run_the_data_gate_stops_ends_with_the_stopped_run_report(stopped_run):
    ran = tasks(stopped_run)
    assert "StoppedRunReport" in ran
    assert not ran & {"Transform", "Trainer", "Evaluator", "ServingValidator", "AtomicPusher", "RunReport"}, ran
    verdict = read(stopped_run / "DataGate" / "verdict", "verdict.json")
    assert verdict["passed"] is False
    assert any("fewer than the minimum of 1000" in p for p in verdict["problems"]), verdict["problems"]
    page = text_of(stopped_run / "StoppedRunReport" / "report")
    assert "stopped by the data gate before training" in page


def test_wall_times(stopped_run, capsys):
    with capsys.disabled():
        print("\nkfp.local runs (wall seconds):", json.dumps({k: round(v, 1) for k, v in WALL.items()}))
    assert len(WALL) == 3


def test_a_bad_training_parameter_stops_the_run_in_its_first_task_with_the_yaml_message(compiled, capfd, tmp_path):
    """The `training` JSON a Kubeflow UI run may set, wrong three ways: the run stops in DataFingerprint,
    saying what `thaw run` says of the same values in a thaw.yaml, and nothing is trained."""
    from components.spec import ConfigError
    from pipeline import config as config_lib

    training = json.loads(parameter_defaults(compiled)["training"])
    training["training"]["stages"][0].update(optimizer="adamz", learning_rate=-0.1)
    training["training"]["stages"][1]["epochs"] = 0
    root = pipeline_root(compiled)
    before = set(root.iterdir()) if root.exists() else set()
    with pytest.raises(RuntimeError):  # kfp.local: a task failed
        kfp_local.run(compiled / "pipeline.yaml", root, training=json.dumps(training))
    (run,) = set(root.iterdir()) - before
    output = capfd.readouterr()
    said = output.out + output.err
    assert not tasks(run) & {"ImageExampleGen", "StatisticsGen", "Transform", "Trainer", "Evaluator", "AtomicPusher"}, \
        tasks(run)
    (tmp_path / "thaw.yaml").write_text("training: " + json.dumps(training["training"]) + "\n")
    with pytest.raises(ConfigError) as thaw_run:
        config_lib.load(tmp_path / "thaw.yaml")
    assert len(thaw_run.value.problems) == 3
    for line in thaw_run.value.problems:
        assert line in said, (line, said[-3000:])
    assert "the run's runtime parameters (`training`, `data_limits`): invalid configuration" in said


def test_data_too_small_for_a_split_is_stopped_by_the_data_gate_not_by_a_failed_task(compiled, tmp_path):
    """On Kubeflow too a data problem fails no task: ingestion keeps its report (a failed task's
    outputs would be lost), the data gate's verdict names the empty split and the bad row, and the run
    ends with the stopped-run report. The same compiled spec, given a manifest as its data_root."""
    from tests.support.images import encode, noise

    (tmp_path / "one.png").write_bytes(encode(noise("RGB", size=(32, 32), seed=91), "PNG"))
    manifest = tmp_path / "images.csv"
    manifest.write_bytes("uri,label\r\none.png,cat\r\n,dog\r\n".encode("utf-8-sig"))
    run, _ = kfp_local.run(compiled / "pipeline.yaml", pipeline_root(compiled), data_root=str(manifest))
    ran = tasks(run)
    assert "StoppedRunReport" in ran and not ran & {"Transform", "Trainer", "RunReport"}, ran
    report = read(run / "ImageExampleGen" / "report", "ingestion_report.json")
    assert report["data"] == str(manifest) and report["ingested"] == 1
    assert [(q["path"], q["line"]) for q in report["quarantined"]] == [("images.csv:3", 3)]
    empty = [name for name in report["split_names"] if name not in report["splits"]]
    verdict = read(run / "DataGate" / "verdict", "verdict.json")
    assert verdict["passed"] is False
    assert any(p.startswith(f"split(s) {', '.join(empty)} got no images") for p in verdict["problems"])
    page = text_of(run / "StoppedRunReport" / "report")
    assert "stopped by the data gate before training" in page and "manifest images.csv line 3" in page

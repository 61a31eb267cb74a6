"""The report's evaluation section: labelled numbers, and a plot it cannot draw said, not dropped."""

import html
import json

from components.report import report
from components.report.summary import RunSummary


def summary(**fields) -> RunSummary:
    base = dict(classes=["cat", "dog"], splits={"train": 70, "validation": 15, "test": 15},
                stages=[{"name": "head", "trainable": "head only", "trainable_params": 10, "optimizer": "adam",
                         "learning_rate": 0.003, "epochs_run": 2, "best_val_accuracy": 0.8}], metrics={"accuracy": 0.75})
    return RunSummary(**{**base, **fields})


def test_the_gate_and_the_schedule_numbers_are_each_labelled():
    lines = summary().lines()
    assert "validation accuracy 0.8000 (validation split, the schedule's number: the epochs were chosen on it)" in lines
    assert "test accuracy 0.7500 (test split, the gate's number (held out: nothing in training saw it))" in lines


def test_the_files_ingestion_copied_instead_of_reading_are_said_only_when_there_are_some():
    assert ("ingestion: 950 files unchanged since the last ingestion (path, label, size and times), their examples "
            "copied; 50 files read") in summary(reuse={"reused": 950, "read": 50}).lines()
    assert not any(line.startswith("ingestion:") for line in summary(reuse={"reused": 0, "read": 1000}).lines())


def test_a_run_from_before_the_test_split_says_its_number_is_optimistic():
    old = summary(splits={"train": 80, "eval": 20})
    assert old.gate_split == "eval"
    assert any(line.startswith("eval accuracy 0.7500 (eval split, the gate's number (a run from before the "
                               "held-out test split") for line in old.lines())


def test_a_confusion_matrix_it_cannot_draw_is_said_with_the_reason(tmp_path):
    page = html.unescape(report.evaluation_section(summary(artifacts={
        "ModelEvaluation": str(tmp_path / "no-evaluation"), "Model": str(tmp_path / "model")})))
    assert "Confusion matrix (test split): could not draw: the model's class names were not found" in page
    assert "test accuracy <b>0.7500</b>" in page and "validation accuracy <b>0.8000</b>" in page


def test_the_class_names_are_the_models_label_vocabulary_in_id_order(tmp_path):
    assets = tmp_path / "Format-Serving" / "assets"
    assets.mkdir(parents=True)
    (assets / "label").write_text("dog\ncat\n")  # by frequency, as TF Transform writes it: not sorted
    (tmp_path / "Format-Serving" / "assets.extra").mkdir()
    (tmp_path / "Format-Serving" / "assets.extra" / "thaw_label_counts.json").write_text(json.dumps({"cat": 1}))
    assert report.class_names(str(tmp_path)) == ["dog", "cat"]
    assert report.class_names("") == []


def test_training_curves_it_cannot_draw_are_said(tmp_path):
    (tmp_path / "run").mkdir()
    page = html.unescape(report.training_section(summary(artifacts={"ModelRun": str(tmp_path / "run")})))
    assert "Training curves: could not draw: no stages.json" in page

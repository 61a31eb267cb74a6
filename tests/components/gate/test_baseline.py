"""The baseline step's record: what a blessing writes and how the newest blessed model is found."""

import json

from tfx.types import standard_artifacts

from components.gate import baseline


def trained_model(folder):
    (folder / "Format-Serving").mkdir(parents=True)
    (folder / "Format-Serving" / "saved_model.pb").write_bytes(b"model")
    return str(folder)


def blessing(folder, model, blessed=True):
    folder.mkdir(parents=True)
    (folder / ("BLESSED" if blessed else "NOT_BLESSED")).write_text("")
    baseline.record_blessing(str(folder), model)
    return folder


def test_the_newest_blessed_model_whose_files_exist_is_the_baseline(tmp_path):
    root = tmp_path / "pipeline"
    old = trained_model(root / "run1" / "Trainer" / "model")
    new = trained_model(root / "Trainer" / "model" / "12")
    gone = str(root / "run3" / "Trainer" / "model")  # its files were cleaned up since
    blessing(root / "run1" / "Evaluator" / "blessing", old)
    blessing(root / "Evaluator" / "blessing" / "14", new)
    blessing(root / "run3" / "Evaluator" / "blessing", gone)
    # A blessing file with a record but NOT_BLESSED (written by hand: the Evaluator never does) is no baseline.
    blessing(root / "run4" / "Evaluator" / "blessing", old, blessed=False)
    assert [m["model"] for m in baseline.blessed_models(str(root))] == [old, new]


def test_the_pointer_says_which_model_or_none(tmp_path):
    found = standard_artifacts.Model()
    found.uri = str(tmp_path / "found")
    (tmp_path / "found").mkdir()
    (tmp_path / "found" / baseline.RECORD_FILE).write_text(json.dumps({"model": "gs://b/Trainer/model"}))
    none = standard_artifacts.Model()
    none.uri = str(tmp_path / "none")
    assert baseline.baseline_uri(found) == "gs://b/Trainer/model"
    assert baseline.baseline_uri(none) is None
    assert baseline.baseline_uri(None) is None
    assert baseline.blessed_models(str(tmp_path / "no-root-yet")) == []

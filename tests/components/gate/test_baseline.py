"""The baseline step: the model being served, from the serving directory and the records of blessings and pushes."""

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


# The model being served, not the last blessed one.

def pushed(root, run, serving, content, blessed=True):
    """A run under ``root`` whose model (its saved_model.pb holding ``content``) was blessed and pushed into
    ``serving`` the way AtomicPusher does it; returns (model uri, version folder)."""
    from components.serve import serving_dir

    model = trained_model(root / run / "Trainer" / "model")
    (root / run / "Trainer" / "model" / "Format-Serving" / "saved_model.pb").write_bytes(content)
    blessing(root / run / "Evaluator" / "blessing", model)
    destination = serving_dir.push(str(root / run / "Trainer" / "model" / "Format-Serving"), str(serving), keep=5)
    baseline.record_push(str(root / run / "AtomicPusher" / "pushed_model"), model, destination)
    return model, destination


def refused(root, run, content):
    """A run whose model the Evaluator blessed and serving validation refused: never pushed."""
    model = trained_model(root / run / "Trainer" / "model")
    (root / run / "Trainer" / "model" / "Format-Serving" / "saved_model.pb").write_bytes(content)
    blessing(root / run / "Evaluator" / "blessing", model)
    return model


def test_a_blessed_model_serving_validation_refused_is_not_the_baseline(tmp_path, monkeypatch):
    root, serving = tmp_path / "pipeline", tmp_path / "serving"
    first, _ = pushed(root, "run1", serving, b"first")
    monkeypatch.setattr("time.time", lambda: 4e9)  # blessed after run 1's push
    refused(root, "run2", b"second")
    found = baseline.find_served(str(root), str(serving))
    assert found["model"] == first and "live in" in found["why"]
    # Where the serving directory cannot be read: the newest push, not the newest blessing.
    found = baseline.find_served(str(root), str(tmp_path / "not-mounted-here"))
    assert found["model"] == first and "pushed and not rolled back" in found["why"]


def test_after_a_rollback_the_baseline_is_the_version_served_again(tmp_path, workdir):
    from pipeline import cli

    output = tmp_path / "out"
    root, serving = output / "pipeline", output / "serving"
    first, _ = pushed(root, "run1", serving, b"first")
    second, _ = pushed(root, "run2", serving, b"second")
    assert baseline.find_served(str(root), str(serving))["model"] == second
    assert cli.main(["rollback", "--output", str(output)]) == 0
    assert baseline.find_served(str(root), str(serving))["model"] == first
    # thaw rollback marked the push it undid, so a pipeline that cannot read the serving directory follows too.
    assert [p["rolled_back"] for p in baseline.pushed_models(str(root))] == [False, True]
    assert baseline.find_served(str(root), str(tmp_path / "not-mounted-here"))["model"] == first


def test_a_store_from_before_push_records_finds_the_served_model_by_its_content(tmp_path):
    from components.serve import serving_dir

    root, serving = tmp_path / "pipeline", tmp_path / "serving"
    old = refused(root, "run1", b"pushed before push records")
    serving_dir.push(old + "/Format-Serving", str(serving), keep=5)
    refused(root, "run2", b"blessed, then refused by serving validation")
    assert baseline.find_served(str(root), str(serving))["model"] == old
    # ... and where the serving directory cannot be read, the newest blessed model, as such a store did.
    assert "no push records" in baseline.find_served(str(root), str(tmp_path / "elsewhere"))["why"]


def test_a_served_version_no_model_here_matches_is_copied_and_graded_as_served(tmp_path):
    from components.serve import serving_dir

    root, serving = tmp_path / "pipeline", tmp_path / "serving"
    other = trained_model(tmp_path / "other-pipeline" / "model")
    version = serving_dir.push(other + "/Format-Serving", str(serving), keep=5)
    found = baseline.find_served(str(root), str(serving))
    assert found["copy_from"] == version and "graded as served" in found["why"]


def test_nothing_served_is_no_baseline(tmp_path):
    root = tmp_path / "pipeline"
    (tmp_path / "serving").mkdir()
    refused(root, "run1", b"blessed, never pushed")
    assert baseline.find_served(str(root), str(tmp_path / "serving")) is None


def test_the_served_model_carries_the_fingerprint_of_the_data_it_was_trained_on_through_a_rollback(tmp_path):
    from components.serve import serving_dir

    root, serving = tmp_path / "pipeline", tmp_path / "serving"
    versions = []
    for run, print_ in (("run1", "aaa"), ("run2", "bbb")):
        model = trained_model(root / run / "Trainer" / "model")
        (root / run / "Trainer" / "model" / "Format-Serving" / "saved_model.pb").write_bytes(run.encode())
        destination = serving_dir.push(str(root / run / "Trainer" / "model" / "Format-Serving"), str(serving), keep=5)
        baseline.record_push(str(root / run / "AtomicPusher" / "pushed_model"), model, destination,
                             {"data_fingerprint": print_, "data_digest": "d" + print_, "settings_digest": "s",
                              "fingerprint_record": str(root / run / "DataFingerprint")})
        versions.append(destination)
    served = baseline.find_served(str(root), str(serving))
    assert served["data_fingerprint"] == "bbb" and served["fingerprint_record"] == str(root / "run2" / "DataFingerprint")
    serving_dir.rollback(str(serving))  # version 2 out of service: the data of run 1's model is the served data
    served = baseline.find_served(str(root), str(serving))
    assert served["data_fingerprint"] == "aaa" and served["data_digest"] == "daaa"

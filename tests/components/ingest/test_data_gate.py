"""DataGate's judgement: what stops a run before training, and what is only a warning."""

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.ingest.data_gate import judge, label_drift, read_anomalies
from components.ingest.data_limits import DataLimits
from components.ingest.quarantine import Quarantined, Reason

LIMITS = DataLimits(max_bad_fraction=0.1, min_images_per_class=5, min_images_per_split=1, max_class_imbalance=3.0,
                    max_label_drift=0.2)


def bad(path: str, code: Reason) -> dict:
    """A quarantined entry as the ingestion report writes it."""
    return Quarantined(path, code, "as ingestion would say it").to_json()


def report(per_class, quarantined=(), files_seen=None):
    ingested = sum(sum(s.values()) for s in per_class.values())
    return {"per_class": per_class, "quarantined": list(quarantined),
            "files_seen": files_seen if files_seen is not None else ingested + len(quarantined),
            "sizes": {"width": {"min": 8}}}


CLEAN = {"cat": {"train": 6, "validation": 2, "test": 2}, "dog": {"train": 6, "validation": 2, "test": 2}}


def test_clean_data_passes_with_its_numbers():
    verdict = judge(report(CLEAN), [], LIMITS, None)
    assert verdict["passed"] and verdict["problems"] == [] and verdict["warnings"] == []
    assert verdict["checks"]["images_per_class"] == {"cat": 10, "dog": 10}
    assert verdict["checks"]["class_imbalance"] == 1.0
    assert verdict["checks"]["label_drift"] is None


def test_a_few_bad_files_warn_and_too_many_stop():
    few = judge(report(CLEAN, [bad("cat/x.png", Reason.EMPTY)]), [], LIMITS, None)
    assert few["passed"] and few["warnings"] == ["1 of 21 files (4.8%) were quarantined (1 empty)"]
    many = judge(report(CLEAN, [bad(f"x{i}", Reason.EMPTY) for i in range(3)] +
                        [bad(f"y{i}", Reason.TRUNCATED) for i in range(2)]), [], LIMITS, None)
    assert not many["passed"]
    assert ("5 of 25 files (20.0%) were quarantined (3 empty, 2 truncated), over the limit of 10.0% "
            "(data.max_bad_fraction)") in many["problems"][0]
    assert many["checks"]["quarantined_by_code"] == {"empty": 3, "truncated": 2}


def test_empty_class_folders_warn_but_do_not_count_as_bad_files():
    verdict = judge(report(CLEAN, [bad("bird/", Reason.EMPTY_CLASS_FOLDER)]), [], LIMITS, None)
    assert verdict["passed"] and verdict["warnings"] == ["class folder bird/ is empty"]
    assert verdict["checks"]["bad_fraction"] == 0


def test_a_folder_not_followed_is_not_called_an_empty_class_folder():
    quarantined = [bad("cat/up/", Reason.SYMLINK_LOOP), bad("dog/everything/", Reason.OUTSIDE_DATA_ROOT)]
    verdict = judge(report(CLEAN, quarantined, files_seen=20), [], LIMITS, None)
    assert verdict["passed"] and verdict["warnings"] == [] and verdict["checks"]["bad_fraction"] == 0


def test_a_report_written_before_codes_is_judged_by_its_text():
    old = [{"path": "bird/", "reason": "empty class folder: it holds no files"},
           {"path": "cat/x.png", "reason": "not an image (no known image header)"}]
    verdict = judge(report(CLEAN, old), [], LIMITS, None)
    assert verdict["warnings"] == ["1 of 22 files (4.5%) were quarantined (1 not_an_image)",
                                   "class folder bird/ is empty"]


def test_small_classes_and_imbalance_stop_the_run():
    verdict = judge(report({"cat": {"train": 20}, "dog": {"train": 4}}), [], LIMITS, None)
    assert not verdict["passed"]
    assert any("class 'dog' has 4 images, fewer than the minimum of 5" in p for p in verdict["problems"])
    assert any("'cat' has 20 images, 'dog' 4, a ratio of 5.0 over the bound of 3" in p for p in verdict["problems"])


def test_a_class_too_small_for_a_held_out_split_stops_the_run_naming_class_and_split():
    limits = LIMITS.model_copy(update={"min_images_per_split": 2})
    verdict = judge(report({"cat": {"train": 6, "validation": 2, "test": 2},
                            "dog": {"train": 7, "validation": 2, "test": 1}}), [], limits, None)
    assert not verdict["passed"]
    assert verdict["problems"] == [
        "class 'dog' has 1 in test, fewer than the minimum of 2 per split (data.min_images_per_split): the "
        "splits are assigned by each image's content hash, so add images to the class (or raise that "
        "split's fraction in data.splits)"]
    # A split a class has no image in at all is named too.
    verdict = judge(report({"cat": {"train": 6, "validation": 2, "test": 2}, "dog": {"train": 8, "test": 2}}),
                    [], limits, None)
    assert any("class 'dog' has 0 in validation" in p for p in verdict["problems"]), verdict["problems"]


def test_the_default_limits_need_40_images_a_class_and_2_in_each_split():
    assert (DataLimits().min_images_per_class, DataLimits().min_images_per_split) == (40, 2)


def test_one_class_is_not_a_classifier():
    verdict = judge(report({"cat": {"train": 9}}), [], LIMITS, None)
    assert "1 class(es) with usable images; a classifier needs at least 2" in verdict["problems"]


def test_against_the_served_model_classes_and_drift():
    previous = {"cat": 80, "dog": 20, "bird": 5}
    verdict = judge(report({"cat": {"train": 8}, "dog": {"train": 8}, "fox": {"train": 8}}), [], LIMITS, previous)
    assert "classes new since the served model: fox" in verdict["warnings"]
    assert "classes the served model had that are gone now: bird" in verdict["warnings"]
    assert verdict["checks"]["label_drift"] == pytest.approx(80 / 105 - 1 / 3)
    assert any("label distribution drifted by 0.429" in p for p in verdict["problems"])


def test_label_drift_is_the_largest_change_in_a_share():
    assert label_drift({"a": 5, "b": 5}, {"a": 50, "b": 50}) == 0
    assert label_drift({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert label_drift({}, {"a": 1}) == 0


def test_tfdv_anomalies_become_sentences_that_stop_the_run(tmp_path):
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["format"]
    info.short_description = "Unexpected string values"
    info.description = "Examples contain values missing from the schema: tiff (~5% of the examples)."
    (tmp_path / "Split-train").mkdir()
    (tmp_path / "Split-train" / "SchemaDiff.pb").write_bytes(anomalies.SerializeToString())
    sentences = read_anomalies(str(tmp_path), ["train", "validation", "test"])
    assert sentences == [
        "split 'train', feature 'format': Unexpected string values (Examples contain values missing "
        "from the schema: tiff (~5% of the examples).); fix the data, or the contract in schemas/ if "
        "the data is right"]
    assert not judge(report(CLEAN), sentences, LIMITS, None)["passed"]


def test_a_class_whose_every_file_was_quarantined_stops_the_run():
    data = report(CLEAN, [bad("bird/notes.png", Reason.NOT_AN_IMAGE)])
    data["classes_without_images"] = ["bird"]
    verdict = judge(data, [], LIMITS, None)
    assert not verdict["passed"]
    assert "class 'bird' has no usable image: every one of its files was quarantined" in verdict["problems"][0]

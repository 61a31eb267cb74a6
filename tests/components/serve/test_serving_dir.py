"""The serving directory: versions only go up, a push is all or nothing, rollback falls back."""

import os

import pytest
import tensorflow as tf

from components.serve import serving_dir


@pytest.fixture
def model(tmp_path):
    """A stand-in SavedModel folder: saved_model.pb, variables, assets.extra."""
    root = tmp_path / "model"
    (root / "variables").mkdir(parents=True)
    (root / "assets.extra").mkdir()
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * 1000)
    (root / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"warmup")
    return str(root)


def listing(base):
    return sorted(name for name in os.listdir(base) if name != serving_dir.PUSH_LOCK)


def test_pushes_make_strictly_increasing_complete_versions(model, tmp_path):
    base = str(tmp_path / "serving")
    first = serving_dir.push(model, base, keep=5)
    second = serving_dir.push(model, base, keep=5)
    v1, v2 = int(os.path.basename(first)), int(os.path.basename(second))
    assert v2 > v1 and serving_dir.versions(base) == [v1, v2]
    assert listing(base) == [str(v1), str(v2)]  # no staging folder left behind
    for version in (first, second):
        assert sorted(os.listdir(version)) == ["assets.extra", "saved_model.pb", "variables"]
        assert open(os.path.join(version, "variables", "variables.data-00000-of-00001"), "rb").read() == b"x" * 1000


def test_saved_model_pb_is_written_last(model, tmp_path, monkeypatch):
    copied = []
    real_copy = tf.io.gfile.copy
    monkeypatch.setattr(tf.io.gfile, "copy", lambda src, dst, overwrite=False: (copied.append(os.path.basename(dst)),
                                                                               real_copy(src, dst, overwrite))[1])
    serving_dir.push(model, str(tmp_path / "serving"), keep=5)
    assert copied[-1] == "saved_model.pb" and copied.count("saved_model.pb") == 1


def test_a_crash_in_the_middle_of_a_push_leaves_no_visible_version(model, tmp_path, monkeypatch):
    base = str(tmp_path / "serving")
    kept = serving_dir.push(model, base, keep=5)
    real_copy = tf.io.gfile.copy
    calls = []

    def failing_copy(src, dst, overwrite=False):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_copy(src, dst, overwrite)

    monkeypatch.setattr(tf.io.gfile, "copy", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        serving_dir.push(model, base, keep=5)
    assert listing(base) == [os.path.basename(kept)]  # the old version alone; no partial one, no staging


def test_only_the_newest_versions_are_kept(model, tmp_path):
    base = str(tmp_path / "serving")
    pushed = [int(os.path.basename(serving_dir.push(model, base, keep=2))) for _ in range(4)]
    assert serving_dir.versions(base) == pushed[-2:]


def test_rollback_falls_back_and_later_pushes_still_go_up(model, tmp_path):
    base = str(tmp_path / "serving")
    v1, v2 = (int(os.path.basename(serving_dir.push(model, base, keep=5))) for _ in range(2))
    assert serving_dir.rollback(base) == (v2, v1)
    assert serving_dir.versions(base) == [v1]
    assert os.path.isdir(os.path.join(base, serving_dir.ROLLED_BACK, str(v2)))  # kept, not deleted
    v3 = int(os.path.basename(serving_dir.push(model, base, keep=5)))
    assert v3 > v2
    with pytest.raises(ValueError, match="needs a previous version"):
        serving_dir.rollback(str(tmp_path / "empty"))


def test_a_folder_without_saved_model_is_refused(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no saved_model.pb"):
        serving_dir.push(str(tmp_path / "not-a-model"), str(tmp_path / "serving"), keep=5)
    assert serving_dir.versions(str(tmp_path / "serving")) == []

"""DataFingerprint's parts: which files are hashed again, and when a run stops as unchanged."""

import hashlib
import json
import os
import shutil

import pytest

from components.ingest import fingerprint as fp
from components.ingest.image_example_gen import list_images

SETTINGS = json.dumps({"data": {"splits": {"train": 0.7, "validation": 0.15, "test": 0.15}}})


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    """These files are written a moment before they are fingerprinted; the window in which a just-written file's
    times are not trusted (fingerprint._RACY_NS) is tested on its own, below."""
    monkeypatch.setattr(fp, "_RACY_NS", 0)


@pytest.fixture
def data(tmp_path):
    """40 small files in two class folders (content is what is hashed; they need not be images here)."""
    root = tmp_path / "data"
    for i in range(40):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(f"image {i}".encode() * 50)
    return root


class Counting:
    """hash_file, counting which files it hashed."""

    def __init__(self):
        self.hashed = []

    def __call__(self, uri):
        self.hashed.append(os.path.basename(uri))
        return fp.hash_file(uri, 1 << 30)


def by_uri(entries):
    return {e["uri"]: e for e in entries}


def run(root, previous=None, rehash=False):
    counting = Counting()
    items, _ = list_images(str(root))
    return fp.fingerprint_files(items, previous or {}, rehash, hasher=counting), counting.hashed


def test_five_percent_changed_files_are_the_only_ones_hashed_again_and_every_hash_is_exact(data):
    first, hashed = run(data)
    assert len(hashed) == 40 and not any(e["reused"] for e in first)
    # 5%: one new file and one rewritten (same size, new content)
    (data / "cat" / "new.png").write_bytes(b"a new image" * 20)
    changed = data / "dog" / "000.png"
    changed.write_bytes(changed.read_bytes().replace(b"image 0", b"IMAGE 0"))
    second, hashed = run(data, by_uri(first))
    assert sorted(hashed) == ["000.png", "new.png"]
    assert sum(e["reused"] for e in second) == 39
    for e in second:  # reused or not, each hash is the file's content hash now
        assert e["sha256"] == hashlib.sha256(open(e["uri"], "rb").read()).hexdigest(), e["path"]
    assert fp.digest({}, second)["data_digest"] != fp.digest({}, first)["data_digest"]


def test_nothing_changed_nothing_hashed_and_the_same_fingerprint(data):
    first, _ = run(data)
    second, hashed = run(data, by_uri(first))
    assert hashed == []
    assert fp.digest({"a": 1}, second) == fp.digest({"a": 1}, first)


def test_a_file_rewritten_with_its_old_size_and_mtime_is_still_hashed_again(data):
    # touch -r (or a copy that keeps times) can set the modification time back; the change time it cannot.
    first, _ = run(data)
    target = data / "cat" / "001.png"
    info = target.stat()
    target.write_bytes(target.read_bytes().upper())
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert target.stat().st_size == info.st_size and target.stat().st_mtime_ns == info.st_mtime_ns
    second, hashed = run(data, by_uri(first))
    assert hashed == ["001.png"]
    assert by_uri(second)[str(target)]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_rehash_hashes_every_file_again(data):
    first, _ = run(data)
    _, hashed = run(data, by_uri(first), rehash=True)
    assert len(hashed) == 40


def test_a_file_moved_to_another_class_is_a_change(data):
    first, _ = run(data)
    shutil.move(data / "cat" / "001.png", data / "dog" / "001.png")
    second, _ = run(data, by_uri(first))
    assert fp.digest({}, second)["data_digest"] != fp.digest({}, first)["data_digest"]


def served_of(record: dict) -> dict:
    """What ServedModel hands on of a push record for a model trained on ``record``'s data."""
    return {"model": "/m", "why": "version 1, live", "data_fingerprint": record["fingerprint"],
            "data_digest": record["data_digest"], "settings_digest": record["settings_digest"]}


def fingerprint(data, tmp_path, served=None, force=False, limits="", name="out"):
    settings = fp.settings(SETTINGS, '{"stages": [1]}', limits)
    return fp.fingerprint_data(str(data), [], settings, str(tmp_path / "root"), served, force, False,
                               str(tmp_path / "root" / name))


def test_unchanged_data_and_configuration_stop_forced_train_and_config_changes_train(data, tmp_path):
    first = fingerprint(data, tmp_path, name="1")
    assert first["train"] and first["why"] == "no model is served yet" and first["hashed"] == 40
    served = served_of(first)
    # Nothing changed since the served model's run: stop; and no file was hashed again.
    again = fingerprint(data, tmp_path, served, name="2")
    assert again["train"] is False and again["why"] == "unchanged since the served model was trained"
    assert (again["hashed"], again["reused"]) == (0, 40)
    assert again["previous_record"] is not None
    # --force / the force runtime parameter: train anyway, and say so.
    forced = fingerprint(data, tmp_path, served, force=True, name="3")
    assert forced["train"] is True and forced["forced"] is True
    # The data gate's limits changed: a configuration change, so no early stop.
    stricter = fingerprint(data, tmp_path, served, limits='{"min_images_per_class": 1000}', name="4")
    assert stricter["train"] is True and stricter["why"] == "the configuration changed since the served model was trained"
    # One new file: the data changed.
    (data / "cat" / "new.png").write_bytes(b"new" * 30)
    changed = fingerprint(data, tmp_path, served, name="5")
    assert changed["train"] is True and changed["why"] == "the data changed since the served model was trained"
    assert changed["hashed"] == 1


def test_a_served_model_without_a_fingerprint_is_trained_against(data, tmp_path):
    record = fingerprint(data, tmp_path, {"model": "/m", "why": "pushed before fingerprints"})
    assert record["train"] is True and "no record of the data it was trained on" in record["why"]


def test_the_record_is_found_by_the_next_run_and_lists_every_file(data, tmp_path):
    fingerprint(data, tmp_path, name="1")
    folder, previous = fp.latest_record(str(tmp_path / "root"))
    assert folder == str(tmp_path / "root" / "1") and len(previous) == 40
    entry = previous[str(data / "cat" / "001.png")]
    assert set(entry) >= {"path", "label", "size", "mtime_ns", "ctime_ns", "sha256"} and entry["label"] == "cat"


def test_the_force_parameter_is_true_or_false_and_nothing_else():
    from components.spec import ConfigError

    assert [fp.parse_force(v) for v in ("true", "1", "yes", "false", "0", "no", " True ")] == [
        True, True, True, False, False, False, True]
    with pytest.raises(ConfigError, match="force: 'maybe' is neither true nor false"):
        fp.parse_force("maybe")


def test_a_file_written_just_before_the_fingerprint_is_hashed_again_next_time(data, monkeypatch):
    # On a file system with coarse timestamps a second write in the same tick would leave size and times as
    # recorded, so a file changed within the window is recorded without its times (git's "racily clean").
    monkeypatch.setattr(fp, "_RACY_NS", 3_600_000_000_000)  # every file here was written within the hour
    first, _ = run(data)
    assert all("mtime_ns" not in e for e in first)
    _, hashed = run(data, by_uri(first))
    assert len(hashed) == 40


def test_a_fifo_and_a_file_over_the_limit_are_recorded_unread_and_the_step_does_not_hang(data, tmp_path):
    # A FIFO opened plainly blocks until someone writes to it; the step reads files as ingestion does.
    os.mkfifo(data / "cat" / "pipe.png")
    (data / "dog" / "huge.png").write_bytes(b"x" * 5000)
    entries = fp.fingerprint_files(list_images(str(data))[0], {}, limit=4000)
    errors = {e["path"].rsplit("/", 1)[-1]: e.get("error") for e in entries if e["sha256"] is None}
    assert errors == {"pipe.png": "not_regular_file", "huge.png": "over_max_file_bytes"}
    assert sum(1 for e in entries if e["sha256"]) == 40


def test_a_damaged_record_costs_hashing_again_not_the_run(data, tmp_path, caplog):
    fingerprint(data, tmp_path, name="1")
    files = tmp_path / "root" / "1" / fp.FILES_FILE
    files.write_text(files.read_text()[:200])  # a run killed while writing it
    folder, previous = fp.latest_record(str(tmp_path / "root"))
    assert previous == {} and "cannot read" in caplog.text and str(files) in caplog.text
    again = fingerprint(data, tmp_path, name="2")
    assert (again["hashed"], again["reused"]) == (40, 0)


def test_a_store_without_modification_times_never_reuses_a_hash(data, monkeypatch):
    first, _ = run(data)
    monkeypatch.setattr(fp, "file_state", lambda uri: {})  # what file_state says of such a store
    _, hashed = run(data, by_uri(first))
    assert len(hashed) == 40


def test_an_edited_schema_is_a_configuration_change(tmp_path):
    schema = tmp_path / "schema.pbtxt"
    schema.write_text('feature { name: "image" }')
    settings_json = json.dumps({"data": {"schema_file": str(schema)}})
    before = fp.digest(fp.settings(settings_json, ""), [])["settings_digest"]
    assert fp.digest(fp.settings(settings_json, ""), [])["settings_digest"] == before
    schema.write_text('feature { name: "image" } feature { name: "label" }')
    assert fp.digest(fp.settings(settings_json, ""), [])["settings_digest"] != before


def test_the_fingerprint_settings_name_what_shapes_the_model_and_its_gate():
    from pipeline.config import ThawConfig

    base = ThawConfig().fingerprint_settings()
    for change in ({"gate": {"min_accuracy": 0.8}}, {"data": {"max_pixels": 1000}}):
        assert ThawConfig(**change).fingerprint_settings() != base, change
    assert ThawConfig(data={"rehash": True}).fingerprint_settings() == base

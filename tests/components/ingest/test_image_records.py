"""image_records: one file's checks, its split by content hash, and its tf.Example, apart from Beam."""

import hashlib
import subprocess
import sys

import pytest
import tensorflow as tf

from components.ingest import image_records
from components.ingest.quarantine import Reason
from tests.components.ingest.test_image_example_gen import SPLITS
from tests.conftest import REPO
from tests.support.images import encode, noise


def test_a_file_that_changes_while_it_is_read_is_not_ingested(tmp_path, monkeypatch):
    path = tmp_path / "cat.png"
    path.write_bytes(encode(noise("RGB", seed=40), "PNG"))
    record = image_records.inspect_item((str(path), "cat.png", "cat"), SPLITS, 50_000, 8, 1 << 20)
    assert record["kind"] == "example" and record["image_bytes"] == path.read_bytes()  # the bytes checked

    checked = image_records.inspect_image

    def rewritten_meanwhile(*args, **kwargs):  # a copy still arriving: the file grows after it was read
        found = checked(*args, **kwargs)
        with open(path, "ab") as f:
            f.write(b"more")
        return found

    monkeypatch.setattr(image_records, "inspect_image", rewritten_meanwhile)
    record = image_records.inspect_item((str(path), "cat.png", "cat"), SPLITS, 50_000, 8, 1 << 20)
    assert (record["kind"], record["code"]) == ("quarantine", Reason.CHANGED_DURING_INGESTION.value), record


def test_a_file_no_filesystem_can_open_is_unreadable():
    record = image_records.inspect_image("nowhere://bucket/cat.png", "cat.png", "cat", 50_000)
    assert (record["kind"], record["code"]) == ("quarantine", Reason.UNREADABLE.value), record


def test_splits_follow_the_content_hash():
    splits = [("train", 0.8), ("eval", 0.2)]
    assert image_records.split_for("0" * 64, splits) == "train"
    assert image_records.split_for("f" * 64, splits) == "eval"
    assigned = [image_records.split_for(hashlib.sha256(str(i).encode()).hexdigest(), splits) for i in range(2000)]
    assert assigned.count("eval") / len(assigned) == pytest.approx(0.2, abs=0.03)


def test_the_example_encoder_writes_what_tensorflow_parses():
    features = {"image_bytes": bytes(range(256)) * 3, "label": "été", "height": 2**40, "width": 0,
                "format": "", "channels": 3}
    parsed = tf.train.Example.FromString(image_records.encode_example(features))
    expected = tf.train.Example()
    for key, value in features.items():
        if isinstance(value, int):
            expected.features.feature[key].int64_list.value.append(value)
        else:
            expected.features.feature[key].bytes_list.value.append(
                value.encode() if isinstance(value, str) else value)
    assert parsed == expected


def test_beam_workers_never_import_tensorflow():
    code = ("import sys, components.ingest.image_records; "
            "print('tensorflow' in sys.modules, 'tfx' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=str(REPO))
    assert result.stdout.split() == ["False", "False"]

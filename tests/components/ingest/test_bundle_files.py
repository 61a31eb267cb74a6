"""bundle_files: ingestion's one writer, its commit (what a failed bundle or a retried commit leaves), and
the removal of copies from files already written."""

import gzip
import os

import pytest
import tensorflow as tf

from components.ingest import bundle_files, image_records, tfrecord_files


def example(source: str) -> bytes:
    return image_records.encode_example({"image_bytes": os.urandom(300), "label": "cat", "source": source})


def written(temp: str, records: dict[str, list[str]], line: str = "") -> list[tuple[str, str]]:
    """One bundle's files: the examples of ``records`` (split -> sources) and an outcome line."""
    files = bundle_files.BundleFiles(temp, tfrecord_files.STORED)
    for split, sources in records.items():
        for source in sources:
            files.example(split, example(source))
    if line:
        files.line(line)
    return files.close()


def sources(path: str) -> list[str]:
    from components.ingest.reuse import example_fields

    return [example_fields(r, ("source",))["source"].decode() for r in tfrecord_files.read_records(path)]


def test_commit_moves_what_bundles_named_and_removes_what_a_failed_bundle_left(tmp_path):
    examples, report = str(tmp_path / "examples"), str(tmp_path / "report")
    temp = bundle_files.temp_dir(examples)
    first = written(temp, {"train": ["a", "b"], "eval": ["c"]}, '{"kind": "x"}')
    second = written(temp, {"train": ["d"]}, '{"kind": "y"}')
    failed = written(temp, {"train": ["d"], "eval": ["e"]})  # its bundle failed and was retried as ``second``
    group = (0, [first, second])

    bundle_files.commit(group, temp, examples, report, ["train", "eval"], tfrecord_files.STORED)
    train = sorted(tf.io.gfile.glob(os.path.join(examples, "Split-train", "*")))
    assert [os.path.basename(p) for p in train] == ["data_tfrecord-00000-of-00002.gz", "data_tfrecord-00001-of-00002.gz"]
    assert sorted(s for p in train for s in sources(p)) == ["a", "b", "d"]
    assert [sources(p) for p in tf.io.gfile.glob(os.path.join(examples, "Split-eval", "*"))] == [["c"]]
    outcomes = tf.io.gfile.glob(os.path.join(report, "outcomes", "part-*-of-00002.jsonl"))
    assert sorted(open(p).read() for p in outcomes) == ['{"kind": "x"}\n', '{"kind": "y"}\n']
    assert not os.path.exists(temp) and failed  # the failed bundle's files went with the temporary folder
    assert sorted(os.listdir(examples)) == ["Split-eval", "Split-train"]

    # A commit run again (its worker lost after the moves) finds them done and changes nothing.
    bundle_files.commit(group, temp, examples, report, ["train", "eval"], tfrecord_files.STORED)
    assert sorted(tf.io.gfile.glob(os.path.join(examples, "Split-train", "*"))) == train


def test_a_file_gone_before_its_commit_fails_it_naming_the_file(tmp_path):
    temp = bundle_files.temp_dir(str(tmp_path / "examples"))
    named = written(temp, {"train": ["a"]})
    os.remove(named[0][1])
    with pytest.raises(FileNotFoundError, match=named[0][1].replace(".", r"\.")):
        bundle_files.commit((0, [named]), temp, str(tmp_path / "examples"), str(tmp_path / "report"), ["train"],
                            tfrecord_files.STORED)


def test_when_no_bundle_wrote_every_split_and_the_outcomes_get_one_empty_file_readers_read(tmp_path):
    examples, report = str(tmp_path / "examples"), str(tmp_path / "report")
    temp = bundle_files.temp_dir(examples)
    bundle_files.finish(temp, examples, report, ["train", "eval"], tfrecord_files.STORED)
    for split in ("train", "eval"):
        [path] = tf.io.gfile.glob(os.path.join(examples, f"Split-{split}", "*"))
        assert path.endswith("data_tfrecord-00000-of-00001.gz")
        data = open(path, "rb").read()
        assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == b""  # an empty gzip stream, as Beam's sink
        assert list(tf.data.TFRecordDataset(path, compression_type="GZIP")) == []
    assert [open(p).read() for p in tf.io.gfile.glob(os.path.join(report, "outcomes", "*"))] == [""]


def test_drop_records_removes_the_copies_named_and_only_them_and_can_run_again(tmp_path):
    temp = bundle_files.temp_dir(str(tmp_path))
    [(_, path)] = written(temp, {"train": ["a", "b", "c", "d"]})
    assert bundle_files.drop_records((path, ["b", "d", "z"]), tfrecord_files.STORED) == path
    assert sources(path) == ["a", "c"]
    bundle_files.drop_records((path, ["b", "d"]), tfrecord_files.STORED)  # retried: nothing more to drop
    assert sources(path) == ["a", "c"]
    assert os.listdir(temp) == [os.path.basename(path)]

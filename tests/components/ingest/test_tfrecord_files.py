"""tfrecord_files: gzipped TFRecords at a chosen deflate level, read back by TensorFlow and Beam as written."""

import gzip
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from components.ingest import bundle_files, tfrecord_files

# Incompressible bytes, very compressible ones, an empty record and one over a deflate block (64 KiB).
RECORDS = [os.urandom(5000), b"\0" * 20000, b"", bytes(range(256)) * 400, b"label"]


def write(tmp_path, level=tfrecord_files.STORED) -> list[str]:
    """RECORDS into the split "train" as ingestion writes them: bundle_files' writer, then its commit."""
    temp = bundle_files.temp_dir(str(tmp_path))
    with beam.Pipeline() as p:
        _ = (p | beam.Create(RECORDS) | beam.Map(lambda r: ("train", r, None))
             | beam.ParDo(bundle_files.BundleWriter(temp, level)) | beam.GroupByKey()
             | beam.Map(bundle_files.commit, temp, str(tmp_path), str(tmp_path / "report"), ["train"], level))
    files = sorted(tf.io.gfile.glob(str(tmp_path / "Split-train" / "data_tfrecord-*-of-*.gz")))
    assert files, os.listdir(tmp_path / "Split-train")
    return files


def test_tensorflow_and_beam_read_every_record_as_written(tmp_path):
    files = write(tmp_path)
    read_by_tf = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert sorted(read_by_tf) == sorted(RECORDS)
    with beam.Pipeline() as p:  # how StatisticsGen and Transform read Examples: compression from the suffix
        read = p | beam.io.ReadFromTFRecord(os.path.join(tmp_path, "Split-train", "*.gz"))
        assert_that(read, equal_to(RECORDS))


def test_the_files_are_tensorflows_own_framing_in_stored_gzip(tmp_path):
    files = write(tmp_path)
    for path in files:
        inside = gzip.decompress(open(path, "rb").read())
        records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
        reference = str(tmp_path / "reference.tfrecord")
        with tf.io.TFRecordWriter(reference) as writer:
            for record in records:
                writer.write(record)
        assert inside == open(reference, "rb").read()  # byte for byte what TensorFlow writes
        # Stored: nothing deflated, though 20,000 zero bytes would shrink to a few dozen.
        assert os.path.getsize(path) >= len(inside)


def test_a_level_deflates_when_asked_and_a_wrong_one_is_refused(tmp_path):
    files = write(tmp_path, level=6)
    assert sum(map(os.path.getsize, files)) < sum(map(len, RECORDS)) / 2
    with pytest.raises(ValueError, match="0 \\(stored\\) to 9"):
        tfrecord_files.GzipWriter(open(tmp_path / "x", "wb"), 10)


@pytest.mark.parametrize("level", [tfrecord_files.STORED, 6])
def test_read_records_gives_back_what_tensorflow_and_this_module_wrote(tmp_path, level):
    ours = write(tmp_path, level)
    reference = str(tmp_path / "tf.tfrecord.gz")
    with tf.io.TFRecordWriter(reference, options="GZIP") as writer:
        for record in RECORDS:
            writer.write(record)
    for path in ours + [reference]:
        got = list(tfrecord_files.read_records(path, chunk=1000))  # records straddle many chunks
        assert sorted(got) == sorted(RECORDS) if path != reference else got == RECORDS


def test_read_records_refuses_a_damaged_or_cut_file_naming_it(tmp_path):
    whole = open(write(tmp_path)[0], "rb").read()
    flipped, cut = bytearray(whole), tmp_path / "cut.gz"
    flipped[len(whole) // 2] ^= 0xFF
    (tmp_path / "flipped.gz").write_bytes(bytes(flipped))
    cut.write_bytes(whole[:-30])
    for path, said in ((tmp_path / "flipped.gz", "checksum"), (cut, "cut short")):
        with pytest.raises(ValueError, match=said) as raised:
            list(tfrecord_files.read_records(str(path), chunk=1000))  # a record's own checksum fails first
        assert str(path) in str(raised.value)

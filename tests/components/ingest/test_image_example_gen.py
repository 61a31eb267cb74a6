"""ImageExampleGen: every file is ingested or quarantined with a reason code.

The fixture set holds every bad kind and every awkward good kind; the real Beam
pipeline runs over it and each file's fate is asserted by its code, never by
the wording of its detail, which may change. Long because the pipeline runs
once per module over the shared fixture set, so the tests that read its run
stay together.
"""

import hashlib
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.ingest import image_example_gen as ieg
from components import image_ops
from components.ingest import image_records
from components.ingest.data_gate import judge
from components.ingest.data_limits import DataLimits
from components.ingest.quarantine import Quarantined, Reason
from components.serve.serving_probe import bomb_png

from tests.conftest import REPO
from tests.support.images import encode, noise

SPLITS = [("train", 0.5), ("eval", 0.5)]


def sixteen_bit_png() -> bytes:
    pixels = (np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 170)
    return encode(Image.fromarray(pixels, "I;16"), "PNG")


def damaged_png() -> bytes:
    """A whole PNG (it ends with IEND) whose compressed pixels are not zlib data."""
    data = bytearray(encode(noise("RGB", seed=19), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start:start + 2] = b"\0\0"  # the zlib header
    return bytes(data)


# path -> None (ingested) or its quarantine code.
FATES = {
    "cat/gray.png": None,
    "cat/rgb.jpg": None,
    "cat/UPPER.JPG": None,
    "cat/alpha.png": None,
    "cat/palette.png": None,
    "cat/été/ünïcode.png": None,
    "cat/a/b/c/deep.gif": None,
    "cat/bitmap.bmp": None,
    "dog/cmyk.jpg": None,
    "dog/sixteen.png": None,
    "dog/rgb.png": None,
    "dog/z-copy-of-rgb.png": Reason.DUPLICATE,
    "cat/clash.png": Reason.LABEL_CONFLICT,
    "dog/clash.png": Reason.LABEL_CONFLICT,
    "dog/empty.png": Reason.EMPTY,
    "dog/notes.jpg": Reason.NOT_AN_IMAGE,
    "dog/truncated.png": Reason.TRUNCATED,
    "dog/cut.jpg": Reason.TRUNCATED,
    "dog/cut-header.jpg": Reason.TRUNCATED,
    "dog/damaged.png": Reason.CORRUPT,
    "cat/readme.jpg": Reason.NOT_AN_IMAGE,  # the same text under two classes: not a label conflict
    "dog/readme.jpg": Reason.NOT_AN_IMAGE,
    "bird/broken.png": Reason.NOT_AN_IMAGE,  # bird's only file: a class with no usable image
    "dog/huge.png": Reason.TOO_LARGE,
    "dog/bomb.png": Reason.TOO_LARGE,
    "dog/tiny.png": Reason.TOO_SMALL,
    "dog/scan.tif": Reason.UNSUPPORTED_FORMAT,
    "stray.png": Reason.NOT_IN_CLASS_FOLDER,
    "empty-class/": Reason.EMPTY_CLASS_FOLDER,
}

# The test that produces each code FATES lacks: every code has a fixture.
ELSEWHERE = {
    Reason.OUTSIDE_DATA_ROOT: "test_hostile_manifest_rows_are_quarantined_unread_and_nothing_hangs",
    Reason.BAD_MANIFEST_ROW: "test_a_manifest_is_ingested_with_its_bad_rows_reported",
    Reason.SYMLINK_LOOP: "test_hostile_manifest_rows_are_quarantined_unread_and_nothing_hangs",
    Reason.NOT_REGULAR_FILE: "test_hostile_manifest_rows_are_quarantined_unread_and_nothing_hangs",
    Reason.OVER_MAX_FILE_BYTES: "test_hostile_manifest_rows_are_quarantined_unread_and_nothing_hangs",
    Reason.MISSING: "test_a_manifest_is_ingested_with_its_bad_rows_reported",
    Reason.UNREADABLE: "test_a_file_no_filesystem_can_open_is_unreadable",
    Reason.CHANGED_DURING_INGESTION: "test_a_file_that_changes_while_it_is_read_is_not_ingested",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    contents = {
        "cat/gray.png": encode(noise("L", seed=1), "PNG"),
        "cat/rgb.jpg": encode(noise("RGB", seed=2), "JPEG"),
        "cat/UPPER.JPG": encode(noise("RGB", seed=3), "JPEG"),
        "cat/alpha.png": encode(noise("RGBA", seed=4), "PNG"),
        "cat/palette.png": encode(noise("RGB", seed=5).convert("P"), "PNG"),
        "cat/été/ünïcode.png": encode(noise("RGB", seed=6), "PNG"),
        "cat/a/b/c/deep.gif": encode(noise("RGB", seed=7).convert("P"), "GIF"),
        "cat/bitmap.bmp": encode(noise("RGB", seed=8), "BMP"),
        "dog/cmyk.jpg": encode(noise("CMYK", seed=9), "JPEG"),
        "dog/sixteen.png": sixteen_bit_png(),
        "dog/rgb.png": encode(noise("RGB", seed=10), "PNG"),
        "dog/z-copy-of-rgb.png": encode(noise("RGB", seed=10), "PNG"),
        "cat/clash.png": encode(noise("RGB", seed=11), "PNG"),
        "dog/clash.png": encode(noise("RGB", seed=11), "PNG"),
        "dog/empty.png": b"",
        "dog/notes.jpg": b"these are not pixels\n",
        "dog/truncated.png": encode(noise("RGB", size=(200, 200), seed=12), "PNG")[:400],
        "dog/cut.jpg": encode(noise("RGB", size=(200, 200), seed=17), "JPEG")[:3000],
        "dog/cut-header.jpg": encode(noise("RGB", seed=18), "JPEG")[:12],
        "dog/damaged.png": damaged_png(),
        "cat/readme.jpg": b"the same notes, filed twice\n",
        "dog/readme.jpg": b"the same notes, filed twice\n",
        "bird/broken.png": b"not pixels either\n",
        "dog/huge.png": encode(noise("RGB", size=(300, 300), seed=13), "PNG"),
        "dog/bomb.png": bomb_png(60000, 60000),
        "dog/tiny.png": encode(noise("RGB", size=(4, 4), seed=14), "PNG"),
        "dog/scan.tif": encode(noise("RGB", seed=15), "TIFF"),
        "stray.png": encode(noise("RGB", seed=16), "PNG"),
    }
    for path, data in contents.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / "empty-class").mkdir()
    return root


def run_ingest(data: str, out: Path, **limits) -> dict:
    return ieg.ingest(beam.Pipeline(), data, SPLITS, str(out / "examples"), str(out / "report"),
                      max_pixels=50_000, min_side=8, **limits)


def read_examples(out: Path) -> list[tf.train.Example]:
    examples = []
    for path in sorted((out / "examples").glob("Split-*/*.gz")):
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            examples.append(tf.train.Example.FromString(record.numpy()))
    return examples


def feature(example: tf.train.Example, name: str):
    f = example.features.feature[name]
    return f.bytes_list.value[0] if f.HasField("bytes_list") else f.int64_list.value[0]


@pytest.fixture(scope="module")
def ingested(messy, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return run_ingest(str(messy), out), read_examples(out), out


def fields(q) -> tuple[str, Reason, str]:
    """(path, code, detail) of a report's entry, read as stored, or of a listing's Quarantined."""
    return (q.path, q.code, q.detail) if isinstance(q, Quarantined) else (q["path"], Reason(q["code"]), q["detail"])


def codes(quarantined: list) -> dict[str, Reason]:
    return {path: code for path, code, _ in map(fields, quarantined)}


def details(quarantined: list) -> dict[str, str]:
    return {path: detail for path, _, detail in map(fields, quarantined)}


def test_every_file_is_ingested_or_quarantined_with_its_reason(ingested):
    report, examples, _ = ingested
    found = codes(report["quarantined"])
    sources = {feature(e, "source").decode() for e in examples}
    for path, fate in FATES.items():
        if fate is None:
            assert path in sources, f"{path} should be ingested; quarantined as {found.get(path)}"
        else:
            assert found.get(path) is fate, f"{path}: {found.get(path)}, want {fate}"
    assert sources | set(found) == set(FATES)
    assert report["ingested"] == len(examples) == 11
    assert report["files_seen"] == 27  # files in class folders; the stray and the empty folder are listed apart
    assert report["classes"] == ["cat", "dog"]
    assert report["classes_without_images"] == ["bird"]
    assert sum(report["splits"].values()) == 11


def test_each_quarantined_file_has_its_code_its_detail_and_one_line_for_old_readers(ingested):
    report, _, _ = ingested
    said = details(report["quarantined"])
    assert said["dog/truncated.png"].startswith("a PNG file cut short after 400 bytes")
    assert said["dog/cut-header.jpg"].startswith("a JPEG file cut short after 12 bytes")
    assert said["dog/bomb.png"].startswith("60000x60000 pixels") and "(data.max_pixels)" in said["dog/bomb.png"]
    assert said["dog/tiny.png"].startswith("4x4 pixels") and "(data.min_side)" in said["dog/tiny.png"]
    assert said["dog/scan.tif"].startswith("TIFF")
    assert said["dog/damaged.png"].startswith("PNG: ")
    assert said["dog/z-copy-of-rgb.png"] == "a copy of dog/rgb.png"
    assert said["cat/clash.png"] == "the same image is labelled cat, dog"
    for entry in report["quarantined"]:
        assert set(entry) == {"path", "code", "detail", "reason"}
        assert entry["reason"] == f"{entry['code']}: {entry['detail'] or Reason(entry['code']).meaning}"
    # The commonest first, ties in the enum's order.
    assert list(report["quarantined_by_code"].items()) == [
        ("not_an_image", 4), ("truncated", 3), ("too_large", 2), ("label_conflict", 2), ("not_in_class_folder", 1),
        ("empty_class_folder", 1), ("empty", 1), ("unsupported_format", 1), ("too_small", 1), ("corrupt", 1),
        ("duplicate", 1)]


def test_every_code_is_produced_by_a_fixture():
    assert set(Reason) == {fate for fate in FATES.values() if fate} | set(ELSEWHERE)
    from tests.components.ingest import test_image_records  # the per-file checks' own tests

    for code, test in ELSEWHERE.items():
        found = globals().get(test) or getattr(test_image_records, test, None)
        assert callable(found), f"{code}: no test named {test}"


def test_every_ingested_image_is_read_by_the_shared_decoder(ingested):
    _, examples, _ = ingested
    for example in examples:
        pixels = image_ops.decode_and_resize(tf.constant(feature(example, "image_bytes")), 32)
        assert pixels.shape == (32, 32, 3), feature(example, "source")


def test_records_keep_bytes_as_stored_and_say_when_they_were_reencoded(ingested, messy):
    _, examples, _ = ingested
    by_source = {feature(e, "source").decode(): e for e in examples}
    rgb = by_source["cat/rgb.jpg"]
    original = (messy / "cat/rgb.jpg").read_bytes()
    assert feature(rgb, "image_bytes") == original
    assert feature(rgb, "sha256").decode() == hashlib.sha256(original).hexdigest()
    assert (feature(rgb, "format"), feature(rgb, "width"), feature(rgb, "height")) == (b"jpeg", 24, 16)
    assert feature(rgb, "label") == b"cat" and feature(rgb, "reencoded") == b""
    assert feature(by_source["cat/gray.png"], "channels") == 1
    assert feature(by_source["cat/alpha.png"], "channels") == 4
    for source, mode in (("dog/cmyk.jpg", "JPEG mode CMYK"), ("dog/sixteen.png", "PNG mode I;16")):
        example = by_source[source]
        assert feature(example, "reencoded").decode() == f"from {mode}"
        assert feature(example, "format") == b"png"
        assert Image.open(io.BytesIO(feature(example, "image_bytes"))).mode == "RGB"


def test_the_report_has_sizes_and_per_class_counts(ingested):
    report, _, out = ingested
    assert json.loads((out / "report" / ieg.REPORT_FILE).read_text()) == report
    assert report["sizes"]["width"] == {"min": 24, "p50": 24, "p95": 24, "max": 24}
    assert report["sizes"]["longer_side"]["<=32"] == 11
    assert sum(sum(s.values()) for s in report["per_class"].values()) == 11


def test_adding_images_never_moves_the_ones_already_there(messy, ingested, tmp_path):
    _, before, _ = ingested
    grown = tmp_path / "grown"
    shutil.copytree(messy, grown)
    for i in range(20):
        (grown / "dog" / f"new{i}.png").write_bytes(encode(noise("RGB", seed=100 + i), "PNG"))
    run_ingest(str(grown), tmp_path / "out")
    split_of = lambda out: {feature(e, "source"): p.parent.name  # noqa: E731
                            for p in sorted((out / "examples").glob("Split-*/*.gz"))
                            for e in read_examples_file(p)}
    after = split_of(tmp_path / "out")
    first = split_of(ingested[2])
    assert all(after[source] == split for source, split in first.items())
    assert len(after) == len(before) + 20


def read_examples_file(path: Path):
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]


def test_a_manifest_is_ingested_with_its_bad_rows_reported(messy, tmp_path):
    manifest = tmp_path / "images.csv"
    manifest.write_text(
        "uri,label\n"
        f"{messy}/cat/gray.png,cat\n"
        f"{messy}/dog/rgb.png,dog\n"
        f"{messy}/dog/empty.png,dog\n"
        f"{messy}/dog/gone.png,dog\n"
        ",dog\n")
    shutil.copy(messy / "cat/rgb.jpg", tmp_path / "relative.jpg")
    with manifest.open("a") as f:
        f.write("relative.jpg,cat\n")
    report = run_ingest(str(manifest), tmp_path / "out", allowed_roots=[str(messy)])
    assert report["ingested"] == 3 and report["classes"] == ["cat", "dog"]
    assert codes(report["quarantined"]) == {f"{messy}/dog/empty.png": Reason.EMPTY,
                                            f"{messy}/dog/gone.png": Reason.MISSING,
                                            "images.csv:6": Reason.BAD_MANIFEST_ROW}
    assert details(report["quarantined"])["images.csv:6"].startswith("needs both a uri and a label")


def test_hostile_manifest_rows_are_quarantined_unread_and_nothing_hangs(messy, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(messy / "cat/rgb.jpg", root / "ok.jpg")
    os.mkfifo(root / "pipe.png")  # opening it for reading would wait for a writer for ever
    os.symlink("loop-b.png", root / "loop-a.png")
    os.symlink("loop-a.png", root / "loop-b.png")
    os.symlink(messy / "cat/gray.png", root / "link-out.png")  # a link from inside the root to outside
    (root / "big.png").write_bytes(encode(noise("RGB", size=(64, 64), seed=30), "PNG"))
    manifest = root / "images.csv"
    manifest.write_text("uri,label\n" + "".join(f"{uri},cat\n" for uri in [
        "ok.jpg", "../../../../../../../../etc/passwd", "/dev/zero", str(messy / "dog/rgb.png"), "pipe.png",
        "loop-a.png", "link-out.png", "big.png", "/dev/zero"]))
    started = time.monotonic()
    report = run_ingest(str(manifest), tmp_path / "out", max_file_bytes=4000, allowed_roots=["/dev"])
    assert time.monotonic() - started < 120
    assert codes(report["quarantined"]) == {
        "images.csv:3": Reason.OUTSIDE_DATA_ROOT, "images.csv:5": Reason.OUTSIDE_DATA_ROOT,
        "images.csv:8": Reason.OUTSIDE_DATA_ROOT,  # the link resolves outside
        "/dev/zero": Reason.NOT_REGULAR_FILE, "pipe.png": Reason.NOT_REGULAR_FILE,
        "loop-a.png": Reason.SYMLINK_LOOP, "big.png": Reason.OVER_MAX_FILE_BYTES}
    said = details(report["quarantined"])
    assert said["images.csv:3"].startswith(f"{root}/../../../../../../../../etc/passwd (resolved: /etc/passwd)")
    assert "add its folder to data.allowed_roots" in said["images.csv:3"]
    assert said["images.csv:5"].startswith(str(messy / "dog/rgb.png"))
    assert said["/dev/zero"] == "/dev/zero is a character device; only image files are read"
    assert "is a FIFO" in said["pipe.png"]
    assert "(data.max_file_bytes)" in said["big.png"]
    assert report["ingested"] == 1


def test_symlinked_folders_that_loop_or_lead_out_are_not_followed(messy, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(messy / "cat", root / "cat")
    shutil.copytree(messy / "dog", root / "dog")
    os.symlink("..", root / "cat" / "up")  # a loop: cat/up/cat/up/...
    os.symlink("/", root / "dog" / "everything")  # the whole filesystem
    items, quarantined = ieg.list_images(str(root))
    assert codes(quarantined) == {"cat/up/": Reason.SYMLINK_LOOP, "dog/everything/": Reason.OUTSIDE_DATA_ROOT}
    assert not [shown for _, shown, _ in items if shown.startswith(("cat/up/", "dog/everything/"))]


def test_a_jsonl_manifest_and_its_malformed_lines(messy, tmp_path):
    manifest = tmp_path / "images.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"uri": str(messy / "cat/gray.png"), "label": "cat"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"uri": str(messy / "dog/rgb.png"), "label": "dog"}),
    ]) + "\n")
    items, quarantined = ieg.list_images(str(manifest), [str(messy)])
    assert [(shown, label) for _, shown, label in items] == [
        (str(messy / "cat/gray.png"), "cat"), (str(messy / "dog/rgb.png"), "dog")]
    assert codes(quarantined) == {"images.jsonl:2": Reason.BAD_MANIFEST_ROW,
                                  "images.jsonl:3": Reason.BAD_MANIFEST_ROW}
    assert "not valid JSON" in quarantined[0].detail


def test_a_csv_manifest_without_the_columns_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("image,name\na.png,cat\n")
    with pytest.raises(ValueError, match=r"line 1: the header needs columns uri and label; missing uri \(or path, "
                                         r"file\) and label \(or class\)"):
        ieg.list_images(str(tmp_path / "m.csv"))


def test_missing_data_names_the_path_and_both_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'} is neither a folder nor"):
        ieg.list_images(str(tmp_path / "nope"))


def configured_splits() -> list[tuple[str, float]]:
    from pipeline.config import load

    return list(load(None).data.splits.items())


def test_data_too_small_for_a_split_is_ingested_and_recorded_for_the_data_gate_to_stop(tmp_path):
    """One image cannot fill every split: ingestion finishes and keeps its report, naming the bad row,
    and the data gate's verdict stops the run on it (not an exception in ingestion, whose outputs a
    failed step loses)."""
    splits = configured_splits()
    names = [name for name, _ in splits]
    (tmp_path / "one.png").write_bytes(encode(noise("RGB", seed=77), "PNG"))
    (tmp_path / "images.csv").write_text("uri,label\none.png,cat\n,dog\n")
    report = ieg.ingest(beam.Pipeline(), str(tmp_path / "images.csv"), splits, str(tmp_path / "out" / "examples"),
                        str(tmp_path / "out" / "report"), max_pixels=50_000)
    assert json.loads((tmp_path / "out" / "report" / ieg.REPORT_FILE).read_text()) == report
    assert report["split_names"] == names and report["ingested"] == 1
    empty = [name for name in names if name not in report["splits"]]
    assert len(empty) == len(names) - 1
    for name in names:  # every split is there for the steps after ingestion, empty or not
        assert list((tmp_path / "out" / "examples" / f"Split-{name}").glob("*.gz")), name
    assert [(q["path"], q["code"], q["line"]) for q in report["quarantined"]] == [
        ("images.csv:3", "bad_manifest_row", 3)]
    verdict = judge(report, [], DataLimits(), None)
    assert not verdict["passed"]
    assert (f"split(s) {', '.join(empty)} got no images: 1 of 1 files ingested; quarantined: 1 bad_manifest_row; "
            "add images or change data.splits") in "\n".join(verdict["problems"])
    assert "manifest images.csv line 3: needs both a uri and a label, got uri='' label='dog'" in verdict["warnings"]


def test_a_manifest_whose_header_cannot_be_read_is_recorded_not_raised(tmp_path):
    splits = configured_splits()
    (tmp_path / "images.csv").write_text("\ufeffimage,label\none.png,cat\n")
    report = ieg.ingest(beam.Pipeline(), str(tmp_path / "images.csv"), splits, str(tmp_path / "examples"),
                        str(tmp_path / "report"), max_pixels=50_000)
    (entry,) = report["quarantined"]
    assert (entry["path"], entry["code"], entry["line"]) == ("images.csv:1", "bad_manifest_row", 1)
    assert entry["detail"].startswith("the header needs columns uri and label; missing uri (or path, file) "
                                      "(found ['image', 'label'])")
    verdict = judge(report, [], DataLimits(), None)
    assert f"split(s) {', '.join(name for name, _ in splits)} got no images" in verdict["problems"][0]
    assert verdict["warnings"][0].startswith("manifest images.csv line 1: the header needs columns uri and label")


def test_both_passes_log_their_progress_to_the_last_file(messy, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=ieg.__name__)
    report = run_ingest(str(messy), tmp_path)
    total = report["files_seen"]
    lines = [r.getMessage() for r in caplog.records if r.name == ieg.__name__]
    done = [line for line in lines if line.endswith("(100%)")]
    assert any(line.startswith(f"ImageExampleGen: checked {total} of {total} files") for line in done), lines
    assert any(line.startswith(f"ImageExampleGen: done {total} of {total} files") for line in done), lines


def test_progress_counts_across_copies_and_logs_at_most_every_interval(caplog):
    import pickle

    caplog.set_level(logging.INFO, logger=ieg.__name__)
    progress = ieg.Progress("checked", 5, every_s=3600)
    copies = [pickle.loads(pickle.dumps(progress)) for _ in range(2)]  # as Beam ships it to two workers
    for i in range(5):
        assert copies[i % 2](i) == i
    lines = [r.getMessage() for r in caplog.records if r.name == ieg.__name__]
    assert lines == ["ImageExampleGen: checked 5 of 5 files (100%)"]

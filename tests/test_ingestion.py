"""ImageExampleGen's per-file decisions: every file is ingested or quarantined with a reason."""

import hashlib
import io
import json

import pytest
from PIL import Image

from components import image_example_gen as ieg
from tests.conftest import png_bytes


def jpeg_bytes(mode="RGB", size=(20, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def data_root(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog" / "nested").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(png_bytes())
    (tmp_path / "cat" / "ÉTÉ.PNG").write_bytes(png_bytes(color=30))
    (tmp_path / "dog" / "nested" / "b.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "stray.png").write_bytes(png_bytes())
    return tmp_path


def test_list_images_labels_by_top_folder_and_reports_strays(data_root):
    files, quarantined = ieg.list_images(str(data_root))
    assert sorted(files) == [("cat/a.png", "cat"), ("cat/ÉTÉ.PNG", "cat"), ("dog/nested/b.jpg", "dog")]
    reasons = {q["path"]: q["reason"] for q in quarantined}
    assert reasons["empty/"].startswith("empty class folder")
    assert reasons["stray.png"].startswith("not in a class folder")


def test_list_images_names_a_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        ieg.list_images(str(tmp_path / "nope"))


def test_good_images_keep_their_bytes(data_root):
    record = ieg.inspect_image(str(data_root), "dog/nested/b.jpg", "dog", max_pixels=10_000)
    assert record["kind"] == "example"
    assert record["image_bytes"] == (data_root / "dog/nested/b.jpg").read_bytes()
    assert (record["format"], record["width"], record["height"], record["channels"]) == ("jpeg", 20, 10, 3)
    assert record["reencoded"] == ""


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, not an image", "not an image"),
    (png_bytes(size=(200, 200))[:80], "truncated or undecodable"),
    (png_bytes(size=(300, 300)), "too large: 300x300"),
])
def test_bad_files_are_quarantined_with_a_reason(tmp_path, content, reason):
    (tmp_path / "x.png").write_bytes(content)
    record = ieg.inspect_image(str(tmp_path), "x.png", "c", max_pixels=50_000)
    assert record["kind"] == "quarantine"
    assert record["reason"].startswith(reason)


def test_unsupported_formats_are_quarantined(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TIFF")
    (tmp_path / "x.tif").write_bytes(buffer.getvalue())
    record = ieg.inspect_image(str(tmp_path), "x.tif", "c", max_pixels=10_000)
    assert record["reason"].startswith("unsupported format TIFF")


def test_cmyk_jpeg_is_reencoded_and_says_so(tmp_path):
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(mode="CMYK"))
    record = ieg.inspect_image(str(tmp_path), "x.jpg", "c", max_pixels=10_000)
    assert record["kind"] == "example"
    assert record["format"] == "png" and record["reencoded"] == "from JPEG mode CMYK"
    assert Image.open(io.BytesIO(record["image_bytes"])).mode == "RGB"


def test_splits_follow_the_content_hash():
    splits = [("train", 0.8), ("eval", 0.2)]
    assert ieg.split_for("0" * 64, splits) == "train"
    assert ieg.split_for("f" * 64, splits) == "eval"
    assigned = [ieg.split_for(hashlib.sha256(str(i).encode()).hexdigest(), splits) for i in range(2000)]
    assert assigned.count("eval") / len(assigned) == pytest.approx(0.2, abs=0.03)


def test_duplicates_keep_one_and_conflicts_keep_none():
    same = [{"kind": "example", "path": p, "label": "cat", "sha256": "h"} for p in ("b.png", "a.png")]
    out = list(ieg.resolve_duplicates(("h", same)))
    assert out[0]["path"] == "a.png" and out[0]["kind"] == "example"
    assert out[1] == {"kind": "quarantine", "path": "b.png", "reason": "duplicate of a.png"}
    clash = [{"kind": "example", "path": "a.png", "label": "cat", "sha256": "h"},
             {"kind": "example", "path": "b.png", "label": "dog", "sha256": "h"}]
    out = list(ieg.resolve_duplicates(("h", clash)))
    assert all(r["kind"] == "quarantine" and "label conflict" in r["reason"] for r in out)


def test_report_counts_and_usability():
    lines = [{"kind": "example", "split": "train", "label": "cat"},
             {"kind": "example", "split": "eval", "label": "dog"},
             {"kind": "quarantine", "path": "x.png", "reason": "empty file"}]
    report = ieg.build_report(lines, [{"path": "empty/", "reason": "empty class folder"}])
    assert report["ingested"] == 2 and report["splits"] == {"eval": 1, "train": 1}
    assert report["per_class"] == {"cat": {"train": 1}, "dog": {"eval": 1}}
    assert [q["path"] for q in report["quarantined"]] == ["empty/", "x.png"]
    json.dumps(report)
    ieg.check_usable(report, ["train", "eval"])
    with pytest.raises(ValueError, match="split 'test' got no images"):
        ieg.check_usable(report, ["train", "eval", "test"])
    with pytest.raises(ValueError, match="at least 2 class folders"):
        ieg.check_usable({**report, "classes": ["cat"]}, ["train"])

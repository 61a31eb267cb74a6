"""Ingestion reuses the last ingestion's examples for unchanged files, and its output is exactly a full
ingestion's: the same serialized examples per split and the same report, after files were added (one a copy
of an old one), modified in place at the same size, deleted, and moved to another class. Also: what must make
it read everything again (settings, data.rehash, a file just written, examples gone or damaged)."""

import gc
import hashlib
import json
import logging
import os
import shutil
import tracemalloc
import zlib
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from components.ingest import image_example_gen as ieg
from components.ingest import image_records, reuse

from tests.support.images import encode, noise

SPLITS = [("train", 0.6), ("validation", 0.2), ("test", 0.2)]


@pytest.fixture
def no_racy_window(monkeypatch):
    """The files here are written a moment before they are ingested; a user's are older than the window."""
    monkeypatch.setattr(image_records, "RACY_NS", 0)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_data(root: Path) -> None:
    for i in range(30):
        label = ("cat", "dog", "fox")[i % 3]
        fmt, ext = (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"))[i % 3]
        write(root / label / f"{i:03d}.{ext}", encode(noise("RGB", seed=100 + i), fmt))
    write(root / "dog" / "copy-of-000.png", (root / "cat" / "000.png").read_bytes())  # a label conflict
    write(root / "cat" / "notes.jpg", b"not pixels\n")
    write(root / "fox" / "cmyk.jpg", encode(noise("CMYK", seed=7), "JPEG"))  # re-encoded as PNG


def run(data: Path, out: Path, pipeline_root: Path | None, **kwargs) -> dict:
    return ieg.ingest(beam.Pipeline(), str(data), SPLITS, str(out / "examples"), str(out / "report"),
                      max_pixels=50_000_000, pipeline_root=str(pipeline_root) if pipeline_root else None, **kwargs)


def examples(out: Path) -> dict[str, list[bytes]]:
    """Every split's serialized records, sorted (their order in the files is Beam's)."""
    found = {}
    for name, _ in SPLITS:
        files = tf.io.gfile.glob(str(out / "examples" / f"Split-{name}" / "*.gz"))
        found[name] = sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    return found


def sha256s(records: dict[str, list[bytes]]) -> dict[str, list[str]]:
    return {name: sorted(reuse.example_fields(r, ["sha256"])["sha256"].decode() for r in rs)
            for name, rs in records.items()}


def without_reuse(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "reuse"}


def change(data: Path) -> None:
    """5 new files (one a copy of an old one), one BMP rewritten in place at its size with a new mtime,
    one deleted, one moved to another class."""
    for i in range(4):
        write(data / "cat" / f"new-{i}.png", encode(noise("RGB", seed=500 + i), "PNG"))
    write(data / "fox" / "new-copy-of-001.jpg", (data / "dog" / "001.jpg").read_bytes())  # a conflict with 001
    bmp = data / "fox" / "002.bmp"
    before, stat = bmp.read_bytes(), bmp.stat()
    rewritten = encode(noise("RGB", seed=999), "BMP")
    assert len(rewritten) == len(before) and rewritten != before
    bmp.write_bytes(rewritten)
    os.utime(bmp, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3_000_000_000))
    (data / "cat" / "003.png").unlink()
    (data / "cat" / "006.png").rename(data / "dog" / "006.png")


def test_a_reusing_run_gives_exactly_what_a_full_ingestion_gives(tmp_path, no_racy_window):
    data, root = tmp_path / "data", tmp_path / "root"
    make_data(data)
    first = run(data, root / "first", root)
    assert first["reuse"]["reused"] == 0 and first["ingested"] == 30
    change(data)

    again = run(data, root / "again", root)
    scratch = run(data, tmp_path / "scratch", None)

    assert without_reuse(again) == without_reuse(scratch)
    assert again["quarantined_by_code"] == {"label_conflict": 4, "not_an_image": 1}
    got, want = examples(root / "again"), examples(tmp_path / "scratch")
    assert sha256s(got) == sha256s(want)
    assert got == want  # byte for byte: the copied records are those the full path makes
    assert sum(map(len, got.values())) == again["ingested"] == 30 + 4 - 1 - 1  # dog/001 now a conflict
    # Reused: the files the first run ingested (30), less the rewritten, deleted and moved ones; read: the
    # other 10 of 37 (the 5 new, the rewritten, the moved, and the 3 the first run quarantined).
    assert again["reuse"]["reused"] == 27 and again["reuse"]["read"] == 10
    assert scratch["reuse"]["reused"] == 0


def test_a_relabelled_manifest_row_is_ingested_again(tmp_path, no_racy_window):
    data, root = tmp_path / "data", tmp_path / "root"
    make_data(data)
    rows = [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.glob("*/*"))]
    manifest = data / "images.csv"
    manifest.write_text("uri,label\n" + "\n".join(rows) + "\n")
    run(manifest, root / "first", root)
    relabelled = {"cat/003.png,cat": "cat/003.png,dog", "fox/005.bmp,fox": "fox/005.bmp,cat"}
    assert set(relabelled) <= set(rows)
    manifest.write_text("uri,label\n" + "\n".join(relabelled.get(r, r) for r in rows) + "\n")
    again = run(manifest, root / "again", root)
    scratch = run(manifest, tmp_path / "scratch", None)
    assert without_reuse(again) == without_reuse(scratch)
    assert examples(root / "again") == examples(tmp_path / "scratch")
    assert again["reuse"]["read"] == 5  # the two relabelled rows, and the three files quarantined before


def test_files_read_again_when_settings_change_rehash_is_asked_or_they_were_just_written(tmp_path,
                                                                                           monkeypatch):
    data, root = tmp_path / "data", tmp_path / "root"
    make_data(data)
    # Within the racy window: no file's times are trusted. An hour's window, so a first run slowed past 2 s
    # by a loaded machine cannot trust them (it did: 30 reused, under the load of two other jobs).
    monkeypatch.setattr(image_records, "RACY_NS", 3600 * 10**9)
    first = run(data, root / "first", root)
    assert first["reuse"]["reused"] == 0
    assert run(data, root / "racy", root)["reuse"]["reused"] == 0
    monkeypatch.setattr(image_records, "RACY_NS", 0)
    run(data, root / "trusted", root)
    assert run(data, root / "reused", root)["reuse"]["reused"] == 30
    assert run(data, root / "rehash", root, rehash=True)["reuse"]["reused"] == 0
    stricter = ieg.ingest(beam.Pipeline(), str(data), SPLITS, str(root / "strict" / "examples"),
                          str(root / "strict" / "report"), max_pixels=50_000_000, min_side=17, pipeline_root=str(root))
    assert stricter["reuse"]["reused"] == 0 and "limits" in stricter["reuse"]["why"]
    assert stricter["ingested"] == 0 and stricter["quarantined_by_code"]["too_small"] == 32  # all 24x16


@pytest.mark.parametrize("damage, said", [("delete", "cannot be read"), ("truncate", "not the"),
                                          ("flip", "checksum")])
def test_examples_gone_or_damaged_mean_full_ingestion_with_a_warning(tmp_path, no_racy_window, caplog, damage,
                                                                      said):
    data, root = tmp_path / "data", tmp_path / "root"
    make_data(data)
    run(data, root / "first", root)
    shard = sorted((root / "first" / "examples" / "Split-train").glob("*.gz"))[0]
    if damage == "delete":
        shard.unlink()
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:  # the same size, a byte changed: the gzip stream's checksum (or the record's) stops the reader
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    change(data)
    with caplog.at_level(logging.WARNING):
        again = run(data, root / "again", root)
    scratch = run(data, tmp_path / "scratch", None)
    assert str(root / "first" / "examples") in caplog.text and said in caplog.text, caplog.text
    assert again["reuse"]["reused"] == 0
    assert without_reuse(again) == without_reuse(scratch)
    assert examples(root / "again") == examples(tmp_path / "scratch")


def test_a_record_found_once_per_reused_file_or_the_run_ingests_everything(tmp_path, no_racy_window, caplog):
    """A shard of the last examples emptied but recorded at its new size: fewer records than files reused."""
    data, root = tmp_path / "data", tmp_path / "root"
    make_data(data)
    run(data, root / "first", root)
    shard = sorted((root / "first" / "examples" / "Split-train").glob("*.gz"))[0]
    record_file = root / "first" / "report" / reuse.RECORD_FILE
    shutil.copy(sorted((root / "first" / "examples" / "Split-test").glob("*.gz"))[0], shard)  # test's records
    record = json.loads(record_file.read_text())
    for s in record["shards"]:
        s["size"] = os.path.getsize(root / "first" / "examples" / s["file"])
    record_file.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        again = run(data, root / "again", root)
    assert "distinct of" in caplog.text and again["reuse"]["reused"] == 0
    scratch = run(data, tmp_path / "scratch", None)
    assert without_reuse(again) == without_reuse(scratch)
    assert examples(root / "again") == examples(tmp_path / "scratch")


def test_example_fields_reads_what_tensorflow_parses():
    record = {"image_bytes": bytes(range(256)) * 700, "label": "été", "height": 3, "width": -1, "channels": 3,
              "format": "png", "path": "a/b.png", "sha256": "ab" * 32, "reencoded": ""}
    serialized = image_records.to_example(record)
    parsed = tf.train.Example.FromString(serialized).features.feature
    fields = reuse.example_fields(serialized, ["source", "label", "sha256", "image_bytes", "reencoded"])
    assert fields == {key: parsed[key].bytes_list.value[0]
                      for key in ("source", "label", "sha256", "image_bytes", "reencoded")}


class FakeStore(FileSystem):
    """A Beam file system that is not local (``thawfake://``), taken by FileSystems exactly as gs:// and s3://
    are; ``match`` is Beam's own, so ``[1]`` in a name is a pattern to it as it is on GCS. Counts requests."""

    objects: dict[str, tuple[int, float]] = {}  # path -> (size, last updated in seconds)
    requests: list[str] = []

    @classmethod
    def scheme(cls):
        return "thawfake"

    def has_dirs(self):
        return False

    def _list(self, prefix):
        FakeStore.requests.append("list")
        return [FileMetadata(p, size, t) for p, (size, t) in sorted(self.objects.items()) if p.startswith(prefix)]

    def exists(self, path):
        FakeStore.requests.append("exists")
        return path in self.objects

    def metadata(self, path):
        FakeStore.requests.append("metadata")
        if path not in self.objects:
            raise BeamIOError("Metadata operation failed", {path: FileNotFoundError(path)})
        return FileMetadata(path, *self.objects[path])

    def _unused(self, *args, **kwargs):
        raise NotImplementedError

    join = split = mkdirs = create = open = copy = rename = size = last_updated = delete = _unused


def test_a_remote_name_with_glob_characters_is_stated_as_itself_in_one_request(monkeypatch):
    monkeypatch.setattr(FakeStore, "objects", {"thawfake://b/cat/photo [1].jpg": (5, 100.0),
                                               "thawfake://b/cat/photo 1.jpg": (9, 200.0)})
    monkeypatch.setattr(FakeStore, "requests", [])
    assert FileSystems.get_filesystem("thawfake://b/x") is not None  # the same lookup gs:// goes through
    assert image_records.file_state("thawfake://b/cat/photo [1].jpg") == {"size": 5, "mtime_ns": 100_000_000_000}
    assert FakeStore.requests == ["metadata"]  # one request per stat, not exists() + metadata() or a listing
    with pytest.raises(BeamIOError):  # gone: not another file's state
        image_records.file_state("thawfake://b/cat/photo [2].jpg")


def test_the_checks_hold_the_library_versions_that_decide_the_bytes(tmp_path, no_racy_window, monkeypatch):
    import PIL

    base = reuse.checks(50_000_000, 1, 64 << 20)
    for module, name in ((PIL, "__version__"), (zlib, "ZLIB_RUNTIME_VERSION")):
        with monkeypatch.context() as m:
            m.setattr(module, name, "0.0-another-build")
            assert reuse.checks(50_000_000, 1, 64 << 20) != base, name
    data, root = tmp_path / "data", tmp_path / "root"
    make_data(data)
    run(data, root / "first", root)
    monkeypatch.setattr(PIL, "__version__", "0.0-another-build")  # a new container image: read everything
    again = run(data, root / "again", root)
    assert again["reuse"]["reused"] == 0 and "libraries" in again["reuse"]["why"]


def test_a_reuse_record_that_is_not_what_it_should_be_is_skipped_with_a_warning(tmp_path, caplog):
    good = {"checks": reuse.checks(1, 1, 1), "made_at": 5.0}
    bad = {"list": [1, 2], "checks_text": {"checks": "x"}, "made_at_text": {**good, "made_at": "yesterday"},
           "null": None}
    for name, record in {"good": good, **bad}.items():
        write(tmp_path / name / reuse.RECORD_FILE, json.dumps(record).encode())
    with caplog.at_level(logging.WARNING):
        assert reuse.latest_record(str(tmp_path)) == str(tmp_path / "good")
    for name in bad:
        assert str(tmp_path / name / reuse.RECORD_FILE) in caplog.text, name


def unchanged_record(tmp_path: Path, n: int) -> tuple[list, Path, dict]:
    """``n`` local files and an ingestion record under a pipeline root listing each one as unchanged."""
    data, report = tmp_path / "data", tmp_path / "root" / "report"
    shard = tmp_path / "root" / "examples" / "Split-train" / "data-00000.gz"
    write(shard, b"\0" * 10)
    items, lines = [], []
    for i in range(n):
        shown = f"cat/IMG_{hashlib.md5(str(i).encode()).hexdigest()[:12]}.jpg"
        write(data / shown, b"x" * (i % 97 + 1))
        items.append((str(data / shown), shown, "cat"))
        lines.append(json.dumps({"kind": "example", "split": "train", "uri": items[-1][0], "path": shown,
                                 "label": "cat", "sha256": hashlib.sha256(shown.encode()).hexdigest(),
                                 "width": 640, "height": 480, **image_records.file_state(items[-1][0])}))
    write(report / "outcomes" / "part-00000.jsonl", ("\n".join(lines) + "\n").encode())
    checks = reuse.checks(50_000_000, 1, 64 << 20)
    write(report / reuse.RECORD_FILE, json.dumps({
        "checks": checks, "examples": str(shard.parent.parent), "made_at": 1.0,
        "shards": [{"file": "Split-train/data-00000.gz", "size": 10}]}).encode())
    return items, tmp_path / "root", checks


def test_reuse_keeps_little_per_file_in_the_driver_and_in_the_pipeline_graph(tmp_path):
    """Before: ~0.9 KB a file held by the plan, and a dict per reused file pickled into the graph."""
    n = 2000
    items, root, checks = unchanged_record(tmp_path, n)
    reuse.plan(items[:5], str(root), checks)  # imports, caches
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        plan = reuse.plan(items, str(root), checks)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(plan.reused) == n, plan.why
    assert held / n < 300, held / n

    class NotRun(beam.Pipeline):
        def run(self, test_runner_api="AUTO"):
            return type("Done", (), {"wait_until_finish": lambda self: None})()

    sizes = []
    for the_plan in (reuse.Plan(list(items)), plan):  # every file read / every file reused
        p = NotRun()
        ieg._run(p, the_plan, SPLITS, str(tmp_path / "e"), str(tmp_path / "r"), 50_000_000, 1, 64 << 20)
        sizes.append(len(p.to_runner_api().SerializeToString()))
    # The reused files' tuples against the fresh ones' (uri, path, label); a hash and a few numbers more.
    assert (sizes[1] - sizes[0]) / n < 100, sizes

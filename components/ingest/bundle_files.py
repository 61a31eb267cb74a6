"""Ingestion's one writer: every file of a bundle (its examples, one gzipped TFRecord file per split, and its
outcome lines), named when the bundle ends and moved to its final name once every bundle has.

Ingestion used Beam's file sinks, one per split and one for the report's outcomes. Each is a composite of
about eight steps with side inputs, and each step costs Beam a share of its fixed cost per run: the four
sinks were about 40 of the pipeline's 85 steps, and its fixed cost was as large as the work of about 400
images on two cores (bench.ingestion). Here the steps that make the records write them, and two more commit
them, as the sinks do:

- ``BundleFiles`` holds one bundle's files in a temporary folder, each opened when first written to.
  ``BundleWriter`` (and ImageExampleGen's ``IngestFiles``, which writes an image's example as it checks
  it) closes them when the bundle ends and names them in one output;
- ``drop_records`` rewrites a file without the copies found after it was written (usually none);
- ``commit``, once after every bundle (a group on one key) and every ``drop_records``, moves the files that
  bundles which succeeded named to the names Beam's sinks give
  (``Split-<name>/data_tfrecord-00000-of-00002.gz``, ``outcomes/part-00000-of-00001.jsonl``), and removes
  the temporary folder, with whatever a failed and retried bundle left there. A split that no bundle wrote
  gets one empty file, as from Beam's sink; when no bundle ran at all, the driver calls ``commit`` itself
  (``finish``). A retried commit skips the moves done already.

Files go through Beam's FileSystems (local paths, mounted volumes, gs://, s3://): no TensorFlow in workers.
"""

import uuid
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window

from components.ingest.tfrecord_files import GzipWriter

SPLIT_PREFIX = "Split-"
EXAMPLES_FILE = "data_tfrecord"  # the prefix Beam's WriteToTFRecord and TFX's ExampleGen give
OUTCOMES_DIR = "outcomes"
_OUTCOMES = "outcomes"  # the key of a bundle's outcome file (split keys are "Split-<name>")

FILES = "files"  # the tagged output in which a writing step names its bundle's files

# One element for ``BundleWriter``: (split name, serialized tf.Example) to write, or (None, None); and an
# outcome line for the report, or None.
Written = tuple[Optional[str], Optional[bytes], Optional[str]]


def temp_dir(examples_dir: str) -> str:
    """A fresh temporary folder inside the Examples artifact, which no reader of its splits globs."""
    return FileSystems.join(examples_dir, f".writing-{uuid.uuid4().hex}")


def _create(path: str, level: int):
    """A new file for writing: a gzip stream at ``level`` for a ``.gz`` path, else the file itself."""
    raw = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)  # the gzip stream is ours
    return GzipWriter(raw, level) if path.endswith(".gz") else raw


class BundleFiles:
    """The files of one bundle in the temporary folder, each opened when first written to."""

    def __init__(self, temp: str, level: int):
        self.temp, self.level = temp, level
        self._files: dict = {}

    def _open(self, key: str, suffix: str) -> tuple[str, object]:
        if key not in self._files:
            path = FileSystems.join(self.temp, f"{key}-{uuid.uuid4().hex}{suffix}")
            self._files[key] = (path, _create(path, self.level))
        return self._files[key]

    def example(self, split: str, serialized: bytes) -> str:
        """Writes a record into the split's file; returns that file's (temporary) path."""
        path, out = self._open(SPLIT_PREFIX + split, ".gz")
        out.write_record(serialized)
        return path

    def line(self, text: str) -> None:
        self._open(_OUTCOMES, ".jsonl")[1].write(text.encode("utf-8") + b"\n")

    def close(self) -> list[tuple[str, str]]:
        """Closes every file; (key, temporary path) of each."""
        named = [(key, path) for key, (path, _) in self._files.items()]
        for _, handle in self._files.values():
            handle.close()
        self._files = {}
        return named


class BundleWriter(beam.DoFn):
    """Writes each element (``Written``) into this bundle's files; when the bundle ends, outputs
    ``(0, [(key, temporary path), ...])``, in the ``FILES`` output when ``tagged`` (a subclass that
    outputs elements of its own), else as its only output."""

    def __init__(self, temp: str, level: int, tagged: bool = False):
        self.temp, self.level, self.tagged = temp, level, tagged
        self.files: Optional[BundleFiles] = None

    def start_bundle(self):
        self.files = BundleFiles(self.temp, self.level)

    def process(self, element: Written):
        split, example, line = element
        if example is not None:
            self.files.example(split, example)
        if line is not None:
            self.files.line(line)

    def finish_bundle(self):
        named = self.files.close()
        if named:
            value = window.GlobalWindows.windowed_value((0, named))
            yield beam.pvalue.TaggedOutput(FILES, value) if self.tagged else value


def drop_records(group: tuple[str, Iterable[str]], level: int) -> str:
    """Rewrites one temporary examples file without the records of ``paths`` (copies found after they
    were written: matched by the example's ``source``); returns the file. Run again, it drops nothing more."""
    from components.ingest.reuse import example_fields
    from components.ingest.tfrecord_files import read_records

    path, paths = group
    paths = set(paths)
    kept = f"{path}.kept"
    out = GzipWriter(FileSystems.create(kept, compression_type=CompressionTypes.UNCOMPRESSED), level)
    for record in read_records(path):
        if example_fields(record, ("source",)).get("source", b"").decode("utf-8") not in paths:
            out.write_record(record)
    out.close()
    FileSystems.rename([kept], [path])
    return path


def _targets(files: Iterable[tuple[str, str]], examples_dir: str, report_dir: str,
             split_names: list[str]) -> list[tuple[Optional[str], str]]:
    """(temporary path or None for an empty file, final path) of every output file, numbered per folder."""
    by_key: dict[str, list[str]] = {}
    for key, path in files:
        by_key.setdefault(key, []).append(path)
    folders = [(SPLIT_PREFIX + name, FileSystems.join(examples_dir, SPLIT_PREFIX + name), EXAMPLES_FILE, ".gz")
               for name in split_names] + [(_OUTCOMES, FileSystems.join(report_dir, OUTCOMES_DIR), "part", ".jsonl")]
    targets = []
    for key, folder, prefix, suffix in folders:
        paths = sorted(by_key.get(key, [])) or [None]
        for number, path in enumerate(paths):
            targets.append((path, FileSystems.join(folder, f"{prefix}-{number:05d}-of-{len(paths):05d}{suffix}")))
    return targets


def commit(group: tuple[int, Iterable[list]], temp: str, examples_dir: str, report_dir: str,
           split_names: list[str], level: int, after: Iterable = ()) -> None:
    """Moves the files the bundles named to their final names, writes an empty file where none was, and
    removes the temporary folder. ``after``: a side input that makes this step wait (``drop_records``)."""
    _, bundles = group
    for source, target in _targets((f for files in bundles for f in files), examples_dir, report_dir, split_names):
        folder = target.rsplit("/", 1)[0]
        if not FileSystems.exists(folder):
            FileSystems.mkdirs(folder)
        if source is None:
            if not FileSystems.exists(target):
                _create(target, level).close()
        elif FileSystems.exists(source):
            FileSystems.rename([source], [target])
        elif not FileSystems.exists(target):  # neither moved before (a retried commit) nor there to move
            raise FileNotFoundError(f"{source}: a file a bundle wrote is gone before it was committed as {target}")
    _remove(temp)


def _remove(folder: str) -> None:
    """The folder and its files, on any store (an object store has files under a prefix, not folders)."""
    leftover = [m.path for found in FileSystems.match([FileSystems.join(folder, "*")]) for m in found.metadata_list]
    if leftover:
        FileSystems.delete(leftover)
    if FileSystems.exists(folder):
        FileSystems.delete([folder])


def finish(temp: str, examples_dir: str, report_dir: str, split_names: list[str], level: int) -> None:
    """After the pipeline: when no bundle wrote anything (nothing to ingest), ``commit`` did not run (it
    always leaves an outcomes file); run it here, so every split and the outcomes have their (empty) file."""
    if not FileSystems.match([FileSystems.join(report_dir, OUTCOMES_DIR, "part-*")])[0].metadata_list:
        commit((0, []), temp, examples_dir, report_dir, split_names, level)


def discard(temp: str) -> None:
    """After a failed pipeline: what its bundles wrote is removed (the outputs already committed are the
    caller's to remove)."""
    try:
        _remove(temp)
    except Exception:  # noqa: BLE001 (cleaning up must not hide the failure being handled)
        pass

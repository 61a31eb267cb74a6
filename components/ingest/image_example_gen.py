"""ImageExampleGen: image folders or a manifest of images -> tf.Examples.

No stock ExampleGen reads images, so this is ours. It accounts for every file:
each one is either ingested as one tf.Example (the encoded bytes as stored, the
label, its size and format, where it came from, a content hash) or quarantined
with a reason code and its detail (``quarantine.py``), listed in the report
artifact. Splits are assigned by a hash of each image's content, so adding
images never reshuffles the ones already there.

It runs as a Beam pipeline that reads each file once, so memory stays flat
however many images there are: each worker checks a file and writes its
tf.Example into its bundle's file of the split at once, and only a small record
of it (hash, path, label, size) goes on, to find copies of the same content;
copies found are then removed from the files they were written to, usually
none. No image's bytes are ever held for a grouping or shipped between workers.
A file unchanged since the last ingestion is not read at all: its tf.Example is
copied from that run's examples (``reuse.py``). Every file is written by
``bundle_files.py``, committed to its final name once every bundle has ended.

Long because it holds the listing of folders and manifests, the report, and
the Beam pipeline with its fallback from reuse to full ingestion together.
"""

import array
import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from typing import Iterable, Optional

import apache_beam as beam
import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.ingest import bundle_files, image_records, reuse, tfrecord_files
from components.artifacts import IngestionReport, write_json
from components.ingest.image_records import Item
from components.ingest.manifest import ManifestError, read_rows
from components.ingest.quarantine import Quarantined, Reason, count_by_code
from components.ingest.run_parameters import check_run_parameters

MANIFEST_SUFFIXES = (".csv", ".jsonl")
REPORT_FILE = "ingestion_report.json"
_SPLIT_PREFIX = bundle_files.SPLIT_PREFIX
_SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)
# The Examples' gzip deflate level: stored, since image files are compressed already (tfrecord_files.py).
EXAMPLES_DEFLATE_LEVEL = tfrecord_files.STORED
# Up to this many files of the last examples are read in one step, not spread over workers first: every
# stage costs Beam a fixed share (on the FnApiRunner ~30 ms each in a process with TensorFlow imported).
_SHARDS_READ_IN_ONE = 8
log = logging.getLogger(__name__)


class Progress:
    """A pass-through Beam step that logs how many of ``total`` files a pass has done.

    Every copy Beam makes of it (a pickle per worker thread) counts into one
    shared counter per process, and logs at most every ``every_s`` seconds and
    at the end; a run on several worker processes logs each process's share.
    """

    _counts: dict[str, int] = {}
    _last: dict[str, float] = {}
    _lock = threading.Lock()

    def __init__(self, what: str, total: int, every_s: float = 10.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.key = uuid.uuid4().hex

    def around(self, fn):
        """``fn``, counting each element it is called on."""
        def counted(element, *args, **kwargs):
            result = fn(element, *args, **kwargs)
            self(element)
            return result
        return counted

    def __call__(self, element):
        with Progress._lock:
            count = Progress._counts.get(self.key, 0) + 1
            Progress._counts[self.key] = count
            now = time.monotonic()
            due = now - Progress._last.get(self.key, now - self.every_s / 2) >= self.every_s
            if due or count == self.total:
                Progress._last[self.key] = now
                log.info("ImageExampleGen: %s %d of %d files (%d%%)", self.what, count, self.total,
                         100 * count // max(1, self.total))
        return element



class RootGuard:
    """Where ingestion may read: the data root (a manifest's folder) and data.allowed_roots.

    A manifest row or a symlink under a class folder can name any path; a file
    outside these roots (``../../etc/shadow``, a link to ``/``) is quarantined
    unread, with the reason and the setting that would allow it.
    """

    def __init__(self, data_root: str, allowed: Iterable[str] = ()):
        roots = [data_root, *allowed]
        self.shown = ", ".join(roots)
        self.local = [os.path.realpath(r) for r in roots if "://" not in r]
        self.remote = [r.rstrip("/") + "/" for r in roots if "://" in r]

    def inside(self, path: str) -> bool:
        if "://" in path:
            return any(path.startswith(r) for r in self.remote)
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.local)

    def refuse(self, shown: str, path: str) -> Quarantined:
        where = path if "://" in path else f"{path} (resolved: {os.path.realpath(path)})"
        return Quarantined(shown, Reason.OUTSIDE_DATA_ROOT, f"{where} is not under {self.shown}; add its "
                                                            "folder to data.allowed_roots if it should be read")


def _walk(top: str, guard: RootGuard, data_root: str,
          quarantined: list[Quarantined]) -> Iterable[tuple[str, list[str]]]:
    """(folder, file names) under ``top``. Local symlinked folders are followed once each, and
    not at all when they lead out of the roots or back into a folder already walked (a loop)."""
    if "://" in top:
        yield from ((d, files) for d, _, files in tf.io.gfile.walk(top))
        return
    seen = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        here = os.path.realpath(dirpath)
        seen.add(here)
        for name in list(dirnames):
            path = os.path.join(dirpath, name)
            real, shown = os.path.realpath(path), os.path.relpath(path, data_root) + "/"
            if not guard.inside(path):
                quarantined.append(guard.refuse(shown, path))
            elif real in seen or here.startswith(real.rstrip(os.sep) + os.sep):
                quarantined.append(Quarantined(shown, Reason.SYMLINK_LOOP,
                                               f"it leads back to {real}, which is read already"))
            else:
                continue
            dirnames.remove(name)
        yield dirpath, filenames


def list_folder(data_root: str, allowed_roots: Iterable[str] = ()) -> tuple[list[Item], list[Quarantined]]:
    """Items of a folder of class-named subfolders; the label is the top-level folder's name.

    Files directly under the root belong to no class and empty class folders
    hold no image: both are reported, never silently skipped.
    """
    guard = RootGuard(data_root, allowed_roots)
    items: list[Item] = []
    quarantined: list[Quarantined] = []
    for entry in sorted(tf.io.gfile.listdir(data_root)):
        name = entry.rstrip("/")
        path = os.path.join(data_root, name)
        if not tf.io.gfile.isdir(path):
            quarantined.append(Quarantined(name, Reason.NOT_IN_CLASS_FOLDER,
                                           "move it into a subfolder named after its class"))
            continue
        if not guard.inside(path):
            quarantined.append(guard.refuse(name + "/", path))
            continue
        found = 0
        for dirpath, filenames in _walk(path, guard, data_root, quarantined):
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                shown = os.path.relpath(full, data_root)
                if guard.inside(full) or not os.path.exists(full):  # a dangling link is reported as missing
                    items.append((full, shown, name))
                else:
                    quarantined.append(guard.refuse(shown, full))
                found += 1
        if not found:
            quarantined.append(Quarantined(name + "/", Reason.EMPTY_CLASS_FOLDER))
    return items, quarantined


def list_manifest(manifest: str, allowed_roots: Iterable[str] = ()) -> tuple[list[Item], list[Quarantined]]:
    """Items of a CSV (header uri,label) or JSONL ({"uri": ..., "label": ...}) manifest.

    What is read as written by spreadsheets and scripts, and what is refused,
    is in ``manifest.py``. Relative uris are read from the manifest's folder,
    the data root; a uri outside it and data.allowed_roots, and a row that
    cannot be read, are reported with the row's line number. A header that
    cannot be read raises ManifestError.
    """
    base = os.path.dirname(manifest)
    name = os.path.basename(manifest)
    guard = RootGuard(base, allowed_roots)
    items: list[Item] = []
    quarantined: list[Quarantined] = []
    with tf.io.gfile.GFile(manifest) as f:
        for number, uri, label, problem in read_rows(manifest, f):
            if problem:
                quarantined.append(Quarantined(f"{name}:{number}", Reason.BAD_MANIFEST_ROW, problem, number))
                continue
            full = uri if "://" in uri or os.path.isabs(uri) else os.path.join(base, uri)
            if guard.inside(full):
                items.append((full, uri, label))
            else:
                quarantined.append(dataclasses.replace(guard.refuse(f"{name}:{number}", full), line=number))
    return items, quarantined


def list_images(data: str, allowed_roots: Iterable[str] = ()) -> tuple[list[Item], list[Quarantined]]:
    """Everything to ingest from ``data``: a folder of class folders, or a manifest file."""
    if data.endswith(MANIFEST_SUFFIXES) and tf.io.gfile.exists(data) and not tf.io.gfile.isdir(data):
        return list_manifest(data, allowed_roots)
    if not tf.io.gfile.isdir(data):
        raise FileNotFoundError(
            f"data {data} is neither a folder nor a .csv/.jsonl manifest: point data.root (or --data) "
            "at a folder with one subfolder of images per class, or at a manifest of uri,label rows")
    return list_folder(data, allowed_roots)


def _percentiles(values) -> dict[str, int]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"min": ordered[0], "p50": pick(0.5), "p95": pick(0.95), "max": ordered[-1]} if ordered else {}


def _size_histogram(sides: list[int]) -> dict[str, int]:
    histogram = {f"<={b}": 0 for b in _SIZE_BUCKETS}
    histogram[f">{_SIZE_BUCKETS[-1]}"] = 0
    for side in sides:
        key = next((f"<={b}" for b in _SIZE_BUCKETS if side <= b), f">{_SIZE_BUCKETS[-1]}")
        histogram[key] += 1
    return histogram


def _read_outcomes(outcome_dir: str) -> Iterable[dict]:
    """The per-file outcomes the pipeline wrote, one at a time."""
    for path in tf.io.gfile.glob(os.path.join(outcome_dir, "part*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def build_report(lines: Iterable[dict], listing_quarantine: list[Quarantined], files_seen: int) -> dict:
    """Folds per-file outcomes into the counts a person and later stages read.

    It streams the outcomes: what it keeps per ingested image is two integers
    (for the size percentiles); only quarantined files are listed in full.
    """
    per_split: dict[str, int] = {}
    per_class: dict[str, dict[str, int]] = {}
    widths, heights = array.array("I"), array.array("I")
    quarantined = list(listing_quarantine)
    labels = set()
    for line in lines:
        if line["kind"] == reuse.FOUND:  # a copied tf.Example, counted by ingestion's check, not here
            continue
        if line["kind"] == "quarantine":
            quarantined.append(Quarantined(line["path"], Reason(line["code"]), line["detail"]))
            labels.add(line.get("label", ""))
            continue
        per_split[line["split"]] = per_split.get(line["split"], 0) + 1
        counts = per_class.setdefault(line["label"], {})
        counts[line["split"]] = counts.get(line["split"], 0) + 1
        widths.append(line["width"])
        heights.append(line["height"])
    quarantined.sort(key=lambda q: q.path)
    return {
        "classes": sorted(per_class),
        "ingested": sum(per_split.values()),
        "files_seen": files_seen,
        "splits": dict(sorted(per_split.items())),
        "per_class": dict(sorted(per_class.items())),
        "sizes": {
            "width": _percentiles(widths),
            "height": _percentiles(heights),
            "longer_side": _size_histogram([max(w, h) for w, h in zip(widths, heights)]),
        },
        "quarantined": [q.to_json() for q in quarantined],
        "quarantined_by_code": count_by_code(quarantined),
        # Classes every one of whose files was quarantined: no image to learn them from.
        "classes_without_images": sorted(labels - set(per_class) - {""}),
    }


def ingest(pipeline: beam.Pipeline, data: str, splits: list, examples_dir: str,
           report_dir: str, max_pixels: int, min_side: int = 1, max_file_bytes: int = 64 << 20,
           allowed_roots: list[str] = (), pipeline_root: Optional[str] = None, rehash: bool = False) -> dict:
    """Runs ingestion on ``pipeline`` and returns the report it wrote.

    Writes gzipped TFRecords under ``examples_dir/Split-<name>/`` and the
    report (counts, sizes, every quarantined path with its code and detail, and
    files per code) to ``report_dir``. With a ``pipeline_root``, files unchanged
    since the newest ingestion recorded under it are copied from its examples
    (``reuse.py``), unless ``rehash``; the report's ``reuse`` says how many.
    """
    split_names = [name for name, _ in splits]
    try:
        items, listing_quarantine = list_images(data, allowed_roots)
    except ManifestError as exc:  # a data problem: recorded, and the data gate stops the run on it
        items, listing_quarantine = [], [Quarantined(f"{os.path.basename(data)}:{exc.line}", Reason.BAD_MANIFEST_ROW,
                                                     f"{exc.detail}; no row of the manifest was read", exc.line)]
    checks = reuse.checks(max_pixels, min_side, max_file_bytes)
    plan = reuse.plan(items, pipeline_root, checks, rehash)
    limits = dict(max_pixels=max_pixels, min_side=min_side, max_file_bytes=max_file_bytes)
    problem = None
    try:
        _run(pipeline, plan, splits, examples_dir, report_dir, **limits)
        problem = plan.reused and reuse.copied_all(_read_outcomes(os.path.join(report_dir, "outcomes")))
    except Exception as exc:  # noqa: BLE001 (only when reusing: a full ingestion then says what is wrong)
        if not plan.reused:
            raise
        problem = f"{type(exc).__name__}: {exc}"
    if problem:  # never lose an image, never fail the run for the sake of reuse: ingest everything
        log.warning("ImageExampleGen: could not reuse the examples in %s (%s); ingesting every file again",
                    plan.examples, problem)
        for folder in [os.path.join(examples_dir, _SPLIT_PREFIX + name) for name in split_names] + [
                os.path.join(report_dir, "outcomes")]:
            if tf.io.gfile.exists(folder):
                tf.io.gfile.rmtree(folder)
        plan = reuse.everything(items, f"the last ingestion's examples could not be reused: {problem}")
        _run(beam.Pipeline(runner=pipeline.runner, options=pipeline._options), plan, splits, examples_dir,
             report_dir, **limits)

    report = build_report(_read_outcomes(os.path.join(report_dir, "outcomes")), listing_quarantine, len(items))
    report["data"] = data
    report["split_names"] = split_names
    report["reuse"] = plan.summary()
    write_json(report, report_dir, REPORT_FILE)
    reuse.write_record(report_dir, examples_dir, checks)
    log.info("ImageExampleGen: %d files copied from the last ingestion's examples, %d read (%s)",
             len(plan.reused), len(plan.fresh), plan.why)
    return report


class IngestFiles(bundle_files.BundleWriter):
    """Reads and checks each file once, writes an image's tf.Example into this bundle's file of its split
    at once, and outputs the file's record without its bytes (the file it went to instead); the bundle's
    files are named in the ``FILES`` output when it ends."""

    def __init__(self, temp: str, level: int, splits: list, progress: Progress, **limits):
        super().__init__(temp, level, tagged=True)
        self.splits, self.progress, self.limits = splits, progress, limits

    def process(self, item: Item):
        record = image_records.inspect_item(item, self.splits, **self.limits)
        if record["kind"] == "example":
            record["file"] = self.files.example(record["split"], image_records.to_example(record))
            del record["image_bytes"]
        self.progress(item)
        yield record


def _outcome(record: dict, dropped: dict) -> bundle_files.Written:
    """A file's outcome line, for the writer."""
    return None, None, image_records.outcome_of(record, dropped)


def _run(pipeline: beam.Pipeline, plan: reuse.Plan, splits: list, examples_dir: str, report_dir: str,
         max_pixels: int, min_side: int, max_file_bytes: int) -> None:
    """The Beam pipeline: the full path for ``plan.fresh``, copies from the last examples for ``plan.reused``.

    Each file is read once, and its tf.Example written as it is checked; copies (and label conflicts) are
    found afterwards from the small records, and removed from the files they were written to
    (``bundle_files.drop_records``), usually none. Few steps on purpose: each costs Beam a fixed share per
    run whatever the number of files (on the FnApiRunner 10-30 ms), and each step an element passes through
    a share per file."""
    split_names = [name for name, _ in splits]
    fresh, temp, level = plan.fresh, bundle_files.temp_dir(examples_dir), EXAMPLES_DEFLATE_LEVEL
    try:
        with pipeline as p:
            # Create spreads the files over the workers itself (its own reshuffle, for more than one).
            ingested = p | "List" >> beam.Create(fresh) | "Ingest" >> beam.ParDo(IngestFiles(
                temp, level, splits, Progress("checked", len(fresh)), max_pixels=max_pixels, min_side=min_side,
                max_bytes=max_file_bytes)).with_outputs(bundle_files.FILES, main="records")
            records, files = ingested.records, [ingested[bundle_files.FILES]]
            if plan.reused:
                # Small tuples (uri, path, label, packed entry), in the graph once (a Create without its
                # reshuffle holds its values three times: itself, its FlatMap, its pass-through step). Not
                # reshuffled: their work is small (no file is read), so one stage fewer.
                reused = p | "Reused" >> beam.Impulse() | "ReusedRecords" >> beam.FlatMap(
                    reuse.reused_records, plan.reused, splits)
                records = (records, reused) | "Flatten" >> beam.Flatten()
            # Copies and label conflicts are judged among decodable images only, by content hash.
            drops = (records
                     | "ByContent" >> beam.FlatMap(image_records.content_keys)
                     | "GroupByContent" >> beam.GroupByKey()
                     | "FindDuplicates" >> beam.FlatMap(image_records.decide_duplicates))
            dropped = beam.pvalue.AsDict(drops)
            files.append(records
                         | "Outcome" >> beam.Map(Progress("done", len(fresh) + len(plan.reused)).around(_outcome),
                                                 dropped=dropped)
                         | "WriteOutcomes" >> beam.ParDo(bundle_files.BundleWriter(temp, level)))
            dropped_written = (drops
                               | "ByFile" >> beam.FlatMap(lambda d: [(d[1][2], d[0])] if d[1][2] else [])
                               | "GroupByFile" >> beam.GroupByKey()
                               | "DropCopies" >> beam.Map(bundle_files.drop_records, level))
            if plan.reused:
                keep = beam.pvalue.AsDict(reused | "Keep" >> beam.Map(reuse.keep))  # a side input, not pickled
                # Each file of the last examples read whole by one worker, its records matched as they stream by.
                files.append(
                    p
                    | "LastFiles" >> beam.Create(plan.shards, reshuffle=len(plan.shards) > _SHARDS_READ_IN_ONE)
                    | "ReadLast" >> beam.FlatMap(tfrecord_files.read_records)
                    | "Match" >> beam.FlatMap(reuse.reused_example, keep=keep, dropped=dropped)
                    | "Found" >> beam.Map(lambda f: (f[0], f[2], reuse.found_line(f)))
                    | "WriteFound" >> beam.ParDo(bundle_files.BundleWriter(temp, level)))
            _ = (files
                 | "AllFiles" >> beam.Flatten()
                 | "Bundles" >> beam.GroupByKey()
                 | "Commit" >> beam.Map(bundle_files.commit, temp, examples_dir, report_dir, split_names, level,
                                        after=beam.pvalue.AsList(dropped_written)))
        bundle_files.finish(temp, examples_dir, report_dir, split_names, level)
    except BaseException:
        bundle_files.discard(temp)
        raise


@tfx.dsl.components.component(use_beam=True)
def ImageExampleGen(
    examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    report: tfx.dsl.components.OutputArtifact[IngestionReport],
    data_root: tfx.dsl.components.Parameter[str],
    splits_json: tfx.dsl.components.Parameter[str],
    max_pixels: tfx.dsl.components.Parameter[int] = 50_000_000,
    min_side: tfx.dsl.components.Parameter[int] = 1,
    max_file_bytes: tfx.dsl.components.Parameter[int] = 64 << 20,
    allowed_roots_json: tfx.dsl.components.Parameter[str] = "[]",
    training_json: tfx.dsl.components.Parameter[str] = "",
    limits_json: tfx.dsl.components.Parameter[str] = "",
    pipeline_root: tfx.dsl.components.Parameter[str] = "",
    rehash: tfx.dsl.components.Parameter[int] = 0,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Ingests image folders or a manifest into gzipped TFRecords of tf.Examples.

    First, as the run's first task, it checks the run's ``training`` and
    ``data_limits`` parameters (components.ingest.run_parameters). Files
    unchanged since the newest ingestion under ``pipeline_root`` are copied
    from its examples unless ``rehash`` (components.ingest.reuse).
    """
    check_run_parameters(training_json, limits_json)
    splits = list(json.loads(splits_json).items())
    summary = ingest(beam_pipeline, data_root, splits, examples.uri, report.uri, max_pixels, min_side,
                     max_file_bytes, json.loads(allowed_roots_json), pipeline_root or None, bool(rehash))

    split_names = [name for name, _ in splits]
    examples.split_names = artifact_utils.encode_split_names(split_names)
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    for name, count in summary["splits"].items():
        examples.set_int_custom_property(f"count_{name}", count)
    report.set_int_custom_property("ingested", summary["ingested"])
    report.set_int_custom_property("quarantined", len(summary["quarantined"]))
    report.set_int_custom_property("reused", summary["reuse"]["reused"])
    report.set_string_custom_property("classes", json.dumps(summary["classes"]))
    # A split with no images, or a manifest that could not be read, is a data problem, not a failure of
    # this step: its outputs (and the report naming every file's fate) are kept, and DataGate stops the run.

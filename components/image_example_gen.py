"""ImageExampleGen: a folder of class-named subfolders of images -> tf.Examples.

No stock ExampleGen reads images, so this is ours. It accounts for every file:
each one is either ingested as one tf.Example (the encoded bytes as stored, the
label, its size and format, where it came from, a content hash) or quarantined
with a reason, listed in the report artifact. Splits are assigned by a hash of
each image's content, so adding images never reshuffles the ones already there.
The work runs as a Beam pipeline, so it scales with the runner it is given.
"""


import hashlib
import io
import json
import os
from typing import Iterable

import apache_beam as beam
import tensorflow as tf
from PIL import Image
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.artifacts import IngestionReport

# Formats the shared decoder (tf.io.decode_image) reads as stored.
DECODABLE_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "BMP": "bmp"}
# Pixel modes it reads as stored; other modes (CMYK JPEG, 16-bit PNG, ...) are
# re-encoded as 8-bit RGB PNG, and the record says so.
DECODABLE_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}
REPORT_FILE = "ingestion_report.json"
_SPLIT_PREFIX = "Split-"


def _feature(value) -> tf.train.Feature:
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def list_images(data_root: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """Lists (relative path, label) pairs; the label is the top-level folder's name.

    Files directly under the root belong to no class and empty class folders
    hold no image: both are reported, never silently skipped.
    """
    if not tf.io.gfile.isdir(data_root):
        raise FileNotFoundError(
            f"data root {data_root} is not a directory: point data.root (or --data) at a folder "
            "with one subfolder of images per class")
    files: list[tuple[str, str]] = []
    quarantined: list[dict] = []
    for entry in sorted(tf.io.gfile.listdir(data_root)):
        name = entry.rstrip("/")
        path = os.path.join(data_root, name)
        if not tf.io.gfile.isdir(path):
            quarantined.append({"path": name, "reason": "not in a class folder: move it into a subfolder named after its class"})
            continue
        found = 0
        for dirpath, _, filenames in tf.io.gfile.walk(path):
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                files.append((os.path.relpath(full, data_root), name))
                found += 1
        if not found:
            quarantined.append({"path": name + "/", "reason": "empty class folder: it holds no files"})
    return files, quarantined


def inspect_image(data_root: str, rel_path: str, label: str, max_pixels: int) -> dict:
    """Reads and checks one file. Returns an 'example' record or a 'quarantine' one."""
    def bad(reason: str) -> dict:
        return {"kind": "quarantine", "path": rel_path, "reason": reason}

    with tf.io.gfile.GFile(os.path.join(data_root, rel_path), "rb") as f:
        data = f.read()
    if not data:
        return bad("empty file")
    try:
        # Image.open reads only the header: the pixel count is checked before
        # any decoding, so a decompression bomb never allocates its pixels.
        with Image.open(io.BytesIO(data)) as probe:
            fmt, (width, height) = probe.format, probe.size
    except Exception:  # PIL raises many types for "not an image"
        return bad("not an image (no known image header)")
    if fmt not in DECODABLE_FORMATS:
        return bad(f"unsupported format {fmt}: convert it to JPEG or PNG")
    if width * height > max_pixels:
        return bad(f"too large: {width}x{height} pixels is over the limit of {max_pixels}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            reencode = mode not in DECODABLE_MODES
            if reencode:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="PNG")
    except Exception as exc:
        return bad(f"truncated or undecodable: {exc}")
    encoded = buffer.getvalue() if reencode else data
    return {
        "kind": "example",
        "path": rel_path,
        "label": label,
        "sha256": hashlib.sha256(data).hexdigest(),
        "image_bytes": encoded,
        "format": "png" if reencode else DECODABLE_FORMATS[fmt],
        "height": height,
        "width": width,
        "channels": 1 if mode in ("1", "L") else (4 if mode in ("RGBA", "LA") else 3),
        "reencoded": f"from {fmt} mode {mode}" if reencode else "",
    }


def split_for(sha256: str, splits: list[tuple[str, float]]) -> str:
    """Assigns a split from the content hash: stable as images are added."""
    position = int(sha256[:16], 16) / float(1 << 64)
    cumulative = 0.0
    for name, fraction in splits:
        cumulative += fraction
        if position < cumulative:
            return name
    return splits[-1][0]


def resolve_duplicates(item: tuple[str, Iterable[dict]]) -> Iterable[dict]:
    """Keeps one copy of identical content; the same content under two labels is a conflict."""
    _, records = item
    records = sorted(records, key=lambda r: r["path"])
    labels = sorted({r["label"] for r in records})
    if len(labels) > 1:
        for r in records:
            yield {"kind": "quarantine", "path": r["path"],
                   "reason": f"label conflict: the same image is labelled {', '.join(labels)}"}
        return
    yield records[0]
    for r in records[1:]:
        yield {"kind": "quarantine", "path": r["path"], "reason": f"duplicate of {records[0]['path']}"}


def to_example(record: dict) -> bytes:
    features = {
        "image_bytes": record["image_bytes"],
        "label": record["label"],
        "height": record["height"],
        "width": record["width"],
        "channels": record["channels"],
        "format": record["format"],
        "source": record["path"],
        "sha256": record["sha256"],
        "reencoded": record["reencoded"],
    }
    example = tf.train.Example(features=tf.train.Features(feature={k: _feature(v) for k, v in features.items()}))
    return example.SerializeToString()


def _summary_line(record: dict) -> dict:
    if record["kind"] == "quarantine":
        return {"kind": "quarantine", "path": record["path"], "reason": record["reason"]}
    return {"kind": "example", "split": record["split"], "label": record["label"]}


def build_report(lines: list[dict], listing_quarantine: list[dict]) -> dict:
    """Folds per-file outcomes into the counts a person and later stages read."""
    per_split: dict[str, int] = {}
    per_class: dict[str, dict[str, int]] = {}
    quarantined = list(listing_quarantine)
    for line in lines:
        if line["kind"] == "quarantine":
            quarantined.append({"path": line["path"], "reason": line["reason"]})
            continue
        per_split[line["split"]] = per_split.get(line["split"], 0) + 1
        counts = per_class.setdefault(line["label"], {})
        counts[line["split"]] = counts.get(line["split"], 0) + 1
    quarantined.sort(key=lambda q: q["path"])
    return {
        "classes": sorted(per_class),
        "ingested": sum(per_split.values()),
        "splits": dict(sorted(per_split.items())),
        "per_class": dict(sorted(per_class.items())),
        "quarantined": quarantined,
    }


def check_usable(report: dict, split_names: list[str]) -> None:
    """Stops the run before training when the data cannot train a classifier."""
    if len(report["classes"]) < 2:
        raise ValueError(
            f"found {len(report['classes'])} class(es) with usable images ({report['classes']}): "
            "a classifier needs at least 2 class folders of images")
    for name in split_names:
        if not report["splits"].get(name):
            raise ValueError(
                f"split '{name}' got no images ({report['ingested']} ingested in all): "
                "add images or change data.splits")


def ingest(pipeline: beam.Pipeline, data_root: str, splits: list, examples_dir: str,
           report_dir: str, max_pixels: int) -> dict:
    """Runs ingestion on ``pipeline`` and returns the report it wrote.

    Writes gzipped TFRecords under ``examples_dir/Split-<name>/`` and the
    report (counts, and every quarantined path with its reason) to
    ``report_dir``. The report is written before the data is judged usable,
    so a run that stops here still says why.
    """
    split_names = [name for name, _ in splits]
    files, listing_quarantine = list_images(data_root)
    outcome_dir = os.path.join(report_dir, "outcomes")

    with pipeline as p:
        inspected = (
            p
            | "ListFiles" >> beam.Create(files)
            | "Reshuffle" >> beam.Reshuffle()
            | "Inspect" >> beam.MapTuple(lambda path, label: inspect_image(data_root, path, label, max_pixels))
        )
        good = inspected | "Good" >> beam.Filter(lambda r: r["kind"] == "example")
        bad = inspected | "Bad" >> beam.Filter(lambda r: r["kind"] == "quarantine")
        resolved = (
            good
            | "ByHash" >> beam.Map(lambda r: (r["sha256"], r))
            | "GroupByHash" >> beam.GroupByKey()
            | "Deduplicate" >> beam.FlatMap(resolve_duplicates)
        )
        kept = resolved | "Kept" >> beam.Filter(lambda r: r["kind"] == "example")
        assigned = kept | "AssignSplit" >> beam.Map(lambda r: {**r, "split": split_for(r["sha256"], splits)})
        parts = assigned | "Partition" >> beam.Partition(
            lambda r, _n: split_names.index(r["split"]), len(split_names))
        for name, part in zip(split_names, parts):
            _ = (
                part
                | f"Serialize[{name}]" >> beam.Map(to_example)
                | f"Write[{name}]" >> beam.io.WriteToTFRecord(
                    os.path.join(examples_dir, _SPLIT_PREFIX + name, "data_tfrecord"),
                    file_name_suffix=".gz",
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP,
                )
            )
        dropped = resolved | "Dropped" >> beam.Filter(lambda r: r["kind"] == "quarantine")
        _ = (
            (assigned, bad, dropped)
            | "AllOutcomes" >> beam.Flatten()
            | "Summarize" >> beam.Map(lambda r: json.dumps(_summary_line(r)))
            | "WriteOutcomes" >> beam.io.WriteToText(os.path.join(outcome_dir, "part"), file_name_suffix=".jsonl")
        )

    lines = []
    for path in tf.io.gfile.glob(os.path.join(outcome_dir, "part*.jsonl")):
        with tf.io.gfile.GFile(path) as f:
            lines.extend(json.loads(line) for line in f if line.strip())
    report = build_report(lines, listing_quarantine)
    report["data_root"] = data_root
    report["files_seen"] = len(files)
    with tf.io.gfile.GFile(os.path.join(report_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report


@tfx.dsl.components.component(use_beam=True)
def ImageExampleGen(
    examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    report: tfx.dsl.components.OutputArtifact[IngestionReport],
    data_root: tfx.dsl.components.Parameter[str],
    splits_json: tfx.dsl.components.Parameter[str],
    max_pixels: tfx.dsl.components.Parameter[int] = 50_000_000,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Ingests a folder of class-named subfolders into gzipped TFRecords of tf.Examples."""
    splits = list(json.loads(splits_json).items())
    summary = ingest(beam_pipeline, data_root, splits, examples.uri, report.uri, max_pixels)

    split_names = [name for name, _ in splits]
    examples.split_names = artifact_utils.encode_split_names(split_names)
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    for name, count in summary["splits"].items():
        examples.set_int_custom_property(f"count_{name}", count)
    report.set_int_custom_property("ingested", summary["ingested"])
    report.set_int_custom_property("quarantined", len(summary["quarantined"]))
    report.set_string_custom_property("classes", json.dumps(summary["classes"]))
    check_usable(summary, split_names)

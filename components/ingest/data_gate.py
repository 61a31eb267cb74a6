"""DataGate: stop the run before any training when the data is not fit to train on.

ExampleValidator finds anomalies but stops nothing, and TFDV knows nothing of
classes. This component reads what ingestion and validation wrote and decides:
TFDV's anomalies against the schema, the share of quarantined files, images
per class, class balance, the image size distribution, and, against the data
the served model was trained on, classes that appeared or vanished and
drift of the label distribution. It always writes its verdict (the ``verdict``
artifact, ``verdict.json``, and a ``passed`` property), so the verdict is on
record even when the run stops; the pipeline runs Transform and everything
after it only when ``passed`` is 1.
"""

import os
from typing import Optional

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import path_utils

from components.artifacts import DataVerdict, IngestionReport, read_json, write_json
from components.gate.baseline import baseline_uri
from components.ingest.data_limits import DataLimits
from components.ingest.image_example_gen import REPORT_FILE
from components.ingest.quarantine import Reason, count_by_code, describe_counts, read_entries
from components.model_contract import LABEL_COUNTS_FILE
from components.spec import parse

VERDICT_FILE = "verdict.json"


def read_anomalies(anomalies_uri: str, split_names: list[str]) -> list[str]:
    """TFDV's anomalies as sentences: which split, which feature, what, and the fix."""
    problems = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
        if not tf.io.gfile.exists(path):
            continue
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            problems.append(
                f"split '{split}', feature '{feature}': {info.short_description or info.description} "
                f"({info.description}); fix the data, or the contract in schemas/ if the data is right")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            problems.append(f"split '{split}': {info.description}")
    return problems


def label_drift(current: dict[str, int], previous: dict[str, int]) -> float:
    """The largest change in any class's share of the data (L-infinity, as TFDV measures drift)."""
    total_now, total_before = sum(current.values()), sum(previous.values())
    if not total_now or not total_before:
        return 0.0
    classes = set(current) | set(previous)
    return max(abs(current.get(c, 0) / total_now - previous.get(c, 0) / total_before) for c in classes)


def empty_splits(report: dict, by_code: dict[str, int]) -> list[str]:
    """A split that got no image: nothing downstream could train or evaluate on it.

    Ingestion records it and finishes (its report is kept); this is where the run stops on it.
    """
    empty = [name for name in report.get("split_names", []) if not report["splits"].get(name)]
    if not empty:
        return []
    common = describe_counts(by_code)
    return [f"split(s) {', '.join(empty)} got no images: {report['ingested']} of {report['files_seen']} files "
            f"ingested{'; quarantined: ' + common if common else ''}; add images or change data.splits "
            "(the ingestion report lists every file and its reason)"]


def bad_manifest_rows(quarantined: list, most: int = 10) -> list[str]:
    """Each bad manifest row, by line and what is wrong with it (``most`` of them, then a count)."""
    rows = [q for q in quarantined if q.code is Reason.BAD_MANIFEST_ROW]
    named = [f"manifest {q.path.rsplit(':', 1)[0]} line {q.line}: {q.detail}" if q.line is not None
             else f"manifest row {q.path}: {q.detail}" for q in rows[:most]]
    if len(rows) > most:
        named.append(f"... and {len(rows) - most} more bad manifest rows in the ingestion report")
    return named


def judge(report: dict, anomalies: list[str], limits: DataLimits, previous_counts: Optional[dict]) -> dict:
    """The verdict: ``problems`` stop the run, ``warnings`` are shown; ``checks`` has the numbers."""
    problems = list(anomalies)
    warnings = []
    files = report["files_seen"]
    quarantined = read_entries(report["quarantined"])
    # A folder (its path ends in "/") is not a file: it does not count against the share.
    bad_files = [q for q in quarantined if not q.path.endswith("/")]
    bad_fraction = len(bad_files) / files if files else 0.0
    by_code = count_by_code(bad_files)
    if bad_fraction > limits.max_bad_fraction:
        problems.append(
            f"{len(bad_files)} of {files} files ({bad_fraction:.1%}) were quarantined ({describe_counts(by_code)}), "
            f"over the limit of {limits.max_bad_fraction:.1%} (data.max_bad_fraction); the ingestion report "
            "lists each with its reason")
    elif bad_files and files:  # no file listed (a manifest whose header is unreadable): said below
        warnings.append(f"{len(bad_files)} of {files} files ({bad_fraction:.1%}) were quarantined "
                        f"({describe_counts(by_code)})")
    for entry in quarantined:
        if entry.code is Reason.EMPTY_CLASS_FOLDER:
            warnings.append(f"class folder {entry.path} is empty")
    warnings.extend(bad_manifest_rows(quarantined))
    problems.extend(empty_splits(report, by_code))

    per_class = {c: sum(splits.values()) for c, splits in report["per_class"].items()}
    train_counts = {c: splits.get("train", 0) for c, splits in report["per_class"].items()}
    for name in report.get("classes_without_images", []):
        problems.append(f"class '{name}' has no usable image: every one of its files was quarantined (the "
                        "ingestion report says why); fix the files or remove the class")
    if len(per_class) < 2:
        problems.append(f"{len(per_class)} class(es) with usable images; a classifier needs at least 2")
    for name, count in sorted(per_class.items()):
        if count < limits.min_images_per_class:
            problems.append(
                f"class '{name}' has {count} images, fewer than the minimum of "
                f"{limits.min_images_per_class} (data.min_images_per_class): add images or remove the class")
    split_names = sorted({split for splits in report["per_class"].values() for split in splits})
    for name, splits in sorted(report["per_class"].items()):
        if per_class[name] < limits.min_images_per_class:
            continue  # said above
        short = [f"{splits.get(split, 0)} in {split}" for split in split_names
                 if splits.get(split, 0) < limits.min_images_per_split]
        if short:
            problems.append(
                f"class '{name}' has {', '.join(short)}, fewer than the minimum of {limits.min_images_per_split} "
                f"per split (data.min_images_per_split): the splits are assigned by each image's content hash, "
                f"so add images to the class (or raise that split's fraction in data.splits)")
    imbalance = max(per_class.values()) / max(min(per_class.values()), 1) if per_class else 0.0
    if imbalance > limits.max_class_imbalance:
        largest = max(per_class, key=per_class.get)
        smallest = min(per_class, key=per_class.get)
        problems.append(
            f"classes are imbalanced: '{largest}' has {per_class[largest]} images, '{smallest}' "
            f"{per_class[smallest]}, a ratio of {imbalance:.1f} over the bound of "
            f"{limits.max_class_imbalance:g} (data.max_class_imbalance)")

    drift = None
    appeared: list[str] = []
    vanished: list[str] = []
    if previous_counts:
        appeared = sorted(set(train_counts) - set(previous_counts))
        vanished = sorted(set(previous_counts) - set(train_counts))
        if appeared:
            warnings.append(f"classes new since the served model: {', '.join(appeared)}")
        if vanished:
            warnings.append(f"classes the served model had that are gone now: {', '.join(vanished)}")
        drift = label_drift(train_counts, previous_counts)
        if drift > limits.max_label_drift:
            problems.append(
                f"the label distribution drifted by {drift:.3f} (largest change in a class's share) "
                f"against the served model's training data, over {limits.max_label_drift:g} "
                "(data.max_label_drift)")
    return {
        "passed": not problems,
        "problems": problems,
        "warnings": warnings,
        "checks": {
            "files_seen": files,
            "quarantined_files": len(bad_files),
            "quarantined_by_code": by_code,
            "bad_fraction": bad_fraction,
            "images_per_class": per_class,
            "class_imbalance": imbalance,
            "image_sizes": report.get("sizes", {}),
            "label_drift": drift,
            "classes_appeared": appeared,
            "classes_vanished": vanished,
        },
    }


@tfx.dsl.components.component
def DataGate(
    statistics: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleStatistics],
    anomalies: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleAnomalies],
    report: tfx.dsl.components.InputArtifact[IngestionReport],
    verdict: tfx.dsl.components.OutputArtifact[DataVerdict],
    limits_json: tfx.dsl.components.Parameter[str],
    baseline_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model] = None,
) -> None:
    """Judges the data; writes the verdict with ``passed`` 1 or 0.

    Bad data never fails this step; limits it cannot read (an unknown or
    mistyped key in the ``data_limits`` runtime parameter) do, naming the key.
    """
    limits = parse(DataLimits, limits_json, "the data gate's limits (the pipeline's `data_limits` runtime parameter)")
    split_names = artifact_utils.decode_split_names(statistics.split_names)
    ingestion = read_json(report.uri, REPORT_FILE)
    previous = None
    model_uri = baseline_uri(baseline_model)
    if model_uri is not None:
        previous = read_json(path_utils.serving_model_path(model_uri), "assets.extra", LABEL_COUNTS_FILE)
    result = judge(ingestion, read_anomalies(anomalies.uri, split_names), limits, previous)
    if model_uri is not None and previous is None:
        # Said, not skipped in silence: the served model carries no class counts to compare with.
        result["warnings"].append(
            f"label drift not measured: the served model ({model_uri}) has no "
            f"assets.extra/{LABEL_COUNTS_FILE} with its training data's class counts")
    write_json(result, verdict.uri, VERDICT_FILE)
    verdict.set_int_custom_property("passed", int(result["passed"]))

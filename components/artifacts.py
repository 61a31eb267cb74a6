"""Artifact types of Thaw's own components, and files that pass between components."""

import json
import os

import tensorflow as tf
from tfx.types.artifact import Artifact
from tfx.types.value_artifact import ValueArtifact


# Where the KFP launcher keeps its local copy of an artifact on an object store
# that TensorFlow's file system cannot open (kubeflow/pipelines
# backend/src/v2/component/launcher_v2.go, LocalPathForURI): it downloads each
# input there before the task's command runs and uploads each output from there
# after it ends. gs:// is not here: TensorFlow reads and writes it directly.
LAUNCHER_PATHS = (("minio://", "/minio/"), ("s3://", "/s3/"))
# Where a pod sees the object store's buckets as files (a volume: a CSI S3
# driver, or the bucket's files on a PVC), for what it reads without the
# launcher copying it: ServedModel's search of the pipeline root, the
# baseline model. minio://B/K is read at $THAW_STORE_MOUNT/B/K. Never the
# launcher's own /minio: it writes its copies there.
STORE_MOUNT_ENV = "THAW_STORE_MOUNT"
# A durable folder for the Trainer's checkpoints when its output is a launcher
# copy, which dies with the pod: a volume mounted into the Trainer's pod.
CHECKPOINT_ROOT_ENV = "THAW_CHECKPOINT_ROOT"


def launcher_path(uri: str) -> str:
    """Where the KFP launcher keeps ``uri``'s local copy, or ``uri`` itself when TensorFlow opens it directly."""
    for scheme, local in LAUNCHER_PATHS:
        if uri.startswith(scheme):
            return local + uri[len(scheme):]
    return uri


def stored_uri(path: str) -> str:
    """The object-store URI a launcher's local copy stands for, or ``path`` itself when it is no such copy."""
    for scheme, local in LAUNCHER_PATHS:
        if path.startswith(local):
            return scheme + path[len(local):]
    return path


def store_mount(uri: str) -> str | None:
    """Where this pod reads ``uri`` when no launcher copied it: ``uri`` itself when TensorFlow opens it,
    the mounted file for a MinIO or S3 URI, or None when no store is mounted."""
    for scheme, _ in LAUNCHER_PATHS:
        if uri.startswith(scheme):
            mount = os.environ.get(STORE_MOUNT_ENV)
            return os.path.join(mount, uri[len(scheme):]) if mount else None
    return uri


def read_json(folder: str, *names: str):
    """A JSON file a component wrote into an artifact, or None when it wrote none."""
    path = os.path.join(folder, *names)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_json(data, folder: str, *names: str) -> str:
    """Writes ``data`` as JSON into an artifact (local or gs://); returns the path."""
    path = os.path.join(folder, *names)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


class IngestionReport(Artifact):
    """What ingestion did with every file: counts per split and class, and each
    quarantined path with its reason code and detail (ingestion_report.json)."""

    # namespace.Name: the form Kubeflow Pipelines v2 requires of custom types.
    TYPE_NAME = "thaw.IngestionReport"


class DataVerdict(Artifact):
    """DataGate's decision on a run's data (verdict.json): the problems that stop
    the run, the warnings, and the numbers behind them. Custom property
    ``passed`` is 1 when training may go ahead."""

    TYPE_NAME = "thaw.DataVerdict"


class DataFingerprint(Artifact):
    """DataFingerprint's record of the run's data (fingerprint.json, files.jsonl: every file's path, label,
    size, times and content hash) and its decision: custom property ``train`` is 0 when nothing changed
    since the served model was trained, so the run stops before ingestion."""

    TYPE_NAME = "thaw.DataFingerprint"


class HtmlReport(ValueArtifact):
    """The run report: one self-contained HTML page, written at the artifact's URI.

    Its type name is Kubeflow Pipelines' own HTML type, and the KFP UI shows an
    artifact of that type by reading its URI as one HTML file, which is how a
    value artifact is stored. (TFX's Kubeflow entrypoint imports the class
    from the type name: the ``system`` package holds it as ``system.HTML``.)
    """

    TYPE_NAME = "system.HTML"

    def encode(self, value: str) -> bytes:
        return value.encode("utf-8")

    def decode(self, serialized_value: bytes) -> str:
        return serialized_value.decode("utf-8")


# The exported SavedModel's own file names are in components/model_contract.py.
# The trainer's per-stage results (trainable parameters, learning rate,
# epochs, best validation accuracy, history), in the ModelRun artifact.
STAGE_RESULTS_FILE = "stages.json"
# What the model was trained on (components.train.backbone.describe_backbone), in the ModelRun artifact.
BACKBONE_FILE = "backbone.json"

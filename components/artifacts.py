"""Artifact types of Thaw's own components, and files that pass between components."""

import json
import os

import tensorflow as tf
from tfx.types.artifact import Artifact
from tfx.types.value_artifact import ValueArtifact


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

"""The baseline: the latest model the Evaluator blessed, found in the pipeline root.

TFX's ``Resolver`` (LatestBlessedModelStrategy) asks ML Metadata, and compiles
for Kubeflow to a ``resolver`` executor, which the open-source KFP backend does
not run (backend/src/v2/compiler/argocompiler/dag.go: "resolver executors not
implemented"). So the record is kept in the artifacts themselves, which every
runner writes alike:

- the Evaluator (components.gate.evaluator), when it blesses a model, writes
  ``baseline.json`` into its blessing: the model's URI and when it was blessed;
- ``LatestBlessedModel`` walks the pipeline root for those records and writes
  the newest one whose model still exists into its own output, a ``Model``
  artifact that points at the baseline (``baseline.json``), or says there is
  none (the first run);
- its readers (the Evaluator, DataGate) turn it back into the model's URI with
  ``baseline_uri``.

LocalDagRunner and Kubeflow run the same step, so both find the same baseline.

On an object store TensorFlow cannot open (a stock Kubeflow install's
``minio://``), records hold the object-store URI, never a pod's local copy.
The KFP launcher copies only a task's input artifacts, so the root and the
baseline model are read where the store is mounted in the pod
($THAW_STORE_MOUNT, components.artifacts.store_mount); without it the search
fails with what to do, rather than finding no baseline and letting any
candidate through.
"""

import os
import time

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import STORE_MOUNT_ENV, read_json, store_mount, stored_uri, write_json
from components.serve.serving_dir import SAVED_MODEL

RECORD_FILE = "baseline.json"


def record_blessing(blessing_uri: str, model_uri: str) -> str:
    """Marks a blessing as the record of a blessed model; returns the record's path."""
    return write_json({"model": stored_uri(model_uri), "blessed_at": time.time()}, blessing_uri, RECORD_FILE)


class UnreadableRoot(RuntimeError):
    """The pipeline root is on an object store this pod can read only through a mount that is not there."""


def blessed_models(pipeline_root: str) -> list[dict]:
    """Every blessed model recorded under ``pipeline_root`` whose SavedModel still exists, oldest first."""
    found = []
    root = store_mount(pipeline_root)
    if root is None:
        raise UnreadableRoot(
            f"cannot search the pipeline root {pipeline_root} for blessed models: TensorFlow cannot open "
            f"{pipeline_root.split('://')[0]}:// and the KFP launcher copies only a task's input artifacts; "
            f"mount the store's buckets in this pod (read-only is enough) and set {STORE_MOUNT_ENV} to the "
            "folder that holds them, or use a gs:// pipeline root")
    if not tf.io.gfile.isdir(root):
        return found
    for folder, _, files in tf.io.gfile.walk(root):
        if RECORD_FILE not in files or "BLESSED" not in files:
            continue
        record = read_json(folder, RECORD_FILE)
        model = store_mount(record["model"]) or record["model"]
        if tf.io.gfile.exists(os.path.join(path_utils.serving_model_path(model), SAVED_MODEL)):
            blessing = folder if root == pipeline_root else \
                f"{pipeline_root.rstrip('/')}/{os.path.relpath(folder, root)}"
            found.append({**record, "blessing": blessing})
    return sorted(found, key=lambda r: r["blessed_at"])


def baseline_uri(baseline: standard_artifacts.Model | None) -> str | None:
    """The URI of the model a LatestBlessedModel output points at, or None when there is none."""
    if baseline is None:
        return None
    record = read_json(baseline.uri, RECORD_FILE)
    if not record:
        return None
    model = store_mount(record["model"])
    if model is None:
        raise UnreadableRoot(f"cannot read the baseline model {record['model']}: mount the store's buckets in this "
                             f"pod (read-only is enough) and set {STORE_MOUNT_ENV} to the folder that holds them")
    return model


@tfx.dsl.components.component
def LatestBlessedModel(
    pipeline_root: tfx.dsl.components.Parameter[str],
    baseline: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
) -> None:
    """Points ``baseline`` at the newest blessed model under ``pipeline_root`` (``found`` 1), or at none (0)."""
    models = blessed_models(pipeline_root)
    if models:
        write_json(models[-1], baseline.uri, RECORD_FILE)
        baseline.set_string_custom_property("baseline_model", models[-1]["model"])
    tf.io.gfile.makedirs(baseline.uri)
    baseline.set_int_custom_property("found", int(bool(models)))

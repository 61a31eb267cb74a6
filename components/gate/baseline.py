"""The baseline: the model being served, found from the serving directory and the pipeline root.

A candidate is pushed only when it is no worse than the model that serves. That
is not the last model the Evaluator blessed: serving validation can refuse a
blessed model (so it was never pushed), and ``thaw rollback`` takes the newest
version out of service. So the baseline is, in this order:

1. the version live in the serving directory (the newest numbered folder, the
   one TF Serving's "latest" policy serves), matched to the model it was
   pushed from by the push's record, or, for versions pushed before push
   records existed, by its ``saved_model.pb``'s content among the blessed
   models; a live version that matches neither (pushed by another pipeline
   root, or its artifacts deleted) is copied into the baseline's own output
   and graded as it is;
2. where the pipeline cannot read the serving directory (it does not exist or
   is not readable from this step's pod), the newest model that was pushed
   and not rolled back, from the push records;
3. a pipeline root from before push records (no push recorded at all): the
   newest blessed model, as before, which is what such a store pushed last
   unless serving validation refused it.

TFX's ``Resolver`` compiles for Kubeflow to a ``resolver`` executor, which the
open-source KFP backend does not run (backend/src/v2/compiler/argocompiler/
dag.go: "resolver executors not implemented"), and it knows nothing of
rollbacks; so the records are kept in the artifacts themselves, which every
runner writes alike:

- the Evaluator (components.gate.evaluator), when it blesses a model, writes
  ``baseline.json`` into its blessing: the model's URI and when;
- the AtomicPusher writes ``push.json`` into its PushedModel: the model's URI
  and the version folder it became;
- ``thaw rollback`` writes ``rolled_back.json`` beside the push record of the
  version it took out of service;
- ``ServedModel`` writes the baseline it found into its own output, a
  ``Model`` artifact that points at it (``baseline.json``: the model's URI and
  why it is the baseline), or says there is none (nothing served yet);
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

import hashlib
import os
import time
from typing import Optional

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import STORE_MOUNT_ENV, read_json, store_mount, stored_uri, write_json
from components.serve.serving_dir import SAVED_MODEL, copy_saved_model, versions

RECORD_FILE = "baseline.json"
PUSH_RECORD_FILE = "push.json"
ROLLED_BACK_FILE = "rolled_back.json"


def record_blessing(blessing_uri: str, model_uri: str) -> str:
    """Marks a blessing as the record of a blessed model; returns the record's path."""
    return write_json({"model": stored_uri(model_uri), "blessed_at": time.time()}, blessing_uri, RECORD_FILE)


class UnreadableRoot(RuntimeError):
    """The pipeline root is on an object store this pod can read only through a mount that is not there."""


def record_push(pushed_uri: str, model_uri: str, destination: str, data: Optional[dict] = None) -> str:
    """Records, in the PushedModel artifact, which model became which version folder, and ``data``: the
    fingerprint of the data it was trained on (components.ingest.fingerprint), when the run had one."""
    return write_json({"model": stored_uri(model_uri), "destination": destination, "pushed_at": time.time(),
                       **(data or {})}, pushed_uri, PUSH_RECORD_FILE)


# What a push record says of the data its model was trained on, handed on by ServedModel.
DATA_KEYS = ("data_fingerprint", "data_digest", "settings_digest", "fingerprint_record")


def _data_of(record: dict) -> dict:
    return {key: record[key] for key in DATA_KEYS if record.get(key)}


def _readable_root(pipeline_root: str) -> str:
    """Where this pod reads ``pipeline_root``: itself, or its mount for an object store TensorFlow cannot open."""
    root = store_mount(pipeline_root)
    if root is None:
        raise UnreadableRoot(
            f"cannot search the pipeline root {pipeline_root} for blessed and pushed models: TensorFlow cannot open "
            f"{pipeline_root.split('://')[0]}:// and the KFP launcher copies only a task's input artifacts; "
            f"mount the store's buckets in this pod (read-only is enough) and set {STORE_MOUNT_ENV} to the "
            "folder that holds them, or use a gs:// pipeline root")
    return root


def _as_stored(pipeline_root: str, folder: str) -> str:
    """A folder found under the readable root, named as under ``pipeline_root`` (the stored URI)."""
    root = _readable_root(pipeline_root)
    return folder if root == pipeline_root else f"{pipeline_root.rstrip('/')}/{os.path.relpath(folder, root)}"


def _records(pipeline_root: str, name: str, also: Optional[str] = None) -> list[tuple[str, list[str]]]:
    """Folders under the pipeline root (as this pod reads it) that hold the record ``name``."""
    root = _readable_root(pipeline_root)
    if not tf.io.gfile.isdir(root):
        return []
    return [(folder, files) for folder, _, files in tf.io.gfile.walk(root)
            if name in files and (also is None or also in files)]


def _local(uri: str) -> str:
    """Where this pod reads a recorded model URI (its store mount for minio:// or s3://)."""
    return store_mount(uri) or uri


def _model_exists(model_uri: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path_utils.serving_model_path(_local(model_uri)), SAVED_MODEL))


def blessed_models(pipeline_root: str) -> list[dict]:
    """Every blessed model recorded under ``pipeline_root`` whose SavedModel still exists, oldest first."""
    found = []
    for folder, _ in _records(pipeline_root, RECORD_FILE, "BLESSED"):
        record = read_json(folder, RECORD_FILE)
        if _model_exists(record["model"]):
            found.append({**record, "blessing": _as_stored(pipeline_root, folder)})
    return sorted(found, key=lambda r: r["blessed_at"])


def pushed_models(pipeline_root: str) -> list[dict]:
    """Every push recorded under ``pipeline_root``, oldest first, with ``rolled_back`` said."""
    found = []
    for folder, files in _records(pipeline_root, PUSH_RECORD_FILE):
        record = read_json(folder, PUSH_RECORD_FILE)
        found.append({**record, "record": folder, "rolled_back": ROLLED_BACK_FILE in files})
    return sorted(found, key=lambda r: r["pushed_at"])


def _same_folder(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def mark_rolled_back(pipeline_root: str, version_dir: str) -> list[str]:
    """Marks the push records of ``version_dir`` (a version folder taken out of service) as
    rolled back; returns the records marked. Called by ``thaw rollback``."""
    marked = []
    for record in pushed_models(pipeline_root):
        if _same_folder(record["destination"], version_dir) and not record["rolled_back"]:
            write_json({"rolled_back_at": time.time(), "version": version_dir}, record["record"], ROLLED_BACK_FILE)
            marked.append(record["record"])
    return marked


def _digest(saved_model_dir: str) -> Optional[str]:
    path = os.path.join(saved_model_dir, SAVED_MODEL)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _readable_dir(path: str) -> bool:
    try:
        return bool(path) and tf.io.gfile.isdir(path) and tf.io.gfile.listdir(path) is not None
    except (tf.errors.OpError, OSError):  # e.g. permission denied, or a bucket this pod may not read
        return False


def find_served(pipeline_root: str, serving_dir: str) -> Optional[dict]:
    """The model being served, as ``{"model": uri, "why": ...}`` (plus ``copy_from``, a live version
    no model under ``pipeline_root`` matches), or None when nothing is served yet."""
    pushes = pushed_models(pipeline_root)
    if _readable_dir(serving_dir):
        served = versions(serving_dir)
        if not served:
            return None
        live = os.path.join(serving_dir, str(served[-1]))
        why = f"version {served[-1]}, live in {serving_dir}"
        for record in reversed(pushes):
            if _same_folder(record["destination"], live) and _model_exists(record["model"]):
                return {"model": record["model"], "why": f"{why}, pushed from this model", **_data_of(record)}
        digest = _digest(live)
        for record in reversed(blessed_models(pipeline_root)):
            if digest and _digest(path_utils.serving_model_path(_local(record["model"]))) == digest:
                return {"model": record["model"], "why": f"{why}, the same SavedModel as this blessed model"}
        return {"copy_from": live, "why": f"{why}, pushed from no model under {pipeline_root}: graded as served"}
    if pushes:
        for record in reversed(pushes):
            if not record["rolled_back"] and _model_exists(record["model"]):
                return {"model": record["model"],
                        "why": f"the newest model pushed and not rolled back (to {record['destination']}); the "
                               f"serving directory {serving_dir} is not readable from here", **_data_of(record)}
        return None
    blessed = blessed_models(pipeline_root)
    if blessed:
        return {"model": blessed[-1]["model"],
                "why": "the newest blessed model: this pipeline root has no push records (it was made before "
                       f"them) and the serving directory {serving_dir} is not readable from here"}
    return None


def baseline_uri(baseline: Optional[standard_artifacts.Model]) -> Optional[str]:
    """The URI of the model a ServedModel output points at, or None when there is none."""
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
def ServedModel(
    pipeline_root: tfx.dsl.components.Parameter[str],
    serving_dir: tfx.dsl.components.Parameter[str],
    baseline: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
) -> None:
    """Points ``baseline`` at the model being served (``found`` 1), or at none (0): see the module."""
    served = find_served(pipeline_root, serving_dir)
    tf.io.gfile.makedirs(baseline.uri)
    if served and "copy_from" in served:
        copy_saved_model(served.pop("copy_from"), path_utils.serving_model_dir(baseline.uri))
        served["model"] = stored_uri(baseline.uri)
    if served:
        write_json(served, baseline.uri, RECORD_FILE)
        baseline.set_string_custom_property("baseline_model", served["model"])
        baseline.set_string_custom_property("why", served["why"])
        baseline.set_string_custom_property("data_fingerprint", served.get("data_fingerprint", ""))
    baseline.set_int_custom_property("found", int(bool(served)))

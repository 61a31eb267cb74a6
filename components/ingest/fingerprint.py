"""DataFingerprint: has anything changed since the model being served was trained? If not, stop.

A scheduled run on data that has not changed would re-read, re-hash and
re-validate every image and train again on the same images. This step, which
runs before ingestion, decides whether the run trains at all:

- it lists the files as ingestion lists them (``list_images``) and hashes each
  file's content (SHA-256, the hash ingestion splits by), except a file whose
  path, size, modification time and change time are those of the last run's
  record: its hash is taken from there (``data.rehash``, or ``thaw run
  --rehash``, hashes every file again);
- the fingerprint is one SHA-256 over every file's path, label and content
  hash and over the configuration that decides which model is trained and
  whether it may be served (the splits and ingestion limits, the ``training``
  and ``data_limits`` runtime parameters, the gate's thresholds, serving's
  budgets); ``settings`` below says exactly which;
- the AtomicPusher records the fingerprint of the run it pushed in its push
  record (``push.json``), and ServedModel hands the served model's on
  (``baseline.json``), so "the data the served model was trained on" follows
  the served version through rollbacks;
- when the two are equal, and the run is not forced (``force``: ``thaw run
  --force``, the ``force`` runtime parameter on Kubeflow), ``train`` is 0 and
  the pipeline runs nothing after this step: nothing is ingested, trained or
  pushed, and ``thaw run`` exits with its own code and line.

The hashes reused here are the fingerprint's own. Ingestion keeps its own
record by the same rule (``reuse.py``: a file unchanged by path, label, size
and times has its tf.Example copied from the last ingestion instead of being
read again). The record (``files.jsonl``) lists every file with its size,
times and hash; it is this artifact's own, found by the next run under the
pipeline root.
"""

import concurrent.futures
import functools
import hashlib
import json
import logging
import os
import time
from typing import Callable, Iterable, Optional

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.artifacts import DataFingerprint as DataFingerprintArtifact
from components.artifacts import read_json, store_mount, stored_uri, write_json
from components.gate.baseline import RECORD_FILE, _readable_root, _records
from components.ingest.image_records import RACY_NS, Refused, file_state, read, trusted_state
from components.ingest.manifest import ManifestError
from components.ingest.run_parameters import check_run_parameters
from components.spec import ConfigError

FINGERPRINT_FILE = "fingerprint.json"
FILES_FILE = "files.jsonl"
# Bumped whenever what goes into the fingerprint changes, so no old record ever matches a new one by accident.
SCHEME = 1
_RACY_NS = RACY_NS  # 2 s, as ingestion's reuse record (image_records.trusted_state)
log = logging.getLogger(__name__)


def hash_file(uri: str, limit: int) -> str:
    """The SHA-256 of the file's bytes as stored (what ingestion's ``sha256`` is), read as ingestion
    reads them (``image_records.read``): a FIFO, a device or a file over ``limit`` bytes
    (data.max_file_bytes) is refused unread, so it can neither hang the step nor be read in full."""
    return hashlib.sha256(read(uri, limit)).hexdigest()


def _entry(item: tuple[str, str, str], previous: dict[str, dict], rehash: bool,
           hasher: Callable[[str], str]) -> dict:
    """One file's record: reused from ``previous`` when its path and state match exactly, else hashed."""
    uri, shown, label = item
    try:
        state = file_state(uri)
    except Exception as exc:  # noqa: BLE001 (missing, unreadable: ingestion will quarantine it and say why)
        return {"uri": uri, "path": shown, "label": label, "sha256": None, "error": type(exc).__name__}
    old = previous.get(uri)
    if (not rehash and state and old and old.get("sha256") and old["label"] == label and old["path"] == shown
            and all(old.get(key) == value for key, value in state.items())):
        return {**old, "reused": True}
    try:
        sha256 = hasher(uri)
    except Exception as exc:  # noqa: BLE001 (a FIFO, a folder, a broken mount: ingestion says what it is)
        error = exc.code.value if isinstance(exc, Refused) else type(exc).__name__
        return {"uri": uri, "path": shown, "label": label, **state, "sha256": None, "error": error}
    # A file that changed while it was hashed is recorded without its times, so the next run hashes it again;
    # so is one changed within the last _RACY_NS: on a file system with coarse timestamps a later write in
    # the same tick could leave size and times as recorded (git's "racily clean" entries).
    state = trusted_state(state, file_state(uri), _RACY_NS)
    return {"uri": uri, "path": shown, "label": label, **state, "sha256": sha256, "reused": False}


def fingerprint_files(items: Iterable[tuple[str, str, str]], previous: dict[str, dict], rehash: bool = False,
                      hasher: Optional[Callable[[str], str]] = None, threads: int = 8,
                      limit: int = 1 << 30) -> list[dict]:
    """Every file's record (path, label, state, content hash, and whether the hash was ``reused``);
    files over ``limit`` bytes (data.max_file_bytes) are not hashed."""
    items = list(items)
    hasher = hasher or functools.partial(hash_file, limit=limit)
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:  # hashlib lets go of the GIL
        entries = list(pool.map(lambda item: _entry(item, previous, rehash, hasher), items))
    return sorted(entries, key=lambda e: (e["path"], e["label"], e["uri"]))


def digest(settings: dict, entries: list[dict]) -> dict:
    """The fingerprint of the data and settings, and each part's own digest (to say which changed)."""
    data = hashlib.sha256()
    for e in entries:
        data.update(json.dumps([e["path"], e["label"], e["sha256"] or f"unreadable: {e.get('error')}"]).encode())
        data.update(b"\n")
    settings_digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    whole = hashlib.sha256(f"thaw data fingerprint {SCHEME}\n{settings_digest}\n{data.hexdigest()}".encode())
    return {"fingerprint": whole.hexdigest(), "data_digest": data.hexdigest(), "settings_digest": settings_digest}


def settings(settings_json: str, training_json: str, limits_json: str = "") -> dict:
    """What of the configuration decides which model is trained and whether it may be served: the
    ingestion settings, the gate's thresholds and serving's budgets (``settings_json``, from
    ThawConfig.fingerprint_settings), the schema file's content (the data contract ExampleValidator,
    the data gate and Transform read: an edited schema must judge the data again), and the runtime
    parameters ``training`` (backbone, head, stages) and ``data_limits`` (the data gate's limits:
    stricter ones must judge the data again)."""
    found = json.loads(settings_json)
    schema = found.get("data", {}).get("schema_file")
    if schema:
        try:
            with tf.io.gfile.GFile(schema, "rb") as f:
                found["schema_sha256"] = hashlib.sha256(f.read()).hexdigest()
        except Exception as exc:  # noqa: BLE001 (ImportSchemaGen says what is wrong with it; never "unchanged")
            found["schema_sha256"] = f"unreadable: {type(exc).__name__} at {time.time_ns()}"
    return {**found, "training": json.loads(training_json) if training_json else None,
            "data_limits": json.loads(limits_json) if limits_json else None}


def latest_record(pipeline_root: str) -> tuple[Optional[str], dict[str, dict]]:
    """The newest fingerprint record under the pipeline root (its folder) and its files by uri."""
    try:
        _readable_root(pipeline_root)
    except Exception:  # noqa: BLE001 (an object store this pod cannot list: every file is hashed)
        return None, {}
    found = []
    for folder, files in _records(pipeline_root, FINGERPRINT_FILE, FILES_FILE):
        try:
            record = read_json(folder, FINGERPRINT_FILE)
        except Exception as exc:  # noqa: BLE001 (a damaged record only costs hashing again)
            log.warning("DataFingerprint: skipping the record in %s (%s: %s)", folder, type(exc).__name__, exc)
            continue
        if record and record.get("scheme") == SCHEME:
            found.append((record.get("made_at", 0), folder))
    if not found:
        return None, {}
    folder = max(found)[1]
    return folder, _read_files(folder) or {}


def _read_files(folder: str) -> Optional[dict[str, dict]]:
    """A record's files by uri; None, with a warning naming the file, when it is missing or damaged (a run
    killed while writing it): the record only saves hashing, so every file is then hashed again."""
    path = os.path.join(folder, FILES_FILE)
    try:
        with tf.io.gfile.GFile(path) as f:
            return {e["uri"]: e for e in (json.loads(line) for line in f if line.strip())}
    except Exception as exc:  # noqa: BLE001
        log.warning("DataFingerprint: cannot read %s (%s: %s); its files are hashed again", path,
                    type(exc).__name__, exc)
        return None


def write_files(entries: list[dict], folder: str) -> None:
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(os.path.join(folder, FILES_FILE), "w") as f:
        for e in entries:
            f.write(json.dumps({k: v for k, v in e.items() if k != "reused"}) + "\n")


def changes(entries: list[dict], served_files: Optional[dict[str, dict]]) -> Optional[dict[str, int]]:
    """Files added, changed and removed against the served model's record, when it is readable."""
    if served_files is None:
        return None
    now = {e["path"]: (e["label"], e["sha256"]) for e in entries}
    before = {e["path"]: (e["label"], e["sha256"]) for e in served_files.values()}
    return {"added": len(set(now) - set(before)), "removed": len(set(before) - set(now)),
            "changed": sum(1 for p in set(now) & set(before) if now[p] != before[p])}


def _files_of(folder: Optional[str]) -> Optional[dict[str, dict]]:
    folder = store_mount(folder) if folder else None
    if not folder or not tf.io.gfile.exists(os.path.join(folder, FILES_FILE)):
        return None
    return _read_files(folder)


def decide(now: dict, served: Optional[dict], force: bool) -> tuple[bool, str]:
    """(train?, why): train unless the served model was trained on exactly this fingerprint."""
    if not served:
        return True, "no model is served yet"
    if not served.get("data_fingerprint"):
        return True, (f"the served model ({served.get('model')}) has no record of the data it was trained on "
                      "(pushed before data fingerprints, or from elsewhere)")
    if served["data_fingerprint"] != now["fingerprint"]:
        what = [part for part, key in (("the data", "data_digest"), ("the configuration", "settings_digest"))
                if served.get(key) and served[key] != now[key]]
        return True, f"{' and '.join(what) or 'the data or configuration'} changed since the served model was trained"
    if force:
        return True, "unchanged since the served model was trained, but the run was forced"
    return False, "unchanged since the served model was trained"


def fingerprint_data(data_root: str, allowed_roots: list[str], settings_: dict, pipeline_root: str,
                     served: Optional[dict], force: bool, rehash: bool, output: str) -> dict:
    """Lists and hashes the data, compares it with the served model's, writes the record into ``output``."""
    from components.ingest.image_example_gen import list_images

    began = time.perf_counter()
    previous_folder, previous = latest_record(pipeline_root)
    try:
        items, _ = list_images(data_root, allowed_roots)
    except ManifestError as exc:  # ingestion records it and the data gate stops the run on it
        items, listing_problem = [], str(exc)
    else:
        listing_problem = None
    entries = fingerprint_files(items, previous, rehash,
                                limit=settings_.get("data", {}).get("max_file_bytes", 1 << 30))
    now = digest(settings_, entries)
    if listing_problem:  # never "unchanged": ingestion must run to say what is wrong
        now["fingerprint"] = f"unreadable manifest: {listing_problem}"
    train, why = decide(now, served, force)
    hashed = sum(1 for e in entries if e.get("reused") is False)
    reused = sum(1 for e in entries if e.get("reused"))
    record = {
        "scheme": SCHEME, **now, "data_root": data_root, "settings": settings_, "made_at": time.time(),
        "files": len(entries), "hashed": hashed, "reused": reused, "unreadable": len(entries) - hashed - reused,
        "rehash": rehash,
        "previous_record": stored_uri(previous_folder) if previous_folder else None,
        "served": served, "changes": changes(entries, _files_of((served or {}).get("fingerprint_record"))),
        "train": train, "forced": bool(force and served and served.get("data_fingerprint") == now["fingerprint"]),
        "why": why, "seconds": round(time.perf_counter() - began, 3),
    }
    write_files(entries, output)
    write_json(record, output, FINGERPRINT_FILE)
    log.info("DataFingerprint: %d files, %d hashed, %d reused from %s; %s", len(entries), hashed,
             reused, previous_folder or "no earlier record", why)
    return record


def parse_force(value: str) -> bool:
    """The ``force`` runtime parameter: true or false (also 1/0, yes/no); anything else stops the run, saying so."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ConfigError("the run's runtime parameter `force`", [f"force: {value!r} is neither true nor false; set "
                                                              "force=true to train even on unchanged data"])


@tfx.dsl.components.component
def DataFingerprint(
    fingerprint: tfx.dsl.components.OutputArtifact[DataFingerprintArtifact],
    data_root: tfx.dsl.components.Parameter[str],
    pipeline_root: tfx.dsl.components.Parameter[str],
    settings_json: tfx.dsl.components.Parameter[str],
    allowed_roots_json: tfx.dsl.components.Parameter[str] = "[]",
    training_json: tfx.dsl.components.Parameter[str] = "",
    limits_json: tfx.dsl.components.Parameter[str] = "",
    force: tfx.dsl.components.Parameter[str] = "false",
    rehash: tfx.dsl.components.Parameter[int] = 0,
    baseline_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model] = None,
) -> None:
    """Sets ``train`` to 1, or to 0 when nothing changed since the served model was trained: see the module.

    As the run's first task it checks the ``training`` and ``data_limits``
    parameters first (components.ingest.run_parameters), as ImageExampleGen does.
    """
    check_run_parameters(training_json, limits_json)
    forced = parse_force(force)
    served = read_json(baseline_model.uri, RECORD_FILE) if baseline_model is not None else None
    record = fingerprint_data(data_root, json.loads(allowed_roots_json), settings(settings_json, training_json, limits_json),
                              pipeline_root, served, forced, bool(rehash), fingerprint.uri)
    fingerprint.set_string_custom_property("fingerprint", record["fingerprint"])
    fingerprint.set_int_custom_property("train", int(record["train"]))
    fingerprint.set_int_custom_property("hashed", record["hashed"])
    fingerprint.set_int_custom_property("reused", record["reused"])

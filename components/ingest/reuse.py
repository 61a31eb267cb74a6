"""Ingestion reuses the last ingestion's work: an unchanged file's tf.Example is copied, not made again.

When some files changed (say 5% new ones), everything else was read, checked,
decoded and encoded by the last ingestion already. So ingestion leaves a
record next to its report (``reuse.json``: the examples' files and sizes, and
the limits and code they were made with; each ingested file's line in the
report's ``outcomes/part-*.jsonl`` holds its uri, shown path, label, size,
times, content hash and size in pixels), and the next ingestion finds the newest such record
under the pipeline root, as DataFingerprint finds its own (``latest_record``).
A file whose uri, shown path, label, size and times are those recorded (by
DataFingerprint's rule: size and modification time, locally the change time
too; a file recorded within 2 s of a change is never trusted by its times;
``data.rehash`` reads every file again) is not read: its serialized tf.Example
is copied from the last run's examples, into the split its content hash gives
under this run's splits. Everything else (new, changed, moved files, and every
file the last run quarantined) takes the full path. Copies and label conflicts
are still judged over every image, the reused ones by their recorded hash, so
the examples, splits and report are those a full ingestion gives.

Why a record in the artifacts and not TFX's ``Resolver`` for the latest
Examples: the open-source Kubeflow backend does not run resolver executors
(see components/gate/baseline.py), and a Resolver would hand over examples
without the per-file sizes and times that say which are still true. The record
names the examples by their stored URI (gs://, minio://, read through the
store's mount like every record under the pipeline root), so the same code
serves LocalDagRunner and Kubeflow.

Nothing here may cost data or fail a run: a record that cannot be found or
read, examples missing or not of the recorded size, settings or code that
changed (the limits, and image_records.py, which decides what an example is),
or fewer records found in the examples than files reused, mean full ingestion,
with a warning that names the path.

Workers run ``reused_example``: this module imports no TensorFlow at its top.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import struct
import sys
import time
import zlib
from collections import Counter
from typing import Iterable, Optional

from components.ingest import image_records
from components.ingest.image_records import Item, file_state, split_for

RECORD_FILE = "reuse.json"
INDEX_DIR = "outcomes"  # the report's per-file outcomes: an ingested file's line is its entry (image_records.outcome)
FOUND = "found"  # the outcome line's kind for a record copied from the last run's examples
# Bumped whenever the record's meaning changes, so no old record is read as a new one.
SCHEME = 1
log = logging.getLogger(__name__)


def libraries() -> dict:
    """The versions of what decides an example's bytes besides image_records.py: Pillow (what opens, what is
    corrupt or truncated, the PNG it re-encodes CMYK/16-bit images to) with the codecs and the zlib (or
    zlib-ng) its wheel bundles, Python's zlib, and Python itself. A new container image with any of them
    changed reads every file again instead of copying examples another build made."""
    import PIL
    from PIL import features

    found = {"pillow": PIL.__version__, "python": sys.version.split()[0], "zlib": zlib.ZLIB_RUNTIME_VERSION}
    for name in ("zlib", "zlib_ng", "jpg", "libtiff", "jpg_2000", "webp"):  # None: not in this build
        try:
            found[f"pillow_{name}"] = features.version(name)
        except Exception:  # noqa: BLE001 (a name this Pillow does not know)
            found[f"pillow_{name}"] = None
    return found


def checks(max_pixels: int, min_side: int, max_file_bytes: int) -> dict:
    """What decides whether a file is ingested and what its tf.Example holds: the limits, the code that
    checks and encodes it (image_records.py's bytes: any change to it reads every file again), and the
    libraries that code calls (``libraries``)."""
    with open(image_records.__file__, "rb") as f:
        code = hashlib.sha256(f.read()).hexdigest()
    return {"scheme": SCHEME, "max_pixels": max_pixels, "min_side": min_side, "max_file_bytes": max_file_bytes,
            "image_records_sha256": code, "libraries": libraries()}


@dataclasses.dataclass
class Plan:
    """Which files take the full path (``fresh``) and which are copied (``reused``: (uri, shown path,
    label, packed entry) each, made into the records ``image_records.inspect_item`` would make by
    ``reused_record`` in the workers, without reading the file), from which examples, and why not more."""
    fresh: list
    reused: list = dataclasses.field(default_factory=list)
    examples: Optional[str] = None  # the last run's Examples folder, as this pod reads it
    shards: list = dataclasses.field(default_factory=list)  # its files, as this pod reads them
    record: Optional[str] = None  # the record's folder
    why: str = ""

    def summary(self) -> dict:
        return {"reused": len(self.reused), "read": len(self.fresh), "record": self.record,
                "examples": self.examples, "why": self.why}


def everything(items: Iterable[Item], why: str) -> Plan:
    return Plan(list(items), why=why)


def latest_record(pipeline_root: str) -> Optional[str]:
    """The folder of the newest ingestion record under the pipeline root, or None."""
    from components.artifacts import read_json
    from components.gate.baseline import _records

    found = []
    for folder, _ in _records(pipeline_root, RECORD_FILE):
        try:  # everything about one record: a damaged or foreign one is skipped, never stops the search
            record = read_json(folder, RECORD_FILE)
            if not isinstance(record, dict) or not isinstance(record.get("checks"), dict):
                raise ValueError("not an object with an object 'checks'")
            if record["checks"].get("scheme") == SCHEME:
                made_at = record.get("made_at", 0)
                if isinstance(made_at, bool) or not isinstance(made_at, (int, float)):
                    raise ValueError(f"made_at is {made_at!r}, not a number")
                found.append((made_at, folder))
        except Exception as exc:  # noqa: BLE001 (a damaged record only costs reading the files again)
            log.warning("ImageExampleGen: skipping the reuse record %s (%s: %s)", os.path.join(folder, RECORD_FILE),
                        type(exc).__name__, exc)
    return max(found)[1] if found else None


def _examples_intact(record: dict, folder: str) -> tuple[Optional[str], str]:
    """(the examples folder as read here, "") when every shard recorded is there at its recorded size,
    else (None, what is wrong, naming the path)."""
    import tensorflow as tf

    from components.artifacts import store_mount

    examples = store_mount(record["examples"])
    if examples is None:
        return None, f"the examples {record['examples']} cannot be read from this pod (no store mount)"
    if not record.get("shards"):
        return None, f"the record {os.path.join(folder, RECORD_FILE)} lists no example files"
    for shard in record["shards"]:
        path = os.path.join(examples, shard["file"])
        try:
            size = tf.io.gfile.stat(path).length
        except Exception as exc:  # noqa: BLE001
            return None, f"{path} cannot be read ({type(exc).__name__}: {exc})"
        if size != shard["size"]:
            return None, f"{path} is {size} bytes, not the {shard['size']} recorded"
    return examples, ""


# What the driver keeps of a file it may reuse, packed (~100 bytes a file, not a dict of ~1 KB): its content
# hash (raw), width, height, and the state recorded (size, mtime_ns, ctime_ns; -1: none, as on a remote store).
_ENTRY = struct.Struct("<32sIIqqq")


def _pack(entry: dict) -> bytes:
    return _ENTRY.pack(bytes.fromhex(entry["sha256"]), entry["width"], entry["height"], entry["size"],
                       entry["mtime_ns"], entry.get("ctime_ns", -1))


def _same_state(packed: bytes, state: dict) -> bool:
    return bool(state) and _ENTRY.unpack(packed)[3:] == (state["size"], state["mtime_ns"], state.get("ctime_ns", -1))


def _index(folder: str, listed: dict[str, Item]) -> dict[str, bytes]:
    """uri -> packed entry, for the record's files listed now under the same shown path and label (streamed:
    only those are kept; keyed by the listing's own uri strings)."""
    import tensorflow as tf

    index = {}
    for part in sorted(tf.io.gfile.glob(os.path.join(folder, INDEX_DIR, "part*"))):
        with tf.io.gfile.GFile(part) as f:
            for line in f:
                if not line.strip():
                    continue
                entry = json.loads(line)
                item = listed.get(entry.get("uri")) if entry["kind"] == "example" and "size" in entry else None
                if item and (entry["path"], entry["label"]) == item[1:]:
                    index[item[0]] = _pack(entry)
    return index


def reused_records(_impulse, entries: list, splits: list) -> Iterable[dict]:
    """In the workers: ``reused_record`` of each of ``Plan.reused``."""
    return (reused_record(entry, splits) for entry in entries)


def reused_record(reused: tuple[str, str, str, bytes], splits: list) -> dict:
    """In the workers: the record ``image_records.inspect_item`` would make of a reused file (``Plan.reused``'s
    entry), without its bytes, its split recomputed under this run's splits."""
    uri, path, label, packed = reused
    sha, width, height, size, mtime_ns, ctime_ns = _ENTRY.unpack(packed)
    state = {"size": size, "mtime_ns": mtime_ns, **({"ctime_ns": ctime_ns} if ctime_ns != -1 else {})}
    return {"kind": "example", "uri": uri, "path": path, "label": label, "sha256": sha.hex(), "width": width,
            "height": height, "state": state, "split": split_for(sha.hex(), splits), "reused": True}


def plan(items: list[Item], pipeline_root: Optional[str], checks_: dict, rehash: bool = False,
         threads: int = 8) -> Plan:
    """Which files can be reused from the newest ingestion record under ``pipeline_root``."""
    if not pipeline_root:
        return everything(items, "no pipeline root to look for an earlier ingestion in")
    if rehash:
        return everything(items, "data.rehash is set: every file is read again")
    try:
        folder = latest_record(pipeline_root)
    except Exception as exc:  # noqa: BLE001 (an object store this pod cannot list)
        log.warning("ImageExampleGen: cannot search %s for the last ingestion (%s: %s); every file is read",
                    pipeline_root, type(exc).__name__, exc)
        return everything(items, f"the pipeline root {pipeline_root} cannot be searched")
    if folder is None:
        return everything(items, "no earlier ingestion is recorded under the pipeline root")
    try:
        from components.artifacts import read_json

        record = read_json(folder, RECORD_FILE)
        if record["checks"] != checks_:
            return everything(items, ("the ingestion limits, image_records.py or the libraries it uses (Pillow, zlib) "
                                    "changed since the last ingestion"))
        examples, problem = _examples_intact(record, folder)
        if examples is None:
            log.warning("ImageExampleGen: cannot reuse the last ingestion's examples: %s; every file is read",
                        problem)
            return everything(items, problem)
        uris, shown_paths = Counter(uri for uri, _, _ in items), Counter(shown for _, shown, _ in items)
        listed = {item[0]: item for item in items if uris[item[0]] == 1 and shown_paths[item[1]] == 1}
        del uris, shown_paths  # a uri or shown path listed twice is never reused
        index = _index(folder, listed)
        del listed
    except Exception as exc:  # noqa: BLE001 (a damaged record: read the files instead)
        log.warning("ImageExampleGen: cannot read the reuse record in %s (%s: %s); every file is read", folder,
                    type(exc).__name__, exc)
        return everything(items, f"the record in {folder} cannot be read")

    def match(item: Item) -> Optional[tuple[str, str, str, bytes]]:
        packed = index.get(item[0])
        if packed is None:
            return None
        try:
            state = file_state(item[0])
        except Exception:  # noqa: BLE001 (gone: the full path quarantines it and says why)
            return None
        return (*item, packed) if _same_state(packed, state) else None

    matched = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(items), 4096):  # a Future (~0.5 KB) per file in flight, not per file listed
            matched.extend(pool.map(match, items[start:start + 4096]))
    reused = [m for m in matched if m]
    fresh = [item for item, m in zip(items, matched) if not m]
    shards = [os.path.join(examples, shard["file"]) for shard in record["shards"]]
    return Plan(fresh, reused, examples, shards, folder, f"{len(fresh)} files new or changed since the last ingestion")


def keep(record: dict) -> tuple[str, tuple[str, str, str]]:
    """shown path -> (label, sha256, split) of a reused file: what ``reused_example`` looks for (a side
    input made in the pipeline, not a dict pickled into it)."""
    return record["path"], (record["label"], record["sha256"], record["split"])


def _read_varint(buf, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(buf) -> Iterable[tuple[int, object]]:
    """(field number, value) of a protobuf message: an int (varint) or a memoryview (length-delimited)."""
    at = 0
    while at < len(buf):
        tag, at = _read_varint(buf, at)
        if tag & 7 == 0:
            value, at = _read_varint(buf, at)
        elif tag & 7 == 2:
            length, at = _read_varint(buf, at)
            value, at = buf[at:at + length], at + length
        else:
            raise ValueError(f"wire type {tag & 7} is not in a tf.Example that ingestion writes")
        yield tag >> 3, value


def example_fields(serialized: bytes, keys: Iterable[str]) -> dict[str, bytes]:
    """The bytes features ``keys`` of a serialized tf.Example (the inverse of ``encode_example`` for
    those), read without copying the image: how a record of the last run is matched to a file."""
    wanted, found = set(keys), {}
    for number, features in _fields(memoryview(serialized)):
        for entry_number, entry in (_fields(features) if number == 1 else ()):
            if entry_number != 1:
                continue
            parts = dict(_fields(entry))
            key = bytes(parts.get(1, b"")).decode("utf-8")
            if key in wanted:
                for kind, values in _fields(parts.get(2, b"")):
                    if kind == 1:  # bytes_list
                        found[key] = b"".join(bytes(v) for n, v in _fields(values) if n == 1)
    return found


def reused_example(serialized: bytes, keep: dict, dropped: dict) -> Iterable[tuple[str, str, bytes]]:
    """(split, shown path, the record as it is) for a record of the last run's examples that stands for a
    file reused in this run (``keep``: shown path -> (label, sha256, split)) and not dropped as a copy now."""
    found = example_fields(serialized, ("source", "label", "sha256"))
    path = found.get("source", b"").decode("utf-8")
    wanted = keep.get(path)
    if wanted and path not in dropped and (found.get("label", b"").decode("utf-8"),
                                           found.get("sha256", b"").decode()) == tuple(wanted[:2]):
        yield wanted[2], path, serialized


def found_line(found: tuple[str, str, bytes]) -> str:
    """The outcome line of a record copied from the last run's examples (``reused_example``)."""
    return json.dumps({"kind": FOUND, "path": found[1]})


def copied_all(outcomes: Iterable[dict]) -> str:
    """"" when every reused file that is still an example (not a copy of another now) had its record
    found in the last run's examples, once; else what is wrong: the run must then ingest in full (a
    record missing would lose an image, one found twice would be written twice)."""
    expected, found, lines = set(), set(), 0
    for line in outcomes:
        if line["kind"] == FOUND:
            lines += 1
            found.add(line["path"])
        elif line["kind"] == "example" and line.get("reused"):
            expected.add(line["path"])
    if lines == len(found) and found == expected:
        return ""
    return (f"{len(found)} distinct of {lines} records found for the {len(expected)} files reused, "
            f"{len(expected - found)} of those not found")


def write_record(report_dir: str, examples_dir: str, checks_: dict) -> None:
    """The record the next ingestion reuses from: the examples' shards and sizes, and the limits and code
    they were made with; written last, so a record exists only for an ingestion that finished."""
    import tensorflow as tf

    from components.artifacts import stored_uri, write_json

    shards = []
    for path in sorted(tf.io.gfile.glob(os.path.join(examples_dir, "Split-*", "*"))):
        shards.append({"file": path[len(examples_dir.rstrip("/")) + 1:], "size": tf.io.gfile.stat(path).length})
    write_json({"checks": checks_, "examples": stored_uri(examples_dir), "shards": shards, "index": INDEX_DIR,
                "made_at": time.time()}, report_dir, RECORD_FILE)

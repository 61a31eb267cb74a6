"""What ingestion does to each file, in the Beam workers, without TensorFlow.

Every function here runs once per image inside Beam workers. Importing
TensorFlow there costs each worker seconds of start-up and about a gigabyte of
memory, for nothing a worker needs: files are read with Beam's own FileSystems
(local paths, mounted volumes, gs://) and each tf.Example is serialized by
``encode_example``, a few lines of protobuf wire format that the tests check
against TensorFlow's own parser.
"""

import errno
import hashlib
import io
import json
import os
import stat
import time
from typing import Iterable, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from components.ingest.quarantine import Reason

# Formats the shared decoder (tf.io.decode_image) reads as stored.
DECODABLE_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "BMP": "bmp"}
# Pixel modes it reads as stored; other modes (CMYK JPEG, 16-bit PNG, ...) are
# re-encoded as 8-bit RGB PNG, and the record says so.
DECODABLE_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}

# Our own limit (data.max_pixels), checked from the header before any pixel
# is decoded, is the guard against decompression bombs; PIL's global one would
# only report the same thing with less to say.
Image.MAX_IMAGE_PIXELS = None

# An item is (uri to read, path shown in reports, label).
Item = tuple[str, str, str]
# A file changed this recently (nanoseconds) is not trusted by its times: DataFingerprint's window (git's
# "racily clean"): on a file system with coarse timestamps a later write in the same tick keeps them.
RACY_NS = 2_000_000_000


class Refused(Exception):
    """A file that is not read: its quarantine code and the detail."""

    def __init__(self, code: Reason, detail: str):
        super().__init__(f"{code.value}: {detail}")
        self.code, self.detail = code, detail


_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def read(uri: str, limit: int) -> bytes:
    """The file's bytes as stored, refusing before reading anything that is not a regular
    file of at most ``limit`` bytes: a FIFO would block the worker for ever, /dev/zero never ends.
    """
    if "://" in uri:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read(limit + 1)
    else:
        try:  # non-blocking, so opening a FIFO returns at once instead of waiting for a writer
            fd = os.open(uri, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(Reason.SYMLINK_LOOP, f"{uri} never resolves to a file") from exc
            raise
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
                raise Refused(Reason.NOT_REGULAR_FILE, f"{uri} is {kind}; only image files are read")
            if info.st_size > limit:
                raise Refused(Reason.OVER_MAX_FILE_BYTES,
                              f"{info.st_size} bytes, over the limit of {limit} (data.max_file_bytes)")
            data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(Reason.OVER_MAX_FILE_BYTES, f"over the limit of {limit} bytes (data.max_file_bytes)")
    return data


def file_state(uri: str) -> dict:
    """What says a file is the one recorded, by DataFingerprint's rule: size and modification time, and
    locally the change time too (no tool sets it back, as ``touch`` can the modification time). Empty (never
    reused) where the store gives no modification time. Beam's FileSystems, not TensorFlow: workers call it.
    Remotely one metadata request for this very object (``FileSystem.metadata``: one GET of the object's
    metadata on gs:// or s3://), never ``match``, which reads ``[ ] * ?`` in a name as a pattern and would
    give ``photo [1].jpg`` the size and time of ``photo 1.jpg``."""
    if "://" in uri:
        info = FileSystems.get_filesystem(uri).metadata(uri)
        if not info.last_updated_in_seconds:
            return {}
        return {"size": int(info.size_in_bytes), "mtime_ns": int(info.last_updated_in_seconds * 1e9)}
    info = os.stat(uri)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}


def _state_or_empty(uri: str) -> dict:
    try:
        return file_state(uri)
    except Exception:  # noqa: BLE001 (gone, unreadable: the read says what it is)
        return {}


def trusted_state(before: dict, after: dict, racy_ns: Optional[int] = None) -> dict:
    """The state to record for a file read between two looks at it: empty (so the next run reads it again)
    when it changed in between, or changed within ``racy_ns`` (default RACY_NS) of now. DataFingerprint's
    rule too."""
    newest = max(after.get("mtime_ns", 0), after.get("ctime_ns", 0))
    window = RACY_NS if racy_ns is None else racy_ns
    return after if before and after == before and time.time_ns() - newest >= window else {}


def content_keys(record: dict) -> Iterable[tuple[str, tuple[str, str, str]]]:
    """(content hash, (shown path, label, the file its example was written to)) of a decodable image, to
    find copies; nothing for a quarantined file (a text file under two classes is "not an image", not a
    conflict). A reused file's example is not written (it is copied later, unless dropped): no file."""
    if record["kind"] == "example":
        yield record["sha256"], (record["path"], record["label"], record.get("file", ""))


def decide_duplicates(group: tuple[str, Iterable[tuple[str, str, str]]]) -> Iterable[tuple[str, tuple[str, str, str]]]:
    """(shown path, (code, detail, file written)) for each copy to drop: identical content is kept once,
    and the same content under two labels is a conflict, so no copy is kept."""
    _, copies = group
    copies = sorted(copies)
    labels = sorted({label for _, label, _ in copies})
    if len(labels) > 1:
        for path, _, file in copies:
            yield path, (Reason.LABEL_CONFLICT.value, f"the same image is labelled {', '.join(labels)}", file)
        return
    for path, _, file in copies[1:]:
        yield path, (Reason.DUPLICATE.value, f"a copy of {copies[0][0]}", file)


# Signature -> (format, how a whole file of it ends); a file that starts like an
# image but does not end like one was cut short.
_SIGNATURES = [
    (b"\xff\xd8\xff", "JPEG", lambda d: d.rstrip(b"\0\r\n").endswith(b"\xff\xd9")),
    (b"\x89PNG\r\n\x1a\n", "PNG", lambda d: d.endswith(b"IEND\xaeB`\x82")),
    (b"GIF8", "GIF", lambda d: d.rstrip(b"\0").endswith(b";")),
    (b"BM", "BMP", lambda d: len(d) >= 6 and len(d) >= int.from_bytes(d[2:6], "little")),
]


def cut_short(data: bytes) -> str | None:
    """The format a file starts as, when it ends before a whole file of that format would."""
    for signature, fmt, whole in _SIGNATURES:
        if data.startswith(signature):
            return None if whole(data) else fmt
    return None


def _truncated(fmt: str, data: bytes) -> str:
    return (f"a {fmt} file cut short after {len(data)} bytes (it has no end-of-image marker); "
            "copy it again from its source")


def quarantine(path: str, label: str, code: Reason, detail: str) -> dict:
    """A quarantine record as it travels through Beam: plain strings, so every worker reads it."""
    return {"kind": "quarantine", "path": path, "label": label, "code": code.value, "detail": detail}


def inspect_image(uri: str, shown: str, label: str, max_pixels: int, min_side: int = 1,
                  max_bytes: int = 64 << 20) -> dict:
    """Reads and checks one file. Returns an 'example' record or a 'quarantine' one."""
    def bad(code: Reason, detail: str) -> dict:
        return quarantine(shown, label, code, detail)

    try:
        data = read(uri, max_bytes)
    except Refused as exc:
        return bad(exc.code, exc.detail)
    except FileNotFoundError:
        return bad(Reason.MISSING, f"no file at {uri}")
    except Exception as exc:  # noqa: BLE001 (permissions, a broken mount, a GCS error: per file)
        return bad(Reason.UNREADABLE, str(exc))
    if not data:
        return bad(Reason.EMPTY, "")
    try:
        # Image.open reads only the header: the pixel count is checked before
        # any decoding, so a decompression bomb never allocates its pixels.
        with Image.open(io.BytesIO(data)) as probe:
            fmt, (width, height) = probe.format, probe.size
    except Exception:  # PIL raises many types for "not an image"
        started_as = cut_short(data)
        return bad(Reason.TRUNCATED, _truncated(started_as, data)) if started_as else bad(Reason.NOT_AN_IMAGE, "")
    if fmt not in DECODABLE_FORMATS:
        return bad(Reason.UNSUPPORTED_FORMAT, f"{fmt}; convert it to JPEG or PNG")
    if width * height > max_pixels:
        return bad(Reason.TOO_LARGE, f"{width}x{height} pixels is over the limit of {max_pixels} (data.max_pixels)")
    if min(width, height) < min_side:
        return bad(Reason.TOO_SMALL, f"{width}x{height} pixels, under the minimum side of {min_side} (data.min_side)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            reencode = mode not in DECODABLE_MODES
            if reencode:
                png = _as_png(image)
    except Exception as exc:  # noqa: BLE001 (PIL raises many types for damaged pixels)
        started_as = cut_short(data)
        return bad(Reason.TRUNCATED, _truncated(started_as, data)) if started_as else bad(
            Reason.CORRUPT, f"{fmt}: {exc}; the file is whole but its pixels are damaged: export it again")
    return {
        "kind": "example",
        "path": shown,
        "label": label,
        "sha256": hashlib.sha256(data).hexdigest(),
        "image_bytes": png if reencode else data,
        "format": "png" if reencode else DECODABLE_FORMATS[fmt],
        "height": height,
        "width": width,
        "channels": 1 if mode in ("1", "L") else (4 if mode in ("RGBA", "LA") else 3),
        "reencoded": f"from {fmt} mode {mode}" if reencode else "",
    }


def _as_png(image: Image.Image) -> bytes:
    """8-bit RGB PNG, for pixel modes the shared decoder cannot read as stored."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def split_for(sha256: str, splits: list[tuple[str, float]]) -> str:
    """Assigns a split from the content hash: stable as images are added."""
    position = int(sha256[:16], 16) / float(1 << 64)
    cumulative = 0.0
    for name, fraction in splits:
        cumulative += fraction
        if position < cumulative:
            return name
    return splits[-1][0]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 on the wire: two's complement
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features: dict) -> bytes:
    """Serializes a tf.Example with one value per feature: bytes, str or int.

    Example{features=1: Features{feature=1: map<string, Feature>}}; a Feature
    is bytes_list=1 or int64_list=3 (packed varints).
    """
    entries = b""
    for key, value in features.items():
        if isinstance(value, str):
            value = value.encode("utf-8")
        if isinstance(value, bytes):
            feature = _field(1, _field(1, value))
        else:
            feature = _field(3, _field(1, _varint(int(value))))
        entries += _field(1, _field(1, key.encode("utf-8")) + _field(2, feature))
    return _field(1, entries)


def to_example(record: dict) -> bytes:
    """The tf.Example of one ingested image (the schema in schemas/ describes it)."""
    return encode_example({
        "image_bytes": record["image_bytes"],
        "label": record["label"],
        "height": record["height"],
        "width": record["width"],
        "channels": record["channels"],
        "format": record["format"],
        "source": record["path"],
        "sha256": record["sha256"],
        "reencoded": record["reencoded"],
    })


def outcome(record: dict) -> str:
    """What the report needs of one file: small, so the outcomes of millions fit. An ingested file's line
    is also its entry in ingestion's reuse record (components/ingest/reuse.py): what its tf.Example is,
    and, when its times can be trusted (``trusted_state``), its size and times."""
    if record["kind"] == "quarantine":
        return json.dumps({key: record[key] for key in ("kind", "path", "label", "code", "detail")})
    return json.dumps({"kind": "example", "split": record["split"], **{key: record[key] for key in INDEX_KEYS},
                       "reused": bool(record.get("reused")), **record.get("state", {})})


# What ingestion's reuse record keeps of each ingested file, besides its size and times.
INDEX_KEYS = ("uri", "path", "label", "sha256", "width", "height")


def inspect_item(item: Item, splits: list, max_pixels: int, min_side: int, max_bytes: int) -> dict:
    """Per file: the full check, and for an image its split and the state to record (``trusted_state``).
    Its bytes are those checked: the caller writes them at once and drops them (what every file's record
    holds until copies are found must stay small). A file whose size or times differ before and after it
    was read changed meanwhile (a copy still arriving, an editor saving): it is not ingested this time."""
    before = _state_or_empty(item[0])
    record = inspect_image(item[0], item[1], item[2], max_pixels, min_side, max_bytes)
    if record["kind"] == "example":
        after = _state_or_empty(item[0])
        if after != before:
            return quarantine(item[1], item[2], Reason.CHANGED_DURING_INGESTION,
                              "its size or times changed while it was read; rerun when it is written")
        record.update(split=split_for(record["sha256"], splits), uri=item[0], state=trusted_state(before, after))
    return record


def outcome_of(record: dict, dropped: dict) -> str:
    """``outcome`` of a file's record once copies are known (``dropped``: shown path -> (code, detail,
    file)): a copy, or an image with a conflicting label, is quarantined."""
    if record["kind"] == "example" and record["path"] in dropped:
        code, detail, _ = dropped[record["path"]]
        record = quarantine(record["path"], record["label"], Reason(code), detail)
    return outcome(record)

"""What ingestion does to each file, in the Beam workers, without TensorFlow.

Every function here runs once per image inside Beam workers. Importing
TensorFlow there costs each worker seconds of start-up and about a gigabyte of
memory, for nothing a worker needs: files are read with Beam's own FileSystems
(local paths, mounted volumes, gs://) and each tf.Example is serialized by
``encode_example``, a few lines of protobuf wire format that the tests check
against TensorFlow's own parser.
"""

import hashlib
import io
import json
from typing import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from PIL import Image

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


def read(uri: str) -> bytes:
    """The file's bytes as stored."""
    with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def hash_item(item: Item) -> Iterable[tuple[str, tuple[str, str]]]:
    """First pass: (content hash, (shown path, label)) for every readable, non-empty file.

    A file that cannot be read is left to the second pass, which says why.
    """
    try:
        data = read(item[0])
    except Exception:  # noqa: BLE001 (reported by inspect_image)
        return
    if data:
        yield hashlib.sha256(data).hexdigest(), (item[1], item[2])


def decide_duplicates(group: tuple[str, Iterable[tuple[str, str]]]) -> Iterable[tuple[str, str]]:
    """(shown path, reason) for each copy to drop: identical content is kept once, and
    the same content under two labels is a conflict, so no copy is kept."""
    _, copies = group
    copies = sorted(copies)
    labels = sorted({label for _, label in copies})
    if len(labels) > 1:
        for path, _ in copies:
            yield path, f"label conflict: the same image is labelled {', '.join(labels)}"
        return
    for path, _ in copies[1:]:
        yield path, f"duplicate of {copies[0][0]}"


def inspect_image(uri: str, shown: str, label: str, max_pixels: int, min_side: int = 1) -> dict:
    """Reads and checks one file. Returns an 'example' record or a 'quarantine' one."""
    def bad(reason: str) -> dict:
        return {"kind": "quarantine", "path": shown, "reason": reason}

    try:
        data = read(uri)
    except FileNotFoundError:
        return bad(f"missing: no file at {uri}")
    except Exception as exc:  # noqa: BLE001 (permissions, a broken mount, a GCS error: per file)
        return bad(f"unreadable: {exc}")
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
        return bad(f"too large: {width}x{height} pixels is over the limit of {max_pixels} (data.max_pixels)")
    if min(width, height) < min_side:
        return bad(f"too small: {width}x{height} pixels, under the minimum side of {min_side} (data.min_side)")
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
    return {
        "kind": "example",
        "path": shown,
        "label": label,
        "sha256": hashlib.sha256(data).hexdigest(),
        "image_bytes": buffer.getvalue() if reencode else data,
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
    """What the report needs of one file: small, so the outcomes of millions fit."""
    if record["kind"] == "quarantine":
        return json.dumps({"kind": "quarantine", "path": record["path"], "reason": record["reason"]})
    return json.dumps({"kind": "example", "split": record["split"], "label": record["label"],
                       "width": record["width"], "height": record["height"]})


def inspect_item(item: Item, dropped: dict, splits: list, max_pixels: int, min_side: int) -> dict:
    """Second pass, per file: a duplicate found in the first pass, or the full check and its split."""
    if item[1] in dropped:
        return {"kind": "quarantine", "path": item[1], "reason": dropped[item[1]]}
    record = inspect_image(item[0], item[1], item[2], max_pixels, min_side)
    if record["kind"] == "example":
        record["split"] = split_for(record["sha256"], splits)
    return record


def is_example(record: dict) -> bool:
    return record["kind"] == "example"


def split_index(record: dict, _count: int, split_names: list[str]) -> int:
    return split_names.index(record["split"])

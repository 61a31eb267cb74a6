"""Gzipped TFRecord files whose deflate level ingestion chooses: by default, stored.

Beam's WriteToTFRecord deflates at zlib's default level 6, and cannot be told
otherwise. Ingestion writes images as their files store them (JPEG, PNG, GIF:
already compressed), and deflating those again was the largest share of
ingestion's time (3.7 ms of the 7.6 ms a 768x768 JPEG cost in one process, to
save 1.3% of its bytes; 0.2% on photographs, nothing on PNG; bench.ingestion's
profile measures it). So these files are written as gzip "stored" blocks:
still gzip, read by every reader of the Examples (tf.data's GZIP
TFRecordDataset, Beam's ReadFromTFRecord, hence StatisticsGen, Transform and
the Trainer) exactly as before, record for record and byte for byte; only the
files are as large as their records (BMP images, stored uncompressed by their
format, would be smaller deflated: ``level`` chooses). ``bundle_files.py``
writes them, with ``GzipWriter.write_record``.

The records are framed as TensorFlow frames them (length, masked CRC-32C of
the length, data, masked CRC-32C of the data), with google-crc32c, which Beam
uses too: no TensorFlow in the workers. ``read_records`` reads such a file
back, checking every checksum (ingestion's reuse copies the last run's records
with it: one step per file, none of ReadFromTFRecord's splitting stages).
"""

import struct
import zlib

import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# zlib's level 0: deflate "stored" blocks, no compression.
STORED = 0
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset (TensorFlow's crc32c::Mask)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> tuple[bytes, bytes]:
    """The bytes before and after ``record`` in a TFRecord file."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked_crc32c(length)), struct.pack("<I", masked_crc32c(record))


class GzipWriter:
    """A gzip stream at ``level`` over a file opened for writing; closing it closes the file."""

    def __init__(self, raw, level: int):
        if not 0 <= level <= 9:
            raise ValueError(f"deflate level {level}: zlib's levels are 0 (stored) to 9")
        self._raw = raw
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)

    def write(self, data: bytes) -> None:
        out = self._deflate.compress(data)
        if out:
            self._raw.write(out)

    def write_record(self, record: bytes) -> None:
        """One TFRecord: ``record`` framed (``frame``)."""
        head, tail = frame(record)
        self.write(head)
        self.write(record)
        self.write(tail)

    def close(self) -> None:
        self._raw.write(self._deflate.flush())
        self._raw.close()


def read_records(path: str, chunk: int = 1 << 20):
    """The records of one gzipped TFRecord file, as written (by this module or by TensorFlow), one at a
    time: streamed, a chunk of the file in memory at once. Every checksum is checked (gzip's, and each
    record's length and data): a damaged file raises ValueError naming it, never yields a wrong record."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    buffer, at = b"", 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while True:
            raw = f.read(chunk)
            try:
                data = inflate.decompress(raw) if raw else inflate.flush()
            except zlib.error as exc:
                raise ValueError(f"{path}: damaged: its gzip stream does not inflate or fails its checksum "
                                 f"({exc})") from exc
            buffer = buffer[at:] + data
            at = 0
            while len(buffer) - at >= 12:
                head = buffer[at:at + 12]
                length, length_crc = struct.unpack("<QI", head)
                if masked_crc32c(head[:8]) != length_crc:
                    raise ValueError(f"{path}: a record's length fails its checksum")
                if len(buffer) - at < 12 + length + 4:
                    break
                record = buffer[at + 12:at + 12 + length]
                if masked_crc32c(record) != struct.unpack("<I", buffer[at + 12 + length:at + 16 + length])[0]:
                    raise ValueError(f"{path}: a record fails its checksum")
                yield record
                at += 16 + length
            if not raw:
                if not inflate.eof or len(buffer) > at:
                    raise ValueError(f"{path}: cut short ({len(buffer) - at} bytes after the last whole record)")
                return

"""Why a file was quarantined, as data: a code from ``Reason`` and a free-text detail.

The code is the part a program may rely on: the ingestion report counts by it,
the summary and the run report group by it, the data gate and ``thaw ingest
--json`` read it. The detail is for a person (sizes, limits, the setting to
change) and may be reworded at will. Before codes there was only the text, and
grouping by its first words broke whenever a message changed.

Beam workers import this module, so it must not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterable


class Reason(str, enum.Enum):
    """Every reason ingestion quarantines a file for; the value is the stable code.

    README.md's table of reasons is checked against this list both ways
    (tests/components/ingest/test_quarantine.py), and every member must be
    produced by a fixture (test_image_example_gen.py there): a new member needs
    both.
    """

    meaning: str

    def __new__(cls, code: str, meaning: str) -> Reason:
        member = str.__new__(cls, code)
        member._value_ = code
        member.meaning = meaning
        return member

    # Found while listing the data, before any file is read.
    NOT_IN_CLASS_FOLDER = "not_in_class_folder", "a file directly under the data root, so it has no class"
    EMPTY_CLASS_FOLDER = "empty_class_folder", "a class folder that holds no files"
    OUTSIDE_DATA_ROOT = ("outside_data_root",
                         "resolves outside the data root and data.allowed_roots, so it is never read")
    BAD_MANIFEST_ROW = ("bad_manifest_row",
                        "a manifest line Thaw cannot read unambiguously: no uri or label, columns or keys that "
                        "could both be one, a value of the wrong type, a JSONL line that is not a JSON object")
    # Found on opening the file, before its bytes are read (a looping folder: while listing).
    SYMLINK_LOOP = "symlink_loop", "a symbolic link, or a linked folder, that leads back to where it started"
    NOT_REGULAR_FILE = "not_regular_file", "a FIFO, a device, a socket or a folder: never opened for reading"
    OVER_MAX_FILE_BYTES = "over_max_file_bytes", "more bytes than data.max_file_bytes, checked before reading"
    MISSING = "missing", "no file at that path"
    UNREADABLE = "unreadable", "there but not readable: permissions, a broken mount, a storage error"
    # Found in the file's bytes.
    EMPTY = "empty", "the file holds no bytes"
    NOT_AN_IMAGE = "not_an_image", "no known image header"
    TRUNCATED = "truncated", "starts as a JPEG, PNG, GIF or BMP but ends before its end marker"
    UNSUPPORTED_FORMAT = "unsupported_format", "an image, but not JPEG, PNG, GIF or BMP"
    TOO_LARGE = "too_large", "more pixels than data.max_pixels, judged from the header before decoding"
    TOO_SMALL = "too_small", "a side shorter than data.min_side"
    CORRUPT = "corrupt", "whole, but its pixels will not decode"
    # Found among the decodable images.
    DUPLICATE = "duplicate", "the same content as another image of its class, which is kept"
    LABEL_CONFLICT = "label_conflict", "the same content under two or more labels: no copy is kept"
    CHANGED_DURING_INGESTION = ("changed_during_ingestion",
                                "its size or times changed while it was read; rerun")


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """One quarantined file: where, why (the code) and the specifics (the detail).

    ``code`` is None only for an entry read from a report this version did not
    write, whose reason it does not know (see ``from_json``). ``line`` is the
    manifest line of a bad manifest row (its ``path`` is ``manifest:line``).
    """

    path: str
    code: Reason | None
    detail: str = ""
    line: int | None = None

    @property
    def text(self) -> str:
        """The one line a person reads where there is no room for a group heading."""
        if self.code is None:
            return self.detail
        return f"{self.code.value}: {self.detail or self.code.meaning}"

    def to_json(self) -> dict[str, str]:
        """The report's entry. ``reason`` repeats code and detail as one line, as entries
        read before codes had it, so a reader that knows only ``reason`` still works. A bad
        manifest row also has its ``line``."""
        entry = {"path": self.path, "code": self.code.value if self.code else "", "detail": self.detail,
                 "reason": self.text}
        if self.line is not None:
            entry["line"] = self.line
        return entry

    @classmethod
    def from_json(cls, entry: dict) -> Quarantined:
        """An entry of any ingestion report. ``thaw summary`` and ``thaw report`` may read
        an older run's outputs, written before codes (a ``reason`` alone), or a later
        version's, with a code this one lacks: those are known by their text."""
        try:
            return cls(entry["path"], Reason(entry["code"]), entry.get("detail", ""), entry.get("line"))
        except (KeyError, ValueError):
            pass
        text = entry.get("reason", "")
        code = next((code for phrase, code in _OLD_PHRASES if text.startswith(phrase)), None)
        if code is Reason.TOO_LARGE and "(data.max_file_bytes)" in text:
            code = Reason.OVER_MAX_FILE_BYTES  # before codes, both limits read "too large"
        return cls(entry["path"], code, text)


# How each reason's text began before codes (image_records.py and
# image_example_gen.py until this module), for reading old reports. "truncated:"
# keeps its colon: an earlier "truncated or undecodable" may be either that or
# corrupt, so it stays without a code.
_OLD_PHRASES = [
    ("not in a class folder", Reason.NOT_IN_CLASS_FOLDER), ("empty class folder", Reason.EMPTY_CLASS_FOLDER),
    ("outside the data root", Reason.OUTSIDE_DATA_ROOT), ("bad manifest row", Reason.BAD_MANIFEST_ROW),
    ("symlink loop", Reason.SYMLINK_LOOP), ("not a regular file", Reason.NOT_REGULAR_FILE),
    ("missing", Reason.MISSING), ("unreadable", Reason.UNREADABLE), ("empty file", Reason.EMPTY),
    ("not an image", Reason.NOT_AN_IMAGE), ("truncated:", Reason.TRUNCATED),
    ("unsupported format", Reason.UNSUPPORTED_FORMAT), ("too large", Reason.TOO_LARGE),
    ("too small", Reason.TOO_SMALL), ("corrupt", Reason.CORRUPT), ("duplicate of", Reason.DUPLICATE),
    ("label conflict", Reason.LABEL_CONFLICT), ("changed during ingestion", Reason.CHANGED_DURING_INGESTION),
]


def read_entries(entries: Iterable[dict]) -> list[Quarantined]:
    return [Quarantined.from_json(entry) for entry in entries]


def by_code(entries: Iterable[Quarantined]) -> dict[Reason | None, list[Quarantined]]:
    """Entries per code, the commonest code first (ties in the enum's order), so a
    long list opens with what most needs fixing; old entries of no known code last."""
    groups: dict[Reason | None, list[Quarantined]] = {}
    for entry in entries:
        groups.setdefault(entry.code, []).append(entry)
    order = list(Reason)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, -len(kv[1]),
                                                       order.index(kv[0]) if kv[0] else 0)))


def describe(code: Reason | None) -> tuple[str, str]:
    """(code, meaning) to show for a group, including that of old entries of no known code."""
    return (code.value, code.meaning) if code else (
        "", "no code this version knows (written before codes, or by a later version): the detail is its text")


def count_by_code(entries: Iterable[Quarantined]) -> dict[str, int]:
    """Files per code, as ``by_code`` orders them; old entries of no known code count as ``""``."""
    return {code.value if code else "": len(group) for code, group in by_code(entries).items()}


def describe_counts(counts: dict[str, int], most: int = 5) -> str:
    """``3 not_an_image, 1 empty``: the commonest codes, for a message that has one line."""
    ordered = list(counts.items())
    rest = sum(n for _, n in ordered[most:])
    return ", ".join([f"{n} {code or 'other'}" for code, n in ordered[:most]] + ([f"{rest} other"] if rest else []))

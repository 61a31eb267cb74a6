"""Reading a manifest of images as spreadsheets and scripts write it: CSV or JSONL.

Accepted, because it is unambiguous (README.md, "Your own images"):

- a UTF-8 byte-order mark at the start (Excel's "CSV UTF-8", Notepad), and
  CRLF or LF line endings;
- in CSV, a header naming the columns in any case and with spaces around, with
  ``uri``, ``path`` or ``file`` for the image and ``label`` or ``class`` for its
  class; the delimiter a comma, a semicolon or a tab (spreadsheets in locales
  with a decimal comma write semicolons), whichever the header is written in;
  other columns are ignored; quoted fields may hold the delimiter;
- blank lines anywhere, and rows whose every field is blank (a spreadsheet's
  trailing ``,,``); a trailing delimiter, that is an empty last field;
- in JSONL, the same key names in any case, and a label that is a string or a
  whole number (``3`` is the class ``"3"``).

Refused, naming the line: a header without an image column or a label column,
or with two columns that could both be one (``path`` and ``file``), which
refuses the whole manifest; a row with more fields than the header (an
unquoted delimiter inside a value); a JSONL line that is not a JSON object, or
whose keys could both be one, or whose uri is not a string, or whose label is
not a string or a whole number (``true``, ``3.5``, a list: nothing is guessed).
"""

from __future__ import annotations

import csv
import itertools
import json
from typing import Iterable, Iterator

URI_NAMES = ("uri", "path", "file")
LABEL_NAMES = ("label", "class")
DELIMITERS = (",", ";", "\t")
_BOM = "\ufeff"

# A manifest's line: (line number, uri, label, None) or (line number, "", "", what is wrong with it).
Row = tuple[int, str, str, "str | None"]


class ManifestError(ValueError):
    """A manifest that cannot be read at all (its header): the line and what is wrong."""

    def __init__(self, manifest: str, line: int, detail: str):
        super().__init__(f"manifest {manifest} line {line}: {detail}")
        self.line, self.detail = line, detail


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        return
    yield first[len(_BOM):] if first.startswith(_BOM) else first
    yield from lines


def _roles(names: list[str]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """Which of ``names`` (a header's columns, a JSON object's keys) could be the uri and the label."""
    found: dict[str, list[int]] = {"uri": [], "label": []}
    spelled: dict[str, list[str]] = {"uri": [], "label": []}
    for index, name in enumerate(names):
        key = name.strip().lower()
        for role, aliases in (("uri", URI_NAMES), ("label", LABEL_NAMES)):
            if key in aliases:
                found[role].append(index)
                spelled[role].append(name)
    return found, spelled


def _ambiguity(spelled: dict[str, list[str]], what: str) -> str | None:
    for role, names in spelled.items():
        if len(names) > 1:
            return (f"{what} {' and '.join(repr(n) for n in names)} could each be the {role}; "
                    f"keep one ({'/'.join(URI_NAMES if role == 'uri' else LABEL_NAMES)})")
    return None


def _delimiter(header: str) -> str:
    """The delimiter the header is written in: the one that splits it into both columns."""
    fitting = []
    for delimiter in DELIMITERS:
        names = next(csv.reader([header], delimiter=delimiter), [])
        found, _ = _roles(names)
        if found["uri"] and found["label"]:
            fitting.append(delimiter)
    return fitting[0] if len(fitting) == 1 else ","


def csv_rows(manifest: str, lines: Iterable[str]) -> Iterator[Row]:
    """The rows of a CSV manifest whose text lines are ``lines``."""
    lines = iter(_without_bom(lines))
    number = 0
    header_line = None
    for header_line in lines:  # blank lines before the header are skipped
        number += 1
        if header_line.strip():
            break
    if header_line is None or not header_line.strip():
        raise ManifestError(manifest, max(number, 1), "the file is empty; it needs a header naming the columns "
                            "uri and label, then one row per image")
    header_number = number
    delimiter = _delimiter(header_line)
    reader = csv.reader(itertools.chain([header_line], lines), delimiter=delimiter)
    header = next(reader)
    found, spelled = _roles(header)
    problem = _ambiguity(spelled, "the columns")
    missing = [role for role in ("uri", "label") if not found[role]]
    if missing and not problem:
        names = {"uri": "uri (or path, file)", "label": "label (or class)"}
        problem = (f"the header needs columns uri and label; missing {' and '.join(names[m] for m in missing)} "
                   f"(found {[h for h in header if h.strip()]}); if the first line is a row of data, add the "
                   "header line uri,label above it")
    if problem:
        raise ManifestError(manifest, header_number, problem)
    uri_at, label_at = found["uri"][0], found["label"][0]
    width = len(header)
    while width and not header[width - 1].strip():  # a trailing delimiter in the header
        width -= 1
    previous = reader.line_num
    for row in reader:  # a row starts on the line after the previous one ended (a quoted field may span lines)
        first, previous = header_number + previous, reader.line_num
        if not any(field.strip() for field in row):
            continue
        extra = [field for field in row[width:] if field.strip()]
        if extra:
            yield first, "", "", (f"{len(row)} fields, more than the header's {width}: quote a value that holds "
                                  f"the delimiter {delimiter!r} (extra: {extra})")
            continue
        field = lambda at: row[at].strip() if at < len(row) else ""  # noqa: E731
        uri, label = field(uri_at), field(label_at)
        if not uri or not label:
            yield first, "", "", f"needs both a uri and a label, got uri={uri!r} label={label!r}"
            continue
        yield first, uri, label, None


def _json_row(line: str) -> tuple[str, str, str | None]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return "", "", f"not valid JSON ({exc.msg})"
    if not isinstance(row, dict):
        return "", "", f"not a JSON object (a {type(row).__name__})"
    names = list(row)
    found, spelled = _roles(names)
    problem = _ambiguity(spelled, "the keys")
    if problem:
        return "", "", problem
    uri = row[names[found["uri"][0]]] if found["uri"] else None
    label = row[names[found["label"][0]]] if found["label"] else None
    if uri is not None and not isinstance(uri, str):
        return "", "", f"the uri must be a string, got {json.dumps(uri)}"
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    elif label is not None and not isinstance(label, str):
        return "", "", (f"the label must be a string or a whole number, got {json.dumps(label)}; "
                        "write it in quotes if that is the class's name")
    uri, label = (uri or "").strip(), (label or "").strip()
    if not uri or not label:
        return "", "", f"needs both a uri and a label, got uri={uri!r} label={label!r}"
    return uri, label, None


def jsonl_rows(lines: Iterable[str]) -> Iterator[Row]:
    """The rows of a JSONL manifest whose text lines are ``lines``."""
    for number, line in enumerate(_without_bom(lines), start=1):
        if line.strip():
            yield (number, *_json_row(line))


def read_rows(manifest: str, lines: Iterable[str]) -> Iterator[Row]:
    """Every row of the manifest named ``manifest`` (by its suffix), with its line number."""
    if manifest.endswith(".csv"):
        return csv_rows(manifest, lines)
    return jsonl_rows(lines)

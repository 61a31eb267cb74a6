"""Manifests as spreadsheets and scripts write them: each file is written here, byte for byte, and
read by ingestion's own listing (``list_images``), which opens it as a run does."""

import json
from pathlib import Path

import pytest

from components.ingest import image_example_gen as ieg
from components.ingest.manifest import ManifestError
from components.ingest.quarantine import Reason

from tests.support.images import encode, noise


@pytest.fixture
def images(tmp_path) -> Path:
    for i, name in enumerate(["a.png", "b.png", "c d.png", "e,f.png"]):
        (tmp_path / name).write_bytes(encode(noise("RGB", seed=60 + i), "PNG"))
    return tmp_path


def listed(manifest: Path):
    items, quarantined = ieg.list_images(str(manifest))
    return [(shown, label) for _, shown, label in items], {q.line: (q.code, q.detail) for q in quarantined}


def test_a_csv_saved_as_csv_utf8_with_a_byte_order_mark(images):
    (images / "m.csv").write_bytes("uri,label\r\na.png,cat\r\nb.png,dog\r\n".encode("utf-8-sig"))
    assert (images / "m.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert listed(images / "m.csv") == ([("a.png", "cat"), ("b.png", "dog")], {})


def test_a_spreadsheet_csv_header_case_aliases_semicolons_trailing_delimiters_and_blank_lines(images):
    # As a spreadsheet in a decimal-comma locale saves it: BOM, CRLF, ';', an extra column, a trailing
    # ';' on every line, a quoted field holding the delimiter and a comma, empty rows and blank lines at the end.
    text = ("Path ;Class;Notes;\r\n"
            "a.png;cat;first;\r\n"
            "\r\n"
            '"c d.png";dog;"two; words";\r\n'
            '"e,f.png";dog;;\r\n'
            ";;;\r\n"
            ";;;\r\n"
            "\r\n\r\n")
    (images / "m.csv").write_bytes(text.encode("utf-8-sig"))
    assert listed(images / "m.csv") == ([("a.png", "cat"), ("c d.png", "dog"), ("e,f.png", "dog")], {})


def test_file_and_class_columns_with_a_trailing_comma(images):
    (images / "m.csv").write_text("FILE,CLASS,\na.png,cat,\nb.png,dog\n")
    assert listed(images / "m.csv") == ([("a.png", "cat"), ("b.png", "dog")], {})


def test_bad_csv_rows_are_named_by_the_line_they_start_on(images):
    (images / "m.csv").write_text(
        "uri,label\n"
        "a.png,cat\n"
        "\n"                           # line 3: blank, skipped
        '"b.png","a label\nover two lines"\n'   # lines 4-5: a quoted field may span lines
        "c d.png,dog,extra\n"          # line 6: more fields than the header
        ",dog\n"                       # line 7: no uri
        "e,f.png,dog\n"               # line 8: an unquoted comma in the uri
        '"a\nb.png",\n')              # lines 9-10: no label, in a record that starts on line 9
    rows, bad = listed(images / "m.csv")
    assert rows == [("a.png", "cat"), ("b.png", "a label\nover two lines")]
    assert {line: code for line, (code, _) in bad.items()} == {
        6: Reason.BAD_MANIFEST_ROW, 7: Reason.BAD_MANIFEST_ROW, 8: Reason.BAD_MANIFEST_ROW, 9: Reason.BAD_MANIFEST_ROW}
    assert "3 fields, more than the header's 2" in bad[6][1] and "quote a value" in bad[6][1]
    assert bad[7][1] == "needs both a uri and a label, got uri='' label='dog'"


@pytest.mark.parametrize("header, said", [
    ("uri,path,label", "the columns 'uri' and 'path' could each be the uri; keep one"),
    ("file,Label,class", "the columns 'Label' and 'class' could each be the label"),
    ("image,label", "missing uri (or path, file)"),
    ("a.png,cat", "missing uri (or path, file) and label (or class)"),
])
def test_an_ambiguous_or_incomplete_header_refuses_the_manifest_naming_the_line(images, header, said):
    (images / "m.csv").write_text(f"\n{header}\na.png,cat\n")  # a blank first line: the header is line 2
    with pytest.raises(ManifestError, match="line 2: ") as refused:
        ieg.list_images(str(images / "m.csv"))
    assert said in str(refused.value) and str(images / "m.csv") in str(refused.value)


def test_an_empty_csv_is_refused():
    with pytest.raises(ManifestError, match="the file is empty"):
        from components.ingest.manifest import read_rows
        list(read_rows("m.csv", iter(["\n", "  \r\n"])))


def test_a_jsonl_with_a_bom_aliases_numeric_labels_and_a_broken_line(images):
    lines = [
        json.dumps({"uri": "a.png", "label": 0}),                # a whole number, even 0, is a class name
        json.dumps({"Path": "b.png", "Class": 7}),
        "",
        '{"uri": "c d.png", "label": "dog"',                       # line 4: cut short
        json.dumps({"uri": "c d.png", "label": True}),            # line 5: not a class name
        json.dumps({"uri": "c d.png", "label": 3.5}),             # line 6
        json.dumps({"uri": "c d.png", "path": "b.png", "label": "x"}),  # line 7: which one?
        json.dumps({"uri": 12, "label": "x"}),                   # line 8
        json.dumps(["e,f.png", "dog"]),                          # line 9
        json.dumps({"file": "e,f.png", "LABEL": "dog"}),
        "", "",
    ]
    (images / "m.jsonl").write_bytes("\r\n".join(lines).encode("utf-8-sig"))
    rows, bad = listed(images / "m.jsonl")
    assert rows == [("a.png", "0"), ("b.png", "7"), ("e,f.png", "dog")]
    assert sorted(bad) == [4, 5, 6, 7, 8, 9]
    assert all(code is Reason.BAD_MANIFEST_ROW for code, _ in bad.values())
    assert bad[4][1].startswith("not valid JSON")
    assert bad[5][1].startswith("the label must be a string or a whole number, got true")
    assert bad[6][1].startswith("the label must be a string or a whole number, got 3.5")
    assert bad[7][1] == "the keys 'uri' and 'path' could each be the uri; keep one (uri/path/file)"
    assert bad[8][1] == "the uri must be a string, got 12"
    assert bad[9][1] == "not a JSON object (a list)"


def test_bad_rows_carry_their_line_in_the_report_entry(images):
    (images / "m.csv").write_text("uri,label\na.png,cat\n,dog\n../../etc/passwd,cat\n")
    _, quarantined = ieg.list_images(str(images / "m.csv"))
    entries = {q.to_json()["path"]: q.to_json() for q in quarantined}
    assert entries["m.csv:3"]["line"] == 3 and entries["m.csv:3"]["code"] == "bad_manifest_row"
    assert entries["m.csv:4"]["line"] == 4 and entries["m.csv:4"]["code"] == "outside_data_root"

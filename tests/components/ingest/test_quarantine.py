"""Quarantine reasons as data: the README's table is the enum's, and reports
are read by their codes, including reports written before there were codes.

The reasons each fixture produces are tested with ingestion itself
(test_image_example_gen.py), where the Beam pipeline runs over the fixture set.
"""

import json
from types import SimpleNamespace

from components.artifacts import IngestionReport
from components.ingest.image_example_gen import REPORT_FILE
from components.ingest.quarantine import Quarantined, Reason
from components.report.report import data_section
from components.report.summary import RunSummary, from_artifacts
from tests.conftest import REPO


def readme_reasons() -> list[tuple[str, str]]:
    """The rows of README.md's table of quarantine reasons: (code, meaning)."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Quarantine reasons", 1)[1].split("\n#", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| `")]
    return [(code.strip().strip("`"), meaning.strip()) for code, meaning in rows]


def test_the_readme_lists_every_code_with_its_meaning_and_nothing_else():
    documented = readme_reasons()
    assert documented, "README.md has no table under '### Quarantine reasons'"
    assert [code for code, _ in documented if code not in {r.value for r in Reason}] == [], "not codes"
    assert [r.value for r in Reason if r.value not in dict(documented)] == [], "codes the README lacks"
    assert documented == [(r.value, r.meaning) for r in Reason], "the README's rows differ from the enum's"


def test_the_summary_groups_quarantined_files_by_code_with_each_meaning_once():
    entries = [Quarantined(f"dog/{i:02}.png", Reason.EMPTY).to_json() for i in range(19)] + [
        Quarantined("cat/a.png", Reason.TOO_SMALL, "4x4 pixels").to_json(),
        Quarantined("cat/b.png", Reason.TOO_SMALL, "2x9 pixels").to_json()]
    lines = RunSummary(quarantined=entries).lines()
    start = lines.index("  19 empty: the file holds no bytes")
    assert lines[start + 1:start + 20] == [f"    dog/{i:02}.png" for i in range(19)]
    assert lines[start + 20:] == ["  2 too_small: a side shorter than data.min_side", "    cat/a.png: 4x4 pixels",
                                  "  ... and 1 more in the ingestion report"]


def test_a_report_written_before_codes_or_by_a_later_version_is_still_summarized_and_reported(tmp_path):
    old = {"classes": ["dog"], "ingested": 3, "splits": {"train": 3}, "per_class": {"dog": {"train": 3}},
           "quarantined": [
               {"path": "dog/big.png", "reason": "too large: 5000 bytes, over the limit of 4000 (data.max_file_bytes)"},
               {"path": "dog/empty.png", "reason": "empty file"},
               {"path": "dog/odd.png", "reason": "truncated or undecodable: broken data stream"},
               {"path": "dog/x.png", "code": "a_later_code", "detail": "d", "reason": "a_later_code: d"}]}
    (tmp_path / REPORT_FILE).write_text(json.dumps(old))
    summary = from_artifacts("old", {IngestionReport.TYPE_NAME: [SimpleNamespace(id=1, uri=str(tmp_path))]})
    assert [(q["path"], q["code"]) for q in summary.quarantined] == [
        ("dog/big.png", "over_max_file_bytes"), ("dog/empty.png", "empty"), ("dog/odd.png", ""), ("dog/x.png", "")]
    assert [q["reason"] for q in summary.quarantined] == [
        "over_max_file_bytes: " + old["quarantined"][0]["reason"], "empty: empty file",
        "truncated or undecodable: broken data stream", "a_later_code: d"]
    lines = summary.lines()
    assert ("  2 other: no code this version knows (written before codes, or by a later version): the detail "
            "is its text") in lines
    assert "    dog/odd.png: truncated or undecodable: broken data stream" in lines
    page = data_section(summary)
    assert "<td>dog/big.png</td><td>over_max_file_bytes</td>" in page
    assert "<td>dog/odd.png</td><td></td><td>truncated or undecodable: broken data stream</td>" in page

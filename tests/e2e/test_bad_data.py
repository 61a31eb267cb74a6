"""Bad data and failed steps through the real CLI on LocalDagRunner: the reasons are kept.

A data set too small for every split, listed in a manifest as a spreadsheet
saves it with one bad row, is a data problem: ingestion finishes, its report
names every file's fate (the bad row by its line), and the data gate stops the
run with exit code 3. A step that fails for another reason ends the run with
exit code 1, and ``--json`` still ends with one JSON object saying so.
"""

import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline import config as config_lib
from tests.support.images import encode, noise

pytestmark = pytest.mark.e2e


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def too_small(workdir) -> Path:
    """One image and one bad row, in a CSV as Excel's "CSV UTF-8" writes it (BOM, CRLF, ';', trailing ';')."""
    (workdir / "data").mkdir()
    (workdir / "data" / "one.png").write_bytes(encode(noise("RGB", size=(32, 32), seed=90), "PNG"))
    manifest = workdir / "data" / "images.csv"
    manifest.write_bytes("Path;Class;\r\none.png;cat;\r\n;dog;\r\n;;\r\n".encode("utf-8-sig"))
    (workdir / "thaw.yaml").write_text("beam_pipeline_args: [--direct_running_mode=in_memory]\n")
    return manifest


def empty_splits(one_image_split: dict) -> list[str]:
    names = list(config_lib.load("thaw.yaml").data.splits)
    return [name for name in names if name not in one_image_split]


def ingestion_report(output: Path) -> dict:
    (path,) = (output / "pipeline" / "ImageExampleGen" / "report").glob("*/ingestion_report.json")
    return json.loads(path.read_text())


def test_ingest_json_names_the_bad_row_and_the_empty_split_and_keeps_the_report(too_small, workdir, capsys):
    code = cli.main(["ingest", str(too_small), "--config", "thaw.yaml", "--output", "out", "--json"])
    captured = capsys.readouterr()
    assert code == cli.DATA_STOPPED, captured.err[-3000:]
    result = last_json(captured.out)
    assert result["exit_code"] == cli.DATA_STOPPED and result["output_dir"] == str(workdir / "out")
    assert result["error"].startswith("the data gate stopped the run: ")
    assert result["ingested"] == 1 and result["data_passed"] is False
    assert [(q["path"], q["code"], q["line"]) for q in result["quarantined"]] == [
        ("images.csv:3", "bad_manifest_row", 3)]
    empty = empty_splits(result["splits"])
    assert any(p.startswith(f"split(s) {', '.join(empty)} got no images: 1 of 1 files ingested")
               for p in result["problems"]), result["problems"]
    assert "manifest images.csv line 3: needs both a uri and a label, got uri='' label='dog'" in result["warnings"]
    # The summary names the row and its reason; the report it pointed to exists.
    assert "    images.csv:3: needs both a uri and a label, got uri='' label='dog'" in captured.out
    report = ingestion_report(workdir / "out")
    assert report["quarantined"][0]["line"] == 3 and report["ingested"] == 1
    assert Path(result["report"]).is_file() and "images.csv:3" in Path(result["report"]).read_text()


def test_run_on_data_too_small_for_a_split_is_stopped_by_the_data_gate_with_its_report(too_small, workdir, capsys):
    code = cli.main(["run", "--data", str(too_small), "--config", "thaw.yaml", "--output", "out", "--json"])
    captured = capsys.readouterr()
    assert code == cli.DATA_STOPPED, captured.err[-3000:]
    assert "the run failed" not in captured.err
    result = last_json(captured.out)
    assert result["exit_code"] == cli.DATA_STOPPED and not result["stages"]
    root = workdir / "out" / "pipeline"
    for never_ran in ("Transform", "Trainer", "Evaluator", "RunReport"):
        assert not (root / never_ran).exists(), never_ran
    (page,) = (root / "StoppedRunReport" / "report").glob("*/value")
    text = page.read_text()
    assert "stopped by the data gate before training" in text
    assert f"split(s) {', '.join(empty_splits(result['splits']))} got no images" in text
    assert "manifest images.csv line 3: needs both a uri and a label" in text
    assert ingestion_report(workdir / "out")["quarantined"][0]["path"] == "images.csv:3"


def test_a_step_that_fails_ends_json_with_the_error_and_points_at_nothing_missing(too_small, workdir, capsys):
    (workdir / "schema.pbtxt").write_text("this is { not a schema\n")
    (workdir / "thaw.yaml").write_text("beam_pipeline_args: [--direct_running_mode=in_memory]\n"
                                       "data: {schema: schema.pbtxt}\n")
    code = cli.main(["ingest", str(too_small), "--config", "thaw.yaml", "--output", "out", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    result = last_json(captured.out)
    assert result["exit_code"] == 1 and result["failed_step"] == "ImportSchemaGen"
    assert result["output_dir"] == str(workdir / "out") and "ParseError" in result["error"]
    assert "the run failed in ImportSchemaGen" in captured.err
    assert "the outputs of the steps that finished are kept under" in captured.err
    assert "ingestion_report.json" not in captured.err

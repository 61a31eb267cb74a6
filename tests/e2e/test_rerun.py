"""No work redone, through the CLI and the whole DAG: a second `thaw run` on the data and configuration the
served model was trained on stops before ingestion, with exit code 5 and its own line, and trains and
pushes nothing; `thaw run --force` trains anyway. (Which files are hashed again, and which changes
of the configuration count, are tests/components/ingest/test_fingerprint.py's; that a forced run's ingestion copies
every example instead of reading the images is checked here through the DAG, what it copies is test_reuse.py's.)"""

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from components.ingest import fingerprint
from pipeline import cli
from pipeline import config as config_lib

pytestmark = pytest.mark.e2e
_RACY_S = fingerprint._RACY_NS / 1e9


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def outputs(root: Path, node: str, key: str) -> set[str]:
    """The folders of output ``key`` a node has written under the pipeline root (one per execution)."""
    return {p.name for p in (root / node / key).iterdir()} if (root / node / key).exists() else set()


def test_unchanged_data_stops_early_and_force_trains_anyway(tiny_demo, tmp_path, capsys, caplog):
    data = tmp_path / "images"
    shutil.copytree(tiny_demo["data"], data)
    config = config_lib.load(tiny_demo["config"], {
        "data.root": str(data), "output_dir": str(tmp_path / "out"),
        "beam_pipeline_args": ["--direct_running_mode=in_memory"],
        "gate.min_accuracy": 0.0, "gate.min_macro_recall": 0.0, "gate.min_class_recall": 0.0,
    })
    settings = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The smallest training the tests use: one epoch of the head alone.
    settings["training"]["stages"] = [{"name": "barely", "epochs": 1, "trainable": "none", "learning_rate": 1e-3}]
    (tmp_path / "thaw.yaml").write_text(yaml.safe_dump(settings))
    run = ["run", "--config", str(tmp_path / "thaw.yaml"), "--json"]
    root = Path(config.pipeline_root)
    # As a user's data is: older than the window in which a file just written is not trusted by its times
    # (fingerprint._RACY_NS); copied a moment ago, every file would rightly be hashed again next run.
    time.sleep(_RACY_S + 0.5)

    assert cli.main(run) == 0
    first = last_json(capsys.readouterr().out)
    assert first["pushed"] and first["fingerprint"]["train"] is True
    push = json.loads(next((root / "AtomicPusher" / "pushed_model").glob("*/push.json")).read_text())
    assert push["data_fingerprint"] == first["fingerprint"]["fingerprint"]
    serving = sorted(p.name for p in Path(config.serving_path).iterdir())
    trained = outputs(root, "Trainer", "model")

    # The same files and configuration: stops before ingestion, exit 5, its own line; nothing trained or pushed.
    assert cli.main(run) == cli.UNCHANGED
    said = capsys.readouterr()
    again = last_json(said.out)
    assert again["exit_code"] == cli.UNCHANGED and again["error"].startswith("nothing changed since the served model")
    assert any(line.startswith("data unchanged: the same 250 files by content hash and the same configuration")
               and line.endswith("nothing trained, nothing pushed (thaw run --force trains anyway)")
               for line in said.out.splitlines()), said.out
    assert again["fingerprint"]["hashed"] == 0 and again["fingerprint"]["reused"] == 250
    assert not again["stages"] and not again["pushed"] and again["ingested"] == 0
    # Skipped, not failed: no node's condition failed to evaluate (DataGate's verdict is missing on such a run).
    assert "Input resolution error" not in caplog.text and "Invalid conditional expression" not in caplog.text
    assert outputs(root, "Trainer", "model") == trained and len(outputs(root, "ImageExampleGen", "examples")) == 1
    assert sorted(p.name for p in Path(config.serving_path).iterdir()) == serving

    # --force: trains anyway (the gate then judges it against the served model as always).
    assert cli.main(run + ["--force"]) == 0
    forced = last_json(capsys.readouterr().out)
    assert forced["fingerprint"]["forced"] is True and forced["stages"] and forced["blessed"] is not None
    assert len(outputs(root, "Trainer", "model")) == len(trained) + 1
    # ... and its ingestion read no image: every example was copied from the first run's (components/ingest/reuse.py).
    reports = sorted((root / "ImageExampleGen" / "report").glob("*/ingestion_report.json"),
                     key=lambda p: int(p.parent.name))
    ingestion = json.loads(reports[-1].read_text())
    assert len(reports) == 2 and ingestion["ingested"] == first["ingested"]
    assert ingestion["reuse"]["reused"] == ingestion["ingested"] and ingestion["reuse"]["read"] == (
        ingestion["files_seen"] - ingestion["ingested"]), ingestion["reuse"]

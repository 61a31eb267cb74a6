"""The command line and its launcher: help, errors that name the fix."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline import cli

from tests.conftest import REPO



@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["ingest", "--help"], ["demo", "--help"],
                                  ["backbone", "--help"], ["summary", "--help"], ["config", "--help"]])
def test_every_command_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: thaw" in out
    if argv != ["--help"]:
        assert "example: thaw " in out


def test_run_on_a_missing_folder_says_what_to_do(workdir, capsys):
    assert cli.main(["run", "--data", "no-such-dir"]) == 2
    err = capsys.readouterr().err
    assert f"data {workdir / 'no-such-dir'} is neither a folder nor a .csv/.jsonl manifest" in err
    assert "one subfolder of images per class" in err


def test_a_bad_config_exits_2_naming_the_field(workdir, capsys):
    (workdir / "thaw.yaml").write_text("gate: {min_accuracy: 2}\n")
    assert cli.main(["run", "--config", "thaw.yaml"]) == 2
    assert "gate.min_accuracy: must be in [0, 1], got 2\n" in capsys.readouterr().err


def test_summary_of_a_directory_without_a_run(workdir, capsys):
    assert cli.main(["summary", str(workdir)]) == 2
    assert "no metadata store" in capsys.readouterr().err


def launcher(*args, **env):
    return subprocess.run([str(REPO / "bin" / "thaw-env"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_launcher_rejects_an_unknown_mode_in_one_line():
    result = launcher("--path", THAW_ENV_MODE="docker")
    assert result.returncode == 2
    assert result.stderr.strip() == "thaw: THAW_ENV_MODE must be 'venv' or 'rootfs', not 'docker'"


def test_launcher_without_a_usable_python_says_what_is_needed(tmp_path):
    result = launcher("--build", THAW_ENV_MODE="venv", THAW_PYTHON="/bin/false", THAW_CACHE_DIR=str(tmp_path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 2  # "building ..." then the one-line reason
    assert "needs Python 3.11-3.13 with the venv module" in result.stderr


def test_launcher_keys_the_environment_by_the_lock(tmp_path):
    path = launcher("--path", THAW_ENV_MODE="venv", THAW_CACHE_DIR=str(tmp_path)).stdout.strip()
    assert path.startswith(str(tmp_path / "venv-")) and len(Path(path).name) == len("venv-") + 16


def last_json(out: str) -> dict:
    """The last line of stdout, which --json makes one JSON object whatever the outcome."""
    return json.loads(out.strip().splitlines()[-1])


def test_json_ends_with_an_object_when_the_data_is_missing(workdir, capsys):
    assert cli.main(["ingest", "no-such-dir", "--output", "out", "--json"]) == 2
    result = last_json(capsys.readouterr().out)
    assert result["exit_code"] == 2 and result["output_dir"] == "out"
    assert result["error"].startswith(f"data {workdir / 'no-such-dir'} is neither a folder nor")


def test_json_ends_with_an_object_when_the_configuration_is_bad(workdir, capsys):
    (workdir / "thaw.yaml").write_text("gate: {min_accuracy: 2}\n")
    assert cli.main(["run", "--config", "thaw.yaml", "--json"]) == 2
    result = last_json(capsys.readouterr().out)
    assert result["exit_code"] == 2 and "gate.min_accuracy: must be in [0, 1], got 2" in result["error"]


def test_json_ends_with_an_object_when_the_arguments_are_bad(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ingest", "data", "--json", "--no-such-flag"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "thaw: error: unrecognized arguments: --no-such-flag" in captured.err
    assert last_json(captured.out) == {"exit_code": 2, "error": "thaw: error: unrecognized arguments: --no-such-flag",
                                       "output_dir": None}


def test_json_ends_with_an_object_when_another_run_holds_the_output(workdir, capsys):
    from components.file_lock import exclusive
    from pipeline.runners import RUN_LOCK

    (workdir / "data" / "cat").mkdir(parents=True)
    (workdir / "out").mkdir()
    with exclusive(str(workdir / "out" / RUN_LOCK), "a run on out"):
        assert cli.main(["ingest", "data", "--output", "out", "--json"]) == cli.BUSY
    result = last_json(capsys.readouterr().out)
    assert result["exit_code"] == cli.BUSY and result["output_dir"].endswith("out")
    assert "is already in progress: pid" in result["error"]


def test_predict_json_ends_with_an_object_when_there_is_no_model(workdir, capsys):
    (workdir / "cat.png").write_bytes(b"not read")
    assert cli.main(["predict", "--model", "no-model", "--json", "cat.png"]) == 2
    result = last_json(capsys.readouterr().out)
    assert result["exit_code"] == 2 and "no-model is neither a SavedModel" in result["error"]

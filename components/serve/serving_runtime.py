"""The serving runtime: TensorFlow at the version of the TF Serving image.

The trainer exports with the training runtime's TensorFlow, but TF Serving
loads the model with the TensorFlow compiled into its image
(``tensorflow/serving:X.Y.Z`` is TensorFlow X.Y.Z). A model that uses an op the
older runtime lacks loads fine here and fails there, after the push. So serving
validation also loads every candidate in a Python whose TensorFlow is the
serving version.

That Python lives in a directory of its own, made by
``scripts/build-serving-runtime.sh`` on first use and cached, keyed by the
version and the script. The Docker image ships the configured default prebuilt
under ``$THAW_SERVING_RUNTIMES``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from components.file_lock import exclusive

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-serving-runtime.sh"


class ServingRuntimeError(RuntimeError):
    """The serving runtime could not be built; the message says why and what to do."""


def cache_dir() -> Path:
    """Thaw's cache: $THAW_CACHE_DIR, else thaw/ in the user's cache (as bin/thaw-env)."""
    return Path(os.environ.get("THAW_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "thaw"))


def runtimes_dir() -> Path:
    """Where runtimes are kept: $THAW_SERVING_RUNTIMES, else Thaw's cache."""
    if os.environ.get("THAW_SERVING_RUNTIMES"):
        return Path(os.environ["THAW_SERVING_RUNTIMES"])
    return cache_dir() / "serving-runtime"


def runtime_dir(version: str) -> Path:
    """This version's directory; a changed build script (or the Python one it calls) makes a new one."""
    scripts = [SCRIPT, SCRIPT.with_name("python311-venv.sh")]
    key = (hashlib.sha256(b"".join(s.read_bytes() for s in scripts)).hexdigest()[:12]
           if all(s.exists() for s in scripts) else "prebuilt")
    prebuilt = runtimes_dir() / f"tf-{version}"
    if (prebuilt / ".thaw-ready").exists():  # the image's, built without a key
        return prebuilt
    return runtimes_dir() / f"tf-{version}-{key}"


def output_tail(done: subprocess.CompletedProcess, lines: int) -> str:
    """The last ``lines`` lines a side runtime's command wrote: stderr, else stdout."""
    return "\n".join((done.stderr or done.stdout).strip().splitlines()[-lines:])


def built_python(home: Path, command: list[str]) -> str:
    """``home/venv/bin/python`` once ``command`` has built it, building it first if missing.

    Built under a lock, in place (a venv cannot move), and marked ready only at
    the end: concurrent runs build it once, and a half-built one is rebuilt.
    Raises RuntimeBuildError with the end of the command's output.
    """
    python = home / "venv" / "bin" / "python"
    if (home / ".thaw-ready").exists():
        return str(python)
    with exclusive(str(home.parent / f".{home.name}.lock"), f"a build of {home}", wait=None):
        if (home / ".thaw-ready").exists():
            return str(python)
        shutil.rmtree(home, ignore_errors=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            raise RuntimeBuildError(output_tail(done, 5))
        (home / ".thaw-ready").touch()
    return str(python)


class RuntimeBuildError(RuntimeError):
    """A side runtime's build script failed; the message is the end of its output."""


def python_for(version: str) -> str:
    """The interpreter of TensorFlow ``version``'s runtime, built first if missing."""
    home = runtime_dir(version)
    try:
        return built_python(home, ["sh", str(SCRIPT), version, str(home)])
    except RuntimeBuildError as exc:
        raise ServingRuntimeError(
            f"could not build the serving runtime (TensorFlow {version}) in {home} with {SCRIPT.name}: "
            f"{exc}\nCheck that serving.tf_version names a released TensorFlow and that the package "
            "registries are reachable, or build it ahead of time where they are (the Dockerfile does).") from None

"""ServingValidator: will TF Serving load this model and answer well? -> InfraBlessing.

TFX 1.21's InfraValidator starts TF Serving in Docker, which a Kubeflow pod or
this machine cannot do. This component checks the same things from the
model's side: it runs components.serve.serving_probe in a fresh process that loads
the candidate with TensorFlow's C++ runtime (as TF Serving does), replays its
warmup requests, checks the answers, measures latency against budgets and
sends bad inputs. A crash, or a hang past the timeout, fails the probe too.
It runs the probe twice: in the training runtime, and in the TensorFlow of the
TF Serving image (``serving.tf_version``, components/serving_runtime.py), so a
model using an op that the served runtime lacks is never pushed.
The Pusher pushes only a model that both the Evaluator and this blessed.
"""

import json
import os
import re
import subprocess
import sys

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import write_json
from components.serve import serving_runtime
from components.serve.budgets import LatencyBudgets
from components.spec import parse

REPORT_FILE = "serving_validation.json"
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def probe(python: str, model_dir: str, budgets: dict, max_pixels: int, timeout_s: int) -> dict:
    """Runs the probe with ``python`` in a fresh process and returns its verdict."""
    command = [python, "-m", "components.serve.serving_probe", model_dir,
               "--budgets", json.dumps(budgets), "--max-pixels", str(max_pixels)]
    # The serving runtime has only TensorFlow: it imports the probe from this checkout.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PROJECT_ROOT, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"passed": False, "problems": [f"the model did not answer within {timeout_s} s (a hang)"]}
    if done.returncode != 0:
        missing_ops = sorted(set(re.findall(r"Op type not registered '(\w+)'", done.stderr)))
        if missing_ops:
            return {"passed": False, "missing_ops": missing_ops, "problems": [
                f"the model uses the op {', '.join(missing_ops)}, which this TensorFlow does not have"]}
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return {"passed": False, "problems": [f"loading or calling the model crashed (exit {done.returncode}): {tail}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def validate(model_dir: str, budgets: dict, max_pixels: int, timeout_s: int, serving_tf_version: str = "") -> dict:
    """The probe in the training runtime, then in the serving image's TensorFlow.

    The training runtime's numbers stay at the top level; the serving
    runtime's verdict is under ``serving_runtime``, and its problems are
    prefixed with its version. Both must pass.
    """
    result = probe(sys.executable, model_dir, budgets, max_pixels, timeout_s)
    if not serving_tf_version:
        result["serving_runtime"] = {"checked": False, "why": "serving.tf_version is empty"}
        return result
    where = f"in TensorFlow {serving_tf_version} (the serving image's runtime)"
    try:
        served = probe(serving_runtime.python_for(serving_tf_version), model_dir, budgets, max_pixels, timeout_s)
    except serving_runtime.ServingRuntimeError as exc:
        served = {"passed": False, "problems": [str(exc)]}
    result["serving_runtime"] = dict(served, checked=True, tf_version=serving_tf_version)
    result["problems"] = result["problems"] + [f"{where}: {p}" for p in served["problems"]]
    result["passed"] = result["passed"] and served["passed"]
    return result


@tfx.dsl.components.component
def ServingValidator(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.InfraBlessing],
    budgets_json: tfx.dsl.components.Parameter[str],
    max_pixels: tfx.dsl.components.Parameter[int],
    timeout_s: tfx.dsl.components.Parameter[int] = 600,
    serving_tf_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes INFRA_BLESSED or INFRA_NOT_BLESSED, serving_validation.json, and ``blessed``."""
    budgets = parse(LatencyBudgets, budgets_json, "the serving validator's budgets (serving.* in the configuration)")
    result = validate(path_utils.serving_model_path(model.uri), budgets.model_dump(), max_pixels, timeout_s,
                      serving_tf_version)
    write_json(result, blessing.uri, REPORT_FILE)
    marker = "INFRA_BLESSED" if result["passed"] else "INFRA_NOT_BLESSED"
    with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
        f.write("")
    blessing.set_int_custom_property("blessed", int(result["passed"]))

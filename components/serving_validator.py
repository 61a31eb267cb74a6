"""ServingValidator: will TF Serving load this model and answer well? -> InfraBlessing.

TFX 1.21's InfraValidator starts TF Serving in Docker, which a Kubeflow pod or
this machine cannot do. This component checks the same things from the
model's side: it runs components.serving_probe in a fresh process that loads
the candidate with TensorFlow's C++ runtime (as TF Serving does), replays its
warmup requests, checks the answers, measures latency against budgets and
sends bad inputs. A crash, or a hang past the timeout, fails the probe too.
The Pusher pushes only a model that both the Evaluator and this blessed.
"""

import json
import os
import subprocess
import sys

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import write_json

REPORT_FILE = "serving_validation.json"


def validate(model_dir: str, budgets: dict, max_pixels: int, timeout_s: int) -> dict:
    """Runs the probe in a fresh process and returns its verdict."""
    command = [sys.executable, "-m", "components.serving_probe", model_dir,
               "--budgets", json.dumps(budgets), "--max-pixels", str(max_pixels)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"passed": False, "problems": [f"the model did not answer within {timeout_s} s (a hang)"]}
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return {"passed": False, "problems": [f"loading or calling the model crashed (exit {done.returncode}): {tail}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


@tfx.dsl.components.component
def ServingValidator(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.InfraBlessing],
    budgets_json: tfx.dsl.components.Parameter[str],
    max_pixels: tfx.dsl.components.Parameter[int],
    timeout_s: tfx.dsl.components.Parameter[int] = 600,
) -> None:
    """Writes INFRA_BLESSED or INFRA_NOT_BLESSED, serving_validation.json, and ``blessed``."""
    result = validate(path_utils.serving_model_path(model.uri), json.loads(budgets_json), max_pixels, timeout_s)
    write_json(result, blessing.uri, REPORT_FILE)
    marker = "INFRA_BLESSED" if result["passed"] else "INFRA_NOT_BLESSED"
    with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
        f.write("")
    blessing.set_int_custom_property("blessed", int(result["passed"]))

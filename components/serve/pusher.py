"""AtomicPusher: a model blessed by both gates becomes the next version TF Serving serves.

The stock Pusher copies straight into the version folder TF Serving polls, so
TF Serving can load a half-copied model (tfx issue 4466). This one publishes
through components.serve.serving_dir: staged, saved_model.pb last, renamed into
place, older versions pruned to the configured number.
"""

import os

from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import DataFingerprint, read_json, stored_uri
from components.gate.baseline import record_push
from components.serve import serving_dir


@tfx.dsl.components.component
def AtomicPusher(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[standard_artifacts.ModelBlessing],
    infra_blessing: tfx.dsl.components.InputArtifact[standard_artifacts.InfraBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[standard_artifacts.PushedModel],
    base_directory: tfx.dsl.components.Parameter[str],
    keep_versions: tfx.dsl.components.Parameter[int] = 5,
    data_fingerprint: tfx.dsl.components.InputArtifact[DataFingerprint] = None,
) -> None:
    """Pushes only when the Evaluator and the ServingValidator both blessed the model; records which
    model it pushed and the fingerprint of the data it was trained on (``data_fingerprint``)."""
    blessed = (model_blessing.get_int_custom_property("blessed") == 1
               and infra_blessing.get_int_custom_property("blessed") == 1)
    if not blessed:
        pushed_model.set_int_custom_property("pushed", 0)
        return
    destination = serving_dir.push(path_utils.serving_model_path(model.uri), base_directory, keep_versions)
    # Which model this version is, for the next run's baseline (components.gate.baseline).
    record_push(pushed_model.uri, model.uri, destination, _data_record(data_fingerprint))
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_destination", destination)
    pushed_model.set_string_custom_property("pushed_version", os.path.basename(destination))


def _data_record(fingerprint) -> dict:
    """What the push record keeps of the run's data fingerprint (components.ingest.fingerprint)."""
    from components.ingest.fingerprint import FINGERPRINT_FILE

    record = read_json(fingerprint.uri, FINGERPRINT_FILE) if fingerprint is not None else None
    if not record:
        return {}
    return {"data_fingerprint": record["fingerprint"], "data_digest": record["data_digest"],
            "settings_digest": record["settings_digest"], "fingerprint_record": stored_uri(fingerprint.uri)}

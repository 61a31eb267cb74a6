"""ServingValidator's probe on models that must fail it."""

from pathlib import Path

import tensorflow as tf

from components.serve.serving_validator import validate

from tests.conftest import REPO

BUDGETS = {"p99_ms_batch_1": 1000, "p99_ms_batch_n": 10000, "batch_size": 4}


def save_module(path, signature):
    module = tf.Module()
    module.serve = signature
    tf.saved_model.save(module, str(path), signatures={"serving_default": signature})
    return str(path)


def test_a_model_with_another_contract_is_not_blessed(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(x):
        return {"scores": tf.nn.softmax(x)}

    result = validate(save_module(tmp_path / "m", serve), BUDGETS, max_pixels=10_000, timeout_s=120)
    assert result["passed"] is False
    assert result["problems"][0] == "serving_default takes ['x'], expected only 'image_bytes'"


def test_a_model_without_warmup_requests_is_not_blessed(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        n = tf.shape(image_bytes)[0]
        return {"classes": tf.fill([n], "a"), "class_ids": tf.zeros([n], tf.int64),
                "probabilities": tf.ones([n, 1]), "top_k_classes": tf.fill([n, 1], "a"),
                "top_k_probabilities": tf.ones([n, 1])}

    result = validate(save_module(tmp_path / "m", serve), BUDGETS, max_pixels=10_000, timeout_s=120)
    assert result["passed"] is False
    assert "the model has no warmup requests in assets.extra" in result["problems"]


def test_a_model_that_does_not_answer_in_time_is_not_blessed(tmp_path):
    result = validate(str(tmp_path), BUDGETS, max_pixels=10_000, timeout_s=1)
    assert (result["passed"], result["problems"]) == (False, ["the model did not answer within 1 s (a hang)"])


def test_a_model_using_an_op_the_serving_runtime_lacks_is_not_blessed(tmp_path):
    """DecodeWebP is in TensorFlow 2.21 (training) but not 2.19.1 (tensorflow/serving:2.19.1)."""
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        images = tf.map_fn(lambda b: tf.raw_ops.DecodeWebP(contents=b, channels=3), image_bytes,
                           fn_output_signature=tf.TensorSpec([None, None, None, 3], tf.uint8))  # frames
        return {"probabilities": tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])}

    result = validate(save_module(tmp_path / "m", serve), BUDGETS, max_pixels=10_000, timeout_s=300,
                      serving_tf_version="2.19.1")
    assert result["passed"] is False
    assert not any("DecodeWebP" in p for p in result["problems"][:-1])  # the training runtime loads it
    assert result["problems"][-1] == ("in TensorFlow 2.19.1 (the serving image's runtime): the model uses the op "
                                      "DecodeWebP, which this TensorFlow does not have")
    assert result["serving_runtime"]["missing_ops"] == ["DecodeWebP"]


def test_the_serving_version_is_the_tf_serving_image_in_k8s_and_the_dockerfile():
    from pipeline.config import ServingConfig

    version = ServingConfig().tf_version
    k8s = REPO / "k8s"
    assert f"image: tensorflow/serving:{version}\n" in (k8s / "base" / "deployment.yaml").read_text()
    assert f"newTag: {version}-gpu}}" in (k8s / "overlays" / "gpu" / "kustomization.yaml").read_text()
    dockerfile = (k8s.parent / "Dockerfile").read_text()
    assert f"ARG SERVING_TF_VERSION={version}\n" in dockerfile


def test_a_serving_version_that_cannot_be_built_is_a_clear_refusal(tmp_path, monkeypatch):
    monkeypatch.setenv("THAW_SERVING_RUNTIMES", str(tmp_path / "runtimes"))
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        return {"probabilities": tf.ones([tf.shape(image_bytes)[0], 1])}

    result = validate(save_module(tmp_path / "m", serve), BUDGETS, max_pixels=10_000, timeout_s=120,
                      serving_tf_version="2.0.99")
    assert result["passed"] is False
    assert "could not build the serving runtime (TensorFlow 2.0.99)" in result["problems"][-1]
    assert not list((tmp_path / "runtimes").glob("tf-2.0.99*/venv"))  # nothing half-built is left

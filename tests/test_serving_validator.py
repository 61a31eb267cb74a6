"""ServingValidator's probe on models that must fail it."""

import tensorflow as tf

from components.serving_validator import validate

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
    assert result == {"passed": False, "problems": ["the model did not answer within 1 s (a hang)"]}

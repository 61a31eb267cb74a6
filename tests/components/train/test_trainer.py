"""run_fn's own parts: a model trained in mixed precision is exported in float32."""

import numpy as np
import tf_keras

from tests.support.schedule_job import classifier


def test_a_model_trained_in_mixed_precision_is_exported_in_float32():
    from components.train.trainer import float32_copy

    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        tf_keras.utils.set_random_seed(0)
        mixed, _ = classifier()
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("head_pool").compute_dtype == "float16"
    copy = float32_copy(mixed, lambda: classifier()[0])
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(copy(x).numpy(), mixed(x).numpy(), atol=2e-3)

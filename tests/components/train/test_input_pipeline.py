"""The trainer's input pipeline: augmentation of training images."""

import numpy as np
import tensorflow as tf

from components.train.input_pipeline import augment
from components.train.options import AugmentConfig


def test_augmentation_keeps_size_and_range_and_changes_training_images():
    pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype("float32"))
    config = AugmentConfig(flip="both", crop=0.3, brightness=0.2, contrast=0.3)
    outputs = [augment(pixels, config, seed=i) for i in range(4)]
    for out in outputs:
        assert out.shape == (16, 16, 3)
        assert 0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255
    assert any(not np.allclose(out, pixels) for out in outputs)
    np.testing.assert_array_equal(augment(pixels, AugmentConfig(), seed=0), pixels)

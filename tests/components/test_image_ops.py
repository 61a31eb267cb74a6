"""image_ops: the one decode and resize that training, evaluation and serving share."""

import pytest
import tensorflow as tf

from components import image_ops
from tests.conftest import png_bytes


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_decode_and_resize_gives_rgb_pixels_in_0_255(mode):
    pixels = image_ops.decode_and_resize(tf.constant(png_bytes(size=(40, 20), mode=mode, color=200)), 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == tf.float32
    assert 0 <= float(tf.reduce_min(pixels)) and float(tf.reduce_max(pixels)) <= 255


def test_decode_rejects_bytes_that_are_no_image():
    with pytest.raises(tf.errors.InvalidArgumentError):
        image_ops.decode_and_resize(tf.constant(b"not an image"), 32)

"""The one image decode and resize that training, evaluation and serving share.

A model is only as good as the agreement between how its training images and
its serving images are turned into pixels, so this is the single place where
that happens: the trainer's input pipeline, the evaluation signature and the
serving signature all call ``decode_and_resize``.
"""

import tensorflow as tf

# Pixels leave this module as float32 RGB in [0, 255]; the model applies its
# backbone's own scaling inside itself, so callers never need to know it.
CHANNELS = 3


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image (JPEG, PNG, GIF, BMP) to [size, size, 3] float32.

    Grayscale and alpha images become RGB, so every source feeds the backbone
    the same shape. ``expand_animations=False`` keeps a GIF to its first frame.
    """
    image = tf.io.decode_image(image_bytes, channels=CHANNELS, expand_animations=False)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, [image_size, image_size, CHANNELS])


def decode_batch(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a batch of encoded images, [N] string -> [N, size, size, 3] float32."""
    return tf.map_fn(
        lambda b: decode_and_resize(b, image_size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([image_size, image_size, CHANNELS], tf.float32),
    )

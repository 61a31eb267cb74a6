"""The one image decode and resize that training, evaluation and serving share.

A model is only as good as the agreement between how its training images and
its serving images are turned into pixels, so this is the single place where
that happens: the trainer's input pipeline, the evaluation signature and the
serving signature all call ``decode_and_resize``.
"""

from __future__ import annotations

import tensorflow as tf

# Pixels leave this module as float32 RGB in [0, 255]; the model applies its
# backbone's own scaling inside itself, so callers never need to know it.
CHANNELS = 3


def _uint(image_bytes: tf.Tensor, offset: int, length: int, big_endian: bool) -> tf.Tensor:
    """An unsigned integer of ``length`` bytes at ``offset`` of the encoded image, as int64."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(image_bytes, offset, length), tf.uint8), tf.int64)
    raw = tf.ensure_shape(raw, [length])
    weights = [256 ** (length - 1 - i) if big_endian else 256 ** i for i in range(length)]
    return tf.reduce_sum(raw * tf.constant(weights, tf.int64))


def header_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """Width x height as the image's header states it, read before anything is decoded.

    PNG, GIF and BMP headers are read directly, JPEG with extract_jpeg_shape;
    other bytes give 0 and are left to the decoder to reject.
    """
    magic = tf.strings.substr(image_bytes, 0, 4)
    return tf.case([
        (tf.equal(magic, b"\x89PNG"),
         lambda: _uint(image_bytes, 16, 4, True) * _uint(image_bytes, 20, 4, True)),
        (tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"),
         lambda: _uint(image_bytes, 6, 2, False) * _uint(image_bytes, 8, 2, False)),
        (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"),
         lambda: _uint(image_bytes, 18, 4, False) * _uint(image_bytes, 22, 4, False)),
        (tf.equal(tf.strings.substr(magic, 0, 2), b"\xff\xd8"),
         lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64))),
    ], default=lambda: tf.constant(0, tf.int64), exclusive=True)


def decode_and_resize(image_bytes: tf.Tensor, image_size: int, max_pixels: int | None = None) -> tf.Tensor:
    """Decodes one encoded image (JPEG, PNG, GIF, BMP) to [size, size, 3] float32.

    Grayscale and alpha images become RGB, so every source feeds the backbone
    the same shape. ``expand_animations=False`` keeps a GIF to its first frame.
    With ``max_pixels`` (serving sets it), an image whose header claims more
    pixels is refused with InvalidArgument before it is decoded, so a
    decompression bomb never allocates.
    """
    checks = []
    if max_pixels is not None:
        checks.append(tf.debugging.assert_less_equal(
            header_pixels(image_bytes), tf.constant(max_pixels, tf.int64),
            message=f"image is over the pixel limit of {max_pixels}"))
    with tf.control_dependencies(checks):
        image = tf.io.decode_image(image_bytes, channels=CHANNELS, expand_animations=False)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, [image_size, image_size, CHANNELS])


def decode_batch(image_bytes: tf.Tensor, image_size: int, max_pixels: int | None = None) -> tf.Tensor:
    """Decodes a batch of encoded images, [N] string -> [N, size, size, 3] float32."""
    return tf.map_fn(
        lambda b: decode_and_resize(b, image_size, max_pixels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([image_size, image_size, CHANNELS], tf.float32),
    )

"""The trainer's input: Transform's examples -> batches of (pixels, label id).

Images arrive as encoded bytes and are decoded in parallel by the shared
components.image_ops function, augmented when training (random flips, crops,
brightness and contrast, as configured), with AUTOTUNE and prefetch so the
accelerator is not left waiting on the CPU.
"""

from __future__ import annotations

import tensorflow as tf

from components import image_ops
from components.train.options import AugmentConfig
from components.train.preprocessing import IMAGE_KEY, LABEL_ID_KEY


def _files(file_patterns: list[str]) -> list[str]:
    """The TFRecord files the patterns match, in a stable order."""
    return sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))


def augment(pixels: tf.Tensor, config: AugmentConfig, seed: int) -> tf.Tensor:
    """One training image, randomly changed as ``config`` (the training.augment section) says.

    Pixels stay float32 RGB in [0, 255] at the same size, so the model sees
    augmented and plain images the same way.
    """
    size = pixels.shape[0]
    if config.flip in ("horizontal", "both"):
        pixels = tf.image.random_flip_left_right(pixels, seed=seed)
    if config.flip in ("vertical", "both"):
        pixels = tf.image.random_flip_up_down(pixels, seed=seed + 1)
    if config.crop:
        side = tf.cast(tf.round(size * tf.random.uniform([], 1.0 - config.crop, 1.0, seed=seed + 2)), tf.int32)
        pixels = tf.image.random_crop(pixels, tf.stack([side, side, 3]), seed=seed + 3)
        pixels = tf.image.resize(pixels, [size, size])
    if config.brightness:
        pixels = tf.image.random_brightness(pixels, config.brightness * 255.0, seed=seed + 4)
    if config.contrast:
        pixels = tf.image.random_contrast(pixels, 1.0 - config.contrast, 1.0 + config.contrast, seed=seed + 5)
    return tf.clip_by_value(pixels, 0.0, 255.0)


def make_dataset(file_patterns: list[str], image_size: int, batch_size: int, *,
                 training: bool, seed: int, augmentation: AugmentConfig | None = None) -> tf.data.Dataset:
    """Reads gzipped TFRecords of transformed examples.

    Training data is shuffled, augmented and repeated without end (the
    schedule counts steps per epoch); evaluation data is read once, in order.
    """
    files = _files(file_patterns)
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_ID_KEY: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        pixels = image_ops.decode_and_resize(features[IMAGE_KEY], image_size)
        if training and augmentation:
            pixels = augment(pixels, augmentation, seed)
        return pixels, features[LABEL_ID_KEY]

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP",
                                num_parallel_reads=tf.data.AUTOTUNE if training else None)
    if training:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def count_labels(file_patterns: list[str], class_names: list[str]) -> dict[str, int]:
    """Examples per class, reading only the label ids (no image is decoded)."""
    files = _files(file_patterns)
    spec = {LABEL_ID_KEY: tf.io.FixedLenFeature([], tf.int64)}
    ds = (tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
          .map(lambda batch: tf.io.parse_example(batch, spec)[LABEL_ID_KEY]))
    counts = [0] * len(class_names)
    for ids in ds.as_numpy_iterator():
        for i in ids:
            counts[int(i)] += 1
    return dict(zip(class_names, counts))


def first_images(file_patterns: list[str], count: int) -> list[bytes]:
    """The encoded bytes of the first ``count`` images, as stored (for warmup requests)."""
    files = _files(file_patterns)
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [tf.io.parse_single_example(r, spec)[IMAGE_KEY].numpy() for r in ds]

"""The trainer's input: Transform's examples -> batches of (pixels, label id).

Images arrive as encoded bytes and are decoded in parallel by the shared
components.image_ops function, with AUTOTUNE and prefetch so the accelerator
is not left waiting on the CPU.
"""

from __future__ import annotations

import tensorflow as tf

from components import image_ops
from components.preprocessing import IMAGE_KEY, LABEL_ID_KEY


def make_dataset(file_patterns: list[str], image_size: int, batch_size: int, *,
                 training: bool, seed: int) -> tf.data.Dataset:
    """Reads gzipped TFRecords of transformed examples; shuffles when training."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_ID_KEY: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        return image_ops.decode_and_resize(features[IMAGE_KEY], image_size), features[LABEL_ID_KEY]

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if training:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def count_labels(file_patterns: list[str], class_names: list[str]) -> dict[str, int]:
    """Examples per class, reading only the label ids (no image is decoded)."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
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
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [tf.io.parse_single_example(r, spec)[IMAGE_KEY].numpy() for r in ds]

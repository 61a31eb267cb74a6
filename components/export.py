"""Exporting the trained classifier as a SavedModel that TF Serving and TFMA read.

Signatures:
- ``serving_default``: ``image_bytes`` (a batch of encoded images; the name ends
  in ``_bytes`` so TF Serving's REST API takes ``{"b64": ...}``) -> class ids,
  class names, probabilities and the top k.
- ``serving_examples``: serialized tf.Examples -> the same outputs; for TFMA and
  batch inference.
- ``transform_features``: serialized raw tf.Examples -> Transform's features,
  which TFMA uses to turn the label name into the id the model predicts.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components import image_ops
from components.preprocessing import IMAGE_KEY

TOP_K = 5


def _predictions(probabilities: tf.Tensor, class_names: tf.Tensor) -> dict[str, tf.Tensor]:
    k = min(TOP_K, int(class_names.shape[0]))
    top = tf.math.top_k(probabilities, k=k)
    class_ids = tf.argmax(probabilities, axis=-1)
    return {
        "probabilities": probabilities,
        "class_ids": class_ids,
        "classes": tf.gather(class_names, class_ids),
        "top_k_probabilities": top.values,
        "top_k_classes": tf.gather(class_names, top.indices),
    }


def export_model(model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput,
                 class_names: list[str], image_size: int, export_dir: str) -> None:
    """Saves ``model`` with the three signatures to ``export_dir``."""
    # Tracked on the model so the class names and the Transform graph's assets
    # are saved with it.
    model.class_names = tf.Variable(class_names, trainable=False, dtype=tf.string, name="class_names")
    model.tft_layer = tf_transform_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_image_bytes(image_bytes):
        pixels = image_ops.decode_batch(image_bytes, image_size)
        return _predictions(model(pixels, training=False), model.class_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        features = tf.io.parse_example(examples, {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        pixels = image_ops.decode_batch(features[IMAGE_KEY], image_size)
        return _predictions(model(pixels, training=False), model.class_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples):
        raw = tf.io.parse_example(examples, tf_transform_output.raw_feature_spec())
        return model.tft_layer(raw)

    model.save(
        export_dir,
        save_format="tf",
        signatures={
            "serving_default": serve_image_bytes,
            "serving_examples": serve_examples,
            "transform_features": transform_features,
        },
    )

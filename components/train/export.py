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

import os

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components import image_ops
from components.model_contract import SERVING_INPUT_KEY, WARMUP_FILE
from components.train.preprocessing import IMAGE_KEY

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
                 class_names: list[str], image_size: int, export_dir: str, max_pixels: int,
                 warmup_images: list[bytes]) -> None:
    """Saves ``model`` with the three signatures to ``export_dir``, and its warmup requests.

    The serving signatures refuse images whose header claims more than
    ``max_pixels`` pixels with InvalidArgument, before decoding them.
    """
    # Tracked on the model so the class names and the Transform graph's assets
    # are saved with it.
    model.class_names = tf.Variable(class_names, trainable=False, dtype=tf.string, name="class_names")
    model.tft_layer = tf_transform_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT_KEY)])
    def serve_image_bytes(image_bytes):
        pixels = image_ops.decode_batch(image_bytes, image_size, max_pixels)
        return _predictions(model(pixels, training=False), model.class_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        features = tf.io.parse_example(examples, {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        pixels = image_ops.decode_batch(features[IMAGE_KEY], image_size, max_pixels)
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
    write_warmup_requests(export_dir, warmup_images)


def write_warmup_requests(export_dir: str, images: list[bytes]) -> str:
    """TF Serving's warmup file: one PredictionLog per real image, then one batch of all.

    TF Serving replays these when it loads the model (--enable_model_warmup),
    so the first user request does not pay for graph initialization.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(export_dir, "assets.extra", WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    batches = [[image] for image in images] + ([images] if len(images) > 1 else [])
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name="serving_default"),
                inputs={SERVING_INPUT_KEY: tf.make_tensor_proto(batch, dtype=tf.string)},
            )
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path

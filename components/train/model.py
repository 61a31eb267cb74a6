"""The classifier: the backbone's own input scaling, the pretrained backbone, a new head."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from components.image_ops import CHANNELS
from components.train.options import HeadConfig

# ImageNet's channel statistics, as keras.applications' preprocess_input uses them.
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@tf_keras.saving.register_keras_serializable(package="thaw")
class InputScaling(tf_keras.layers.Layer):
    """RGB pixels in [0, 255] -> what the backbone was trained on.

    Modes, as keras.applications' ``preprocess_input`` defines them: ``none``
    (the backbone scales its input itself), ``unit`` ([0, 1], TF Hub's image
    convention), ``tf`` ([-1, 1]), ``torch`` ([0, 1], then ImageNet mean and
    std per channel), ``caffe`` (RGB -> BGR, then the ImageNet mean subtracted).
    Inside the model, so every caller sends pixels in one convention.
    """

    MODES = ("none", "unit", "tf", "torch", "caffe")

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"input scaling must be one of {', '.join(self.MODES)}, got '{mode}'")
        self.mode = mode

    def call(self, pixels):
        if self.mode == "none":
            return pixels
        if self.mode == "unit":
            return pixels / 255.0
        if self.mode == "tf":
            return pixels / 127.5 - 1.0
        if self.mode == "torch":
            mean = tf.constant(_IMAGENET_MEAN_RGB, pixels.dtype)
            std = tf.constant(_IMAGENET_STD_RGB, pixels.dtype)
            return (pixels / 255.0 - mean) / std
        return pixels[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, pixels.dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def build_classifier(backbone: tf_keras.Model, num_classes: int, image_size: int, head: HeadConfig, *,
                     scaling: str = "none", train_batchnorm: bool = False) -> tf_keras.Model:
    """Pixels -> scaling -> backbone -> pooling -> [dropout, dense]* -> dropout -> softmax.

    The backbone is called with ``training=False``: its BatchNormalization
    layers stay in inference mode even when unfrozen, so fine-tuning on a small
    data set does not wreck the statistics learned on the large one (the Keras
    transfer-learning guide's rule). Dropout in the head still trains.
    ``train_batchnorm``: the backbone follows Keras's learning phase instead
    (batch statistics while fitting), for a network with nothing pretrained to
    protect, such as bench.transfer's scratch variant.
    """
    pixels = tf_keras.Input(shape=(image_size, image_size, CHANNELS), name="pixels")
    scaled = InputScaling(scaling, name="input_scaling")(pixels)
    features = backbone(scaled, training=None if train_batchnorm else False)
    if len(features.shape) == 4:
        pool = {"avg": tf_keras.layers.GlobalAveragePooling2D, "max": tf_keras.layers.GlobalMaxPooling2D,
                "flatten": tf_keras.layers.Flatten}[head.pooling]
        features = pool(name="head_pool")(features)
    for i, units in enumerate(head.dense_units):
        if head.dropout:
            features = tf_keras.layers.Dropout(head.dropout, name=f"head_dropout_{i}")(features)
        features = tf_keras.layers.Dense(units, activation=head.activation, name=f"head_dense_{i}")(features)
    if head.dropout:
        features = tf_keras.layers.Dropout(head.dropout, name="head_dropout")(features)
    # float32 output even under mixed precision, so probabilities sum to 1.
    probabilities = tf_keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                          name="probabilities")(features)
    return tf_keras.Model(pixels, probabilities, name="classifier")

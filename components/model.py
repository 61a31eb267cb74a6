"""The classifier: a pretrained backbone under a new head."""

from __future__ import annotations

import tf_keras

from components.image_ops import CHANNELS


def build_classifier(backbone: tf_keras.Model, num_classes: int, image_size: int,
                     dropout: float) -> tf_keras.Model:
    """Backbone, pooling, dropout and a softmax layer over the new classes.

    The backbone is called with ``training=False``: its BatchNormalization
    layers stay in inference mode even when unfrozen, so fine-tuning on a small
    data set does not wreck the statistics learned on the large one (the Keras
    transfer-learning guide's rule).
    """
    pixels = tf_keras.Input(shape=(image_size, image_size, CHANNELS), name="pixels")
    features = backbone(pixels, training=False)
    if len(features.shape) == 4:
        features = tf_keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if dropout:
        features = tf_keras.layers.Dropout(dropout, name="head_dropout")(features)
    # float32 output even under mixed precision, so probabilities sum to 1.
    probabilities = tf_keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                          name="probabilities")(features)
    return tf_keras.Model(pixels, probabilities, name="classifier")

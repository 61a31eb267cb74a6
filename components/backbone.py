"""Loading a pretrained backbone and cutting off its old classifier."""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras


class BackboneError(ValueError):
    """A backbone that cannot be loaded or cut; the message names the path or layer."""


def load_saved_model(path: str) -> tf_keras.Model:
    """Loads a whole Keras model from a .keras or .h5 file or a SavedModel directory."""
    if not tf.io.gfile.exists(path):
        raise BackboneError(
            f"backbone {path} does not exist: set backbone.path to a .keras or .h5 file "
            "or a SavedModel directory (the demo's is made by `thaw demo`)")
    is_dir = tf.io.gfile.isdir(path)
    if is_dir and not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise BackboneError(f"backbone {path} is a directory without saved_model.pb, so it is no SavedModel")
    if not is_dir and not path.endswith((".keras", ".h5")):
        raise BackboneError(f"backbone {path}: expected a .keras or .h5 file or a SavedModel directory")
    try:
        return tf_keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"backbone {path} could not be loaded as a Keras model: {exc}") from exc


def feature_layer(model: tf_keras.Model, cut_layer: str = "") -> tf_keras.layers.Layer:
    """The layer whose output becomes the new head's input.

    By default the last layer with a 4-D (image-shaped) output: everything
    after it is the old classifier (pooling, dense layers), which a new task
    replaces.
    """
    if cut_layer:
        try:
            return model.get_layer(cut_layer)
        except ValueError:
            names = [layer.name for layer in model.layers]
            raise BackboneError(
                f"backbone has no layer named '{cut_layer}' to cut at; its layers are: {', '.join(names)}"
            ) from None
    for layer in reversed(model.layers):
        shape = layer.output.shape
        if len(shape) == 4:
            return layer
    raise BackboneError(
        f"backbone '{model.name}' has no layer with a 4-D feature-map output; "
        "name the layer to cut at in backbone.cut_layer")


def load_backbone(path: str, cut_layer: str = "", image_size: int | None = None) -> tf_keras.Model:
    """The pretrained network up to its feature layer, as a model of its own.

    The backbone applies its own input scaling inside itself, so callers feed it
    float RGB pixels in [0, 255] whatever it was trained with.
    """
    model = load_saved_model(path)
    cut = feature_layer(model, cut_layer)
    backbone = tf_keras.Model(model.inputs, cut.output, name="backbone")
    expected = backbone.input_shape
    if image_size is not None and expected[1:3] not in ((None, None), (image_size, image_size)):
        raise BackboneError(
            f"backbone {path} takes {expected[1]}x{expected[2]} images but backbone.image_size is "
            f"{image_size}: set backbone.image_size to {expected[1]}")
    if expected[-1] != 3:
        raise BackboneError(f"backbone {path} takes {expected[-1]} channels; Thaw feeds RGB (3 channels)")
    return backbone

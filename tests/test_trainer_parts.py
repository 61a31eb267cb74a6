"""The trainer's parts: decoding, backbone loading and cutting, the schedule."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components import image_ops
from components.backbone import BackboneError, feature_layer, load_backbone
from components.model import build_classifier
from components.schedule import Stage, count_trainable, run_schedule, set_trainable
from tests.conftest import png_bytes


def small_cnn(size=16, classes=3):
    inputs = tf_keras.Input((size, size, 3))
    x = tf_keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = tf_keras.layers.Conv2D(4, 3, name="conv1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn1")(x)
    x = tf_keras.layers.ReLU(name="relu1")(x)
    x = tf_keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return tf_keras.Model(inputs, outputs)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_decode_and_resize_gives_rgb_pixels_in_0_255(mode):
    pixels = image_ops.decode_and_resize(tf.constant(png_bytes(size=(40, 20), mode=mode, color=200)), 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == tf.float32
    assert 0 <= float(tf.reduce_min(pixels)) and float(tf.reduce_max(pixels)) <= 255


def test_decode_rejects_bytes_that_are_no_image():
    with pytest.raises(tf.errors.InvalidArgumentError):
        image_ops.decode_and_resize(tf.constant(b"not an image"), 32)


@pytest.mark.parametrize("suffix", [".keras", ".h5", "_savedmodel"])
def test_backbones_load_from_every_saved_format_and_cut_at_the_feature_map(tmp_path, suffix):
    path = str(tmp_path / f"model{suffix}")
    if suffix == "_savedmodel":
        small_cnn().save(path, save_format="tf")
    else:
        small_cnn().save(path)
    backbone = load_backbone(path, image_size=16)
    assert backbone.layers[-1].name == "conv2"
    assert backbone.output_shape == (None, 12, 12, 4)


def test_named_cut_layer_and_a_wrong_one(tmp_path):
    model = small_cnn()
    assert feature_layer(model, "relu1").name == "relu1"
    with pytest.raises(BackboneError, match="no layer named 'block9'.*conv1, bn1"):
        feature_layer(model, "block9")


def test_backbone_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(str(tmp_path / "missing.keras"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(BackboneError, match="without saved_model.pb"):
        load_backbone(str(tmp_path / "dir"))
    small_cnn().save(tmp_path / "m.keras")
    with pytest.raises(BackboneError, match="takes 16x16 images but backbone.image_size is 32"):
        load_backbone(str(tmp_path / "m.keras"), image_size=32)


def test_set_trainable_freezes_all_but_the_top_layers():
    backbone = load_backbone_from(small_cnn())
    set_trainable(backbone, 0)
    assert not backbone.trainable_weights
    set_trainable(backbone, 2)  # relu1 and conv2; relu1 has no weights
    assert [w.name.split("/")[0] for w in backbone.trainable_weights] == ["conv2", "conv2"]
    set_trainable(backbone, -1)
    assert len(backbone.trainable_weights) == len(backbone.weights) - 2  # BN moving stats never train


def load_backbone_from(model):
    return tf_keras.Model(model.inputs, feature_layer(model).output, name="backbone")


def test_schedule_trains_the_head_then_the_top_with_batchnorm_in_inference_mode(tmp_path):
    tf_keras.utils.set_random_seed(0)
    backbone = load_backbone_from(small_cnn())
    model = build_classifier(backbone, num_classes=2, image_size=16, dropout=0.0)
    bn = backbone.get_layer("bn1")
    moving_mean = bn.moving_mean.numpy().copy()
    conv1, conv2 = (backbone.get_layer(n).kernel.numpy().copy() for n in ("conv1", "conv2"))
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    y = np.arange(16) % 2
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    stages = [Stage("head", 1, 0, 1e-2), Stage("top", 1, 1, 1e-3)]
    results = run_schedule(model, backbone, stages, ds, ds, log_dir=str(tmp_path))

    assert [r.name for r in results] == ["head", "top"]
    head_params = 4 * 2 + 2  # the new dense layer alone
    assert results[0].trainable_params == head_params
    assert results[1].trainable_params == head_params + 3 * 3 * 4 * 4 + 4  # plus conv2
    assert [r.learning_rate for r in results] == [1e-2, 1e-3]
    assert all(r.epochs_run == 1 for r in results)
    # The top stage moved conv2 only; conv1 stayed frozen through both stages.
    np.testing.assert_array_equal(backbone.get_layer("conv1").kernel.numpy(), conv1)
    assert not np.array_equal(backbone.get_layer("conv2").kernel.numpy(), conv2)
    # BatchNorm ran in inference mode: its moving statistics never changed.
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving_mean)
    assert count_trainable(model) == results[1].trainable_params

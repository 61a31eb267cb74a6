"""Every backbone source loads, is cut at its feature layer and scales its input its own way."""

import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components.train.backbone import (APPLICATION_SCALING, BackboneError, feature_layer, load_backbone,
                                 resolve_hub_handle)
from components.train.model import InputScaling, build_classifier
from components.train.options import BackboneConfig, HeadConfig
from components.train.trainable import first_trainable_layer, set_trainable


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


def mobilenet(include_top=False, seed=1):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.applications.MobileNetV2(include_top=include_top, weights=None, input_shape=(32, 32, 3),
                                             classes=7)


@pytest.mark.parametrize("suffix", [".keras", ".h5", "_savedmodel"])
def test_whole_keras_models_load_from_every_saved_format_and_are_cut_at_the_feature_map(tmp_path, suffix):
    path = str(tmp_path / f"model{suffix}")
    small_cnn().save(path, save_format="tf" if suffix == "_savedmodel" else None)
    backbone = load_backbone(BackboneConfig(path=path, image_size=16))
    assert backbone.source == "keras" and backbone.scaling == "none"
    assert backbone.model.layers[-1].name == "conv2"
    assert backbone.model.output_shape == (None, 12, 12, 4)


@pytest.mark.parametrize("file_name", ["notop.h5", "with_top.h5", "notop.weights.h5"])
def test_an_application_by_name_reads_its_weights_from_a_file(tmp_path, monkeypatch, file_name):
    # alpha is not in Thaw's config (MobileNetV2's default is 1.0); the smaller
    # net keeps the test fast and is the same code path.
    monkeypatch.setattr(tf_keras.applications, "MobileNetV2", _partial_alpha(tf_keras.applications.MobileNetV2))
    source = mobilenet(include_top="with_top" in file_name)
    source.save_weights(str(tmp_path / file_name))
    backbone = load_backbone(BackboneConfig(architecture="MobileNetV2", path=str(tmp_path / file_name),
                                            image_size=32))
    assert backbone.source == "applications" and backbone.scaling == "tf"
    for layer in backbone.model.layers:
        if layer.weights:
            for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(got, want)


def _partial_alpha(build):
    def small(**kwargs):
        return build(alpha=0.35, **kwargs)
    small.__module__ = build.__module__
    return small


def test_weights_of_another_architecture_are_refused_naming_the_layers(tmp_path):
    small_cnn(32).save_weights(str(tmp_path / "cnn.h5"))
    with pytest.raises(BackboneError, match=r"has no weights for \d+ of MobileNetV2's layers \(e.g. Conv1"):
        load_backbone(BackboneConfig(architecture="MobileNetV2", path=str(tmp_path / "cnn.h5"), image_size=32))
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(BackboneConfig(architecture="MobileNetV2", path=str(tmp_path / "missing.h5"), image_size=32))


def test_an_application_at_an_image_size_it_cannot_take_names_both():
    with pytest.raises(BackboneError, match="MobileNetV2 at backbone.image_size 16"):
        load_backbone(BackboneConfig(architecture="MobileNetV2", path="", image_size=16))


@pytest.mark.parametrize("mode,module", [("tf", "mobilenet_v2"), ("torch", "densenet"), ("caffe", "resnet50")])
def test_input_scaling_matches_keras_preprocess_input(mode, module):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    want = getattr(tf_keras.applications, module).preprocess_input(pixels.copy())
    np.testing.assert_allclose(InputScaling(mode)(pixels).numpy(), want, rtol=1e-5, atol=1e-4)


def test_every_application_family_has_a_known_scaling():
    families = {getattr(tf_keras.applications, name).__module__.rsplit(".", 1)[-1]
                for name in dir(tf_keras.applications) if name[0].isupper()}
    assert families <= set(APPLICATION_SCALING), families - set(APPLICATION_SCALING)


def feature_module():
    """A TF Hub style module (the Reusable SavedModel API): images in [0, 1] -> a feature vector."""
    root = tf.train.Checkpoint()
    root.kernel = tf.Variable(tf.random.stateless_normal([3, 5], seed=[1, 2]), name="kernel")
    root.frozen = tf.Variable(tf.ones([5]), trainable=False, name="frozen")
    root.variables = [root.kernel, root.frozen]
    root.trainable_variables = [root.kernel]
    root.__call__ = tf.function(
        lambda images: tf.matmul(tf.reduce_mean(images, axis=[1, 2]), root.kernel) * root.frozen,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    return root


def test_a_tf_hub_module_from_a_directory_is_one_trainable_layer(tmp_path):
    tf.saved_model.save(feature_module(), str(tmp_path / "hub"))
    backbone = load_backbone(BackboneConfig(path=str(tmp_path / "hub"), image_size=16))
    assert backbone.source == "hub" and backbone.scaling == "unit"
    model = build_classifier(backbone.model, 2, 16, HeadConfig(), scaling=backbone.scaling)
    set_trainable(backbone.model, first_trainable_layer(backbone.model, "none"))
    assert len(model.trainable_weights) == 2  # the head alone
    set_trainable(backbone.model, first_trainable_layer(backbone.model, "all"))
    assert len(model.trainable_weights) == 3  # plus the module's kernel; never its frozen variable
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    hub = backbone.model.get_layer("hub_module")
    before = hub.module.kernel.numpy().copy()
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    model.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    assert not np.array_equal(hub.module.kernel.numpy(), before)


def test_a_tf_hub_handle_is_downloaded_compressed_once(tmp_path, monkeypatch):
    tf.saved_model.save(feature_module(), str(tmp_path / "module"))
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(str(tmp_path / "module"), arcname=".")
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(archive.getvalue())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    handle = f"http://127.0.0.1:{server.server_port}/models/features/1"
    try:
        first = resolve_hub_handle(handle)
        assert resolve_hub_handle(handle) == first
        backbone = load_backbone(BackboneConfig(path=handle, image_size=16))
    finally:
        server.shutdown()
    assert requests == ["/models/features/1?tf-hub-format=compressed"]
    assert backbone.model.output_shape == (None, 5)


def test_cutting_errors_name_the_layer_and_the_shapes(tmp_path):
    model = small_cnn()
    assert feature_layer(model, "relu1").name == "relu1"
    with pytest.raises(BackboneError, match="no layer named 'block9'.*conv1, bn1"):
        feature_layer(model, "block9")
    inputs = tf_keras.Input((16, 16, 3))
    tokens = tf_keras.layers.Reshape((256, 3), name="tokens")(inputs)
    with pytest.raises(BackboneError, match=r"'tokens' outputs shape \(None, 256, 3\)"):
        feature_layer(tf_keras.Model(inputs, tokens), "tokens")
    model.save(tmp_path / "m.keras")
    with pytest.raises(BackboneError, match="takes 16x16 images but backbone.image_size is 32"):
        load_backbone(BackboneConfig(path=str(tmp_path / "m.keras"), image_size=32))
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(BackboneConfig(path=str(tmp_path / "missing.keras"), image_size=16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no saved_model.pb"):
        load_backbone(BackboneConfig(path=str(tmp_path / "empty"), image_size=16))


def test_a_loaded_model_is_rebuilt_for_mixed_precision_with_its_weights(tmp_path):
    small_cnn().save(tmp_path / "m.keras")
    backbone = load_backbone(BackboneConfig(path=str(tmp_path / "m.keras"), image_size=16),
                             dtype_policy="mixed_float16")
    conv = backbone.model.get_layer("conv1")
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    original = tf_keras.models.load_model(tmp_path / "m.keras").get_layer("conv1").get_weights()[0]
    np.testing.assert_array_equal(conv.get_weights()[0], original)


def test_a_classifier_saved_around_a_base_model_is_cut_at_the_base(tmp_path):
    base = small_cnn()
    base = tf_keras.Model(base.inputs, base.get_layer("conv2").output, name="base")
    wrapped = tf_keras.Sequential([tf_keras.Input((16, 16, 3)), base,
                                   tf_keras.layers.GlobalAveragePooling2D(), tf_keras.layers.Dense(3)])
    wrapped.save(tmp_path / "wrapped.keras")
    backbone = load_backbone(BackboneConfig(path=str(tmp_path / "wrapped.keras"), image_size=16))
    assert [layer.name for layer in backbone.model.layers][-2:] == ["relu1", "conv2"]
    assert backbone.model.output_shape == (None, 12, 12, 4)


def test_a_whole_model_given_as_an_architectures_weights_is_refused(tmp_path):
    small_cnn(32).save(tmp_path / "m.keras")
    with pytest.raises(BackboneError, match="is a whole saved model, not weights for MobileNetV2"):
        load_backbone(BackboneConfig(architecture="MobileNetV2", path=str(tmp_path / "m.keras"), image_size=32))


def test_a_frozen_tf_hub_backbone_copies_onto_a_trainable_one(tmp_path):
    from components.train.trainer import float32_copy

    tf.saved_model.save(feature_module(), str(tmp_path / "hub"))

    def build():
        backbone = load_backbone(BackboneConfig(path=str(tmp_path / "hub"), image_size=16))
        return build_classifier(backbone.model, 2, 16, HeadConfig(), scaling=backbone.scaling), backbone.model

    trained, backbone = build()
    set_trainable(backbone, first_trainable_layer(backbone, "none"))  # the last stage left it frozen
    copy = float32_copy(trained, lambda: build()[0])
    for got, want in zip(copy.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_a_tf_hub_module_that_takes_training_runs_its_batchnorm_in_inference_mode(tmp_path):
    root = tf.train.Checkpoint()
    root.scale = tf.Variable(2.0)
    root.variables = [root.scale]
    root.trainable_variables = [root.scale]

    @tf.function
    def call(images, training=False):
        features = tf.reduce_mean(images, axis=[1, 2]) * root.scale
        return features * 100.0 if training else features

    for training in (True, False):
        call.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32), training)
    root.__call__ = call
    tf.saved_model.save(root, str(tmp_path / "bn_hub"))
    backbone = load_backbone(BackboneConfig(path=str(tmp_path / "bn_hub"), image_size=8))
    x = np.full((1, 8, 8, 3), 0.5, dtype="float32")
    assert backbone.model.get_layer("hub_module")._takes_training
    np.testing.assert_allclose(backbone.model(x).numpy(), [[1.0, 1.0, 1.0]])


@pytest.mark.parametrize("suffix", [".keras", ".h5", "_savedmodel"])
def test_a_backbone_with_a_lambda_layer_runs_no_code_unless_trusted(tmp_path, suffix):
    marker = tmp_path / "code-ran"
    # The Lambda's bytecode writes a file when the layer is called, as loading a saved model does.
    hostile = eval(f"lambda x: (open({str(marker)!r}, 'a').write('ran'), x)[1]")  # noqa: S307
    inputs = tf_keras.Input((16, 16, 3))
    x = tf_keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    x = tf_keras.layers.Lambda(hostile, name="innocent_looking")(x)
    outputs = tf_keras.layers.Dense(3, name="predictions")(tf_keras.layers.GlobalAveragePooling2D()(x))
    path = str(tmp_path / f"model{suffix}")
    tf_keras.Model(inputs, outputs).save(path, save_format="tf" if suffix == "_savedmodel" else None)
    marker.unlink(missing_ok=True)

    with pytest.raises(BackboneError, match=r"1 Lambda layer\(s\) \(innocent_looking\).*backbone.trust_code: true"):
        load_backbone(BackboneConfig(path=path, cut_layer="conv1", image_size=16))
    assert not marker.exists()  # refused before Keras read a layer
    backbone = load_backbone(BackboneConfig(path=path, cut_layer="conv1", trust_code=True, image_size=16))
    assert backbone.model.output_shape == (None, 14, 14, 4)
    assert marker.read_text().startswith("ran")  # trusted: its code did run on load, as refused above

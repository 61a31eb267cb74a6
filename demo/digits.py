"""The bundled demo: a real transfer-learning task made from data a dependency ships.

scikit-learn ships 1,797 real handwritten digits (8x8, from UCI). The demo
splits them by class into two tasks:

- the *pretraining* task, digits 0-4, on which a small CNN backbone is trained
  and saved as a whole classifier (``backbone.keras``), as a user's pretrained
  model would be;
- the *target* task, digits 5-9, written as PNG files in one folder per class
  (``data/five``, ..., ``data/nine``): the data set the pipeline fine-tunes on.

The backbone never sees a 5-9 during pretraining, so the pipeline's result is
real transfer learning. Everything is seeded and made the same way on every
machine; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
PRETRAIN_DIGITS = (0, 1, 2, 3, 4)
TARGET_DIGITS = {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
MANIFEST = "demo.json"
# Bump when the demo's recipe changes, so cached demos are remade.
RECIPE_VERSION = 1
DEMO_CONFIG = "thaw.yaml"     # the demo's own configuration, next to its data and backbone
# The demo's own schedule (the ImageNet-backbone defaults, components.train.options.default_stages, were chosen
# on validation splits of real photos and train the whole backbone; this one was measured on the digits): the
# new head alone at a constant rate, then the backbone from the top down, a block at a time as val_loss stalls,
# warming up and decaying on a cosine (bench.transfer: 0.923 at 30 per class, 0.976 at 120).
DEMO_STAGES = (
    {"name": "head", "epochs": 10, "trainable": "none", "learning_rate": 3e-3, "decay": "constant"},
    {"name": "fine_tune", "epochs": 10, "trainable": "auto", "learning_rate": 1e-3, "warmup_epochs": 1,
     "patience": 2, "auto_max_blocks": 2},
)


def demo_stages() -> list:
    """DEMO_STAGES as the Trainer receives them."""
    from components.train.options import StageConfig

    return [StageConfig(**stage) for stage in DEMO_STAGES]


def write_demo_config(out: Path) -> Path:
    """The demo's thaw.yaml: its data, its backbone at 32x32 and its own schedule (``thaw run`` with no arguments)."""
    import yaml

    config = {"data": {"root": str(out / "data")},
              "backbone": {"path": str(out / "backbone.keras"), "image_size": IMAGE_SIZE},
              "training": {"stages": [dict(stage) for stage in DEMO_STAGES]}}
    text = ("# Written by `thaw demo`: digits 5-9 on a small CNN pretrained on digits 0-4, with the demo's own "
            "schedule.\n" + yaml.safe_dump(config, sort_keys=False))
    path = out / DEMO_CONFIG
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _to_image(digit: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0-16) as a 32x32 8-bit grayscale image."""
    pixels = np.clip(digit * (255.0 / 16.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)


def write_target_images(images: np.ndarray, labels: np.ndarray, out_dir: Path,
                        per_class: int | None) -> dict[str, int]:
    """Writes the target digits as PNGs, one folder per class; returns counts."""
    counts = {}
    for digit, name in TARGET_DIGITS.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(labels == digit)[:per_class]
        for i in indices:
            _to_image(images[i]).save(folder / f"{name}_{i:04d}.png")
        counts[name] = len(indices)
    return counts


def build_backbone_model(num_classes: int):
    """A small CNN with BatchNorm, like the blocks of the keras.applications models.

    It scales its own input (pixels in [0, 255]) so callers feed raw pixels.
    """
    import tf_keras
    from tf_keras import layers

    inputs = tf_keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for block, filters in enumerate((16, 32, 64), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < 3:
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return tf_keras.Model(inputs, outputs, name="digits_cnn")


def pretrain_backbone(images: np.ndarray, labels: np.ndarray, path: Path, seed: int,
                      epochs: int) -> dict[str, float]:
    """Trains the backbone on the pretraining digits and saves the whole classifier."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    mask = np.isin(labels, PRETRAIN_DIGITS)
    x = np.stack([np.asarray(_to_image(img).convert("RGB"), dtype=np.float32) for img in images[mask]])
    y = labels[mask]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    held_out = len(x) // 5
    model = build_backbone_model(len(PRETRAIN_DIGITS))
    model.compile(optimizer=tf_keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    # Small shifts and rotations make features that transfer, not memorized pixels.
    augment = tf_keras.Sequential([
        tf_keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
        tf_keras.layers.RandomRotation(0.05, seed=seed),
    ])
    train = (tf.data.Dataset.from_tensor_slices((x[held_out:], y[held_out:]))
             .shuffle(len(x), seed=seed).batch(32)
             .map(lambda a, b: (augment(a, training=True), b)))
    model.fit(train, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(x[:held_out], y[:held_out], verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return {"pretrain_held_out_accuracy": float(accuracy), "pretrain_images": int(len(x))}


def _recipe_key(per_class: int | None, seed: int, epochs: int) -> str:
    source = Path(__file__).read_bytes()
    text = json.dumps([RECIPE_VERSION, per_class, seed, epochs]).encode()
    return hashlib.sha256(source + text).hexdigest()[:16]


def make_demo(out_dir: str | os.PathLike, per_class: int | None = None, seed: int = 7,
              epochs: int = 12, force: bool = False) -> dict:
    """Makes (or reuses) the demo under ``out_dir``: ``data/``, ``backbone.keras`` and ``thaw.yaml``.

    ``per_class`` caps the images per target class (None: all, about 180).
    Returns the manifest: what was made, counts, and the backbone's accuracy
    on held-out pretraining digits.
    """
    from sklearn.datasets import load_digits

    out = Path(out_dir).resolve()
    key = _recipe_key(per_class, seed, epochs)
    manifest_path = out / MANIFEST
    if not force and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("recipe") == key and (out / "backbone.keras").exists():
            manifest["config"] = str(write_demo_config(out))
            return manifest
    digits = load_digits()
    images, labels = digits.images, digits.target
    data_dir = out / "data"
    if data_dir.exists():
        for png in data_dir.glob("*/*.png"):
            png.unlink()
    counts = write_target_images(images, labels, data_dir, per_class)
    log.info("wrote %d target images to %s", sum(counts.values()), data_dir)
    stats = pretrain_backbone(images, labels, out / "backbone.keras", seed, epochs)
    manifest = {
        "recipe": key,
        "data": str(data_dir),
        "backbone": str(out / "backbone.keras"),
        "classes": counts,
        "pretrain_digits": list(PRETRAIN_DIGITS),
        # What the summary and the report say of this backbone (components.train.backbone.describe_backbone).
        "model": "the digits demo's small CNN (demo.digits.build_backbone_model)",
        "source": "thaw demo, pretrained on scikit-learn's handwritten digits 0-4",
        **stats,
        "config": str(write_demo_config(out)),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest

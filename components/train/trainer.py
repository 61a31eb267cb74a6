"""The Trainer's user code: ``run_fn``, which the stock TFX Trainer calls.

It reads what the pipeline configured from ``custom_config``, validated as a
``TrainerConfig`` (the components never import the pipeline, and an unknown or
mistyped key, e.g. in a run's ``training`` parameter, stops it by name), builds
the classifier from the pretrained backbone, runs the unfreezing schedule and
exports the SavedModel.

The same code runs on a laptop's CPU and on a GPU node: with GPUs it trains
under ``MirroredStrategy`` over all of them, in mixed precision, with the
global batch ``batch_size`` times the number of GPUs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components.artifacts import BACKBONE_FILE, CHECKPOINT_ROOT_ENV, STAGE_RESULTS_FILE, stored_uri, write_json
from components.model_contract import LABEL_COUNTS_FILE
from components.spec import parse
from components.train.backbone import Backbone, load_backbone
from components.train.export import export_model
from components.train.input_pipeline import count_labels, first_images, make_dataset
from components.train.model import build_classifier
from components.train.options import BackboneConfig, TrainerConfig
from components.train.preprocessing import LABEL_VOCABULARY
from components.train.schedule import run_schedule, write_results

log = logging.getLogger(__name__)

# Real evaluation images replayed by TF Serving when it loads the model.
WARMUP_IMAGES = 8
# Under the Trainer's working directory (its ModelRun artifact): a retried
# Trainer (a preempted node) finds them there and resumes.
CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(model_run_dir: str) -> str:
    """Where the Trainer's checkpoints go: somewhere a retried task finds them.

    The model_run artifact's own folder, when it is the stored artifact (a local
    path, or gs://, which TensorFlow writes directly): a retry of the task gets
    the same URI. When it is the KFP launcher's local copy of a MinIO or S3 URI,
    that copy dies with the pod and is uploaded only when the task succeeds, so
    a retry would start over: the checkpoints go to $THAW_CHECKPOINT_ROOT (a
    volume mounted into the Trainer's pod), in a folder named after the stored
    URI, which a retry of the same task shares. Without it the task still
    runs, and a retry starts at the first epoch.
    """
    stored = stored_uri(model_run_dir)
    if stored == model_run_dir:
        return os.path.join(model_run_dir, CHECKPOINT_DIR)
    root = os.environ.get(CHECKPOINT_ROOT_ENV)
    if root:
        return os.path.join(root, hashlib.sha256(stored.encode()).hexdigest()[:16], CHECKPOINT_DIR)
    log.warning("the model_run artifact %s is the launcher's copy of %s, which a retried task does not get back: "
                "set %s to a volume mounted into the Trainer's pod so a retry resumes from its last epoch",
                model_run_dir, stored, CHECKPOINT_ROOT_ENV)
    return os.path.join(model_run_dir, CHECKPOINT_DIR)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf_keras.utils.set_random_seed(seed)


def distribution(mixed_precision: str = "auto") -> tuple[tf.distribute.Strategy, str]:
    """MirroredStrategy over the visible GPUs, else the default (CPU) strategy; and the dtype policy."""
    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    mixed = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    policy = "mixed_float16" if mixed else "float32"
    log.info("training on %s with %d replica(s), %s", f"{len(gpus)} GPU(s)" if gpus else "the CPU",
             strategy.num_replicas_in_sync, policy)
    return strategy, policy


def float32_copy(model: tf_keras.Model, build) -> tf_keras.Model:
    """The trained ``model`` rebuilt in float32 by ``build()``, for export.

    Trained in mixed precision, the model would serve in float16 too, which
    CPUs (and TFMA's evaluation) run slowly or not at all; the weights are
    float32 either way, so the copy predicts the same.
    """
    copy = build()
    copy.set_weights(model.get_weights())
    return copy


# Files that a prepared backbone may have beside it, naming what it is and where its weights came from:
# demo.pretrained's conversion.json (EfficientNet-Lite0), demo.digits' demo.json (the digits demo's CNN).
BACKBONE_MANIFESTS = ("conversion.json", "demo.json")


def describe_backbone(config: BackboneConfig, loaded: Backbone) -> dict:
    """What a run trained on, for the summary and the report: architecture, weights' origin, image size."""
    record = {"path": config.path or config.architecture, "image_size": config.image_size,
              "kind": loaded.source, "layers": len(loaded.model.layers)}
    if config.architecture:
        record["architecture"] = config.architecture + " (keras.applications)"
        record["weights"] = {"imagenet": "ImageNet, Keras's download", "": "random (no weights)"}.get(
            config.path, config.path)
        return record
    manifest = {}
    folder = os.path.dirname(config.path.rstrip("/"))
    for name in BACKBONE_MANIFESTS if folder and not config.path.startswith(("http://", "https://")) else ():
        candidate = os.path.join(folder, name)
        try:
            if tf.io.gfile.exists(candidate):
                with tf.io.gfile.GFile(candidate) as f:
                    manifest = json.load(f)
                break
        except (OSError, ValueError, tf.errors.OpError):
            manifest = {}
    record["architecture"] = manifest.get("model") or (
        "a TF Hub module" if loaded.source == "hub" else f"a saved Keras model named '{loaded.name}'")
    record["weights"] = manifest.get("source") or config.path
    return record


def run_fn(fn_args) -> None:
    """Trains the classifier in stages and exports it for serving and evaluation."""
    logging.getLogger().setLevel(logging.INFO)
    config = parse(TrainerConfig, fn_args.custom_config,
                   "the Trainer's custom_config (the pipeline's `training` runtime parameter)")
    training = config.training
    image_size = config.backbone.image_size
    _seed_everything(training.seed)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    class_names = [c.decode("utf-8") if isinstance(c, bytes) else c
                   for c in tf_transform_output.vocabulary_by_name(LABEL_VOCABULARY)]
    log.info("%d classes: %s", len(class_names), ", ".join(class_names))

    strategy, policy = distribution(training.mixed_precision)
    tf_keras.mixed_precision.set_global_policy(policy)
    global_batch = training.batch_size * strategy.num_replicas_in_sync
    train_counts = count_labels(fn_args.train_files, class_names)
    steps_per_epoch = training.steps_per_epoch or max(1, math.ceil(sum(train_counts.values()) / global_batch))
    train_ds = make_dataset(fn_args.train_files, image_size, global_batch, training=True, seed=training.seed,
                            augmentation=training.augment)
    eval_ds = make_dataset(fn_args.eval_files, image_size, global_batch, training=False, seed=training.seed)

    def build(dtype_policy: str):
        backbone = load_backbone(config.backbone, dtype_policy=dtype_policy)
        model = build_classifier(backbone.model, len(class_names), image_size, config.head, scaling=backbone.scaling)
        return backbone, model

    with strategy.scope():
        backbone, model = build(policy)
    log.info("backbone from %s (%s): %d layers, input scaling %s", config.backbone.path or
             config.backbone.architecture, backbone.source, len(backbone.model.layers), backbone.scaling)
    write_json(describe_backbone(config.backbone, backbone), fn_args.model_run_dir, BACKBONE_FILE)
    results = run_schedule(
        model, backbone.model, training.stages, train_ds, eval_ds,
        steps_per_epoch=steps_per_epoch, log_dir=fn_args.model_run_dir, strategy=strategy,
        checkpoint_dir=checkpoint_dir(fn_args.model_run_dir),
        # A checkpoint is resumed only by the same configuration, data (as its
        # class counts), steps, global batch and precision.
        fingerprint_extra=json.dumps([config.model_dump(mode="json"), class_names, train_counts, steps_per_epoch,
                                      global_batch, policy], sort_keys=True))
    write_results(results, os.path.join(fn_args.model_run_dir, STAGE_RESULTS_FILE))
    tf_keras.mixed_precision.set_global_policy("float32")
    if policy != "float32":
        model = float32_copy(model, lambda: build("float32")[1])
    export_model(model, tf_transform_output, class_names, image_size, fn_args.serving_model_dir,
                 max_pixels=config.max_pixels, warmup_images=first_images(fn_args.eval_files, WARMUP_IMAGES))
    # The training data's class counts travel with the model (TF Serving ignores
    # this file), so the next run's DataGate can measure drift against them.
    write_json(train_counts, fn_args.serving_model_dir, "assets.extra", LABEL_COUNTS_FILE)

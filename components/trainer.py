"""The Trainer's user code: ``run_fn``, which the stock TFX Trainer calls.

It reads what the pipeline configured from ``custom_config`` (a plain dict: the
components never import the pipeline), builds the classifier from the
pretrained backbone, runs the unfreezing schedule and exports the SavedModel.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components.backbone import load_backbone
from components.export import export_model
from components.artifacts import LABEL_COUNTS_FILE, STAGE_RESULTS_FILE, write_json
from components.input_pipeline import count_labels, first_images, make_dataset
from components.model import build_classifier
from components.preprocessing import LABEL_VOCABULARY
from components.schedule import run_schedule, stages_from_config, write_results

log = logging.getLogger(__name__)

# Real evaluation images replayed by TF Serving when it loads the model.
WARMUP_IMAGES = 8


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf_keras.utils.set_random_seed(seed)


def run_fn(fn_args) -> None:
    """Trains the classifier in stages and exports it for serving and evaluation."""
    logging.getLogger().setLevel(logging.INFO)
    backbone_cfg = fn_args.custom_config["backbone"]
    training_cfg = fn_args.custom_config["training"]
    image_size = int(backbone_cfg["image_size"])
    _seed_everything(int(training_cfg["seed"]))

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    class_names = [c.decode("utf-8") if isinstance(c, bytes) else c
                   for c in tf_transform_output.vocabulary_by_name(LABEL_VOCABULARY)]
    log.info("%d classes: %s", len(class_names), ", ".join(class_names))

    batch_size = int(training_cfg["batch_size"])
    train_ds = make_dataset(fn_args.train_files, image_size, batch_size, training=True,
                            seed=int(training_cfg["seed"]))
    eval_ds = make_dataset(fn_args.eval_files, image_size, batch_size, training=False,
                           seed=int(training_cfg["seed"]))

    backbone = load_backbone(backbone_cfg["path"], backbone_cfg.get("cut_layer", ""), image_size)
    model = build_classifier(backbone, len(class_names), image_size, float(training_cfg["dropout"]))
    results = run_schedule(model, backbone, stages_from_config(training_cfg["stages"]),
                           train_ds, eval_ds, log_dir=fn_args.model_run_dir)
    write_results(results, os.path.join(fn_args.model_run_dir, STAGE_RESULTS_FILE))
    export_model(model, tf_transform_output, class_names, image_size, fn_args.serving_model_dir,
                 max_pixels=int(fn_args.custom_config["max_pixels"]),
                 warmup_images=first_images(fn_args.eval_files, WARMUP_IMAGES))
    # The training data's class counts travel with the model (TF Serving ignores
    # this file), so the next run's DataGate can measure drift against them.
    write_json(count_labels(fn_args.train_files, class_names),
               fn_args.serving_model_dir, "assets.extra", LABEL_COUNTS_FILE)

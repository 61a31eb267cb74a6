"""The staged unfreezing schedule: train the head first, then the backbone from the top down.

Read it top to bottom as the recipe it automates: freeze the backbone and train
the new head; then unfreeze the top layers of the backbone and train again at a
lower learning rate; recompile at every change of ``trainable``, because Keras
only picks up which weights train when the model is compiled.
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf
import tf_keras

from components.artifacts import write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Stage:
    name: str
    epochs: int
    unfreeze_top_layers: int  # 0: head only; N: the backbone's top N layers; -1: all
    learning_rate: float


@dataclasses.dataclass
class StageResult:
    name: str
    trainable_params: int
    learning_rate: float
    epochs_run: int
    best_val_accuracy: float
    history: dict[str, list[float]]


def stages_from_config(stages: list[dict]) -> list[Stage]:
    return [Stage(**{f.name: s[f.name] for f in dataclasses.fields(Stage)}) for s in stages]


def set_trainable(backbone: tf_keras.Model, unfreeze_top_layers: int) -> None:
    """Freezes the backbone except its top ``unfreeze_top_layers`` layers."""
    if unfreeze_top_layers == 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    if unfreeze_top_layers > 0:
        for layer in backbone.layers[:-unfreeze_top_layers]:
            layer.trainable = False


def count_trainable(model: tf_keras.Model) -> int:
    return int(sum(tf.size(w).numpy() for w in model.trainable_weights))


def run_schedule(model: tf_keras.Model, backbone: tf_keras.Model, stages: list[Stage],
                 train_ds: tf.data.Dataset, eval_ds: tf.data.Dataset,
                 log_dir: str) -> list[StageResult]:
    """Runs each stage in turn; epochs are numbered across stages for TensorBoard."""
    results = []
    epoch = 0
    for stage in stages:
        set_trainable(backbone, stage.unfreeze_top_layers)
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=stage.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        trainable = count_trainable(model)
        log.info("stage %s: %d trainable parameters, learning rate %g, %d epochs",
                 stage.name, trainable, stage.learning_rate, stage.epochs)
        history = model.fit(
            train_ds,
            validation_data=eval_ds,
            initial_epoch=epoch,
            epochs=epoch + stage.epochs,
            callbacks=[tf_keras.callbacks.TensorBoard(log_dir=log_dir)],
            verbose=2,
        )
        epoch += stage.epochs
        val = history.history.get("val_accuracy", [float("nan")])
        result = StageResult(
            name=stage.name,
            trainable_params=trainable,
            learning_rate=stage.learning_rate,
            epochs_run=len(history.epoch),
            best_val_accuracy=float(max(val)),
            history={k: [float(x) for x in v] for k, v in history.history.items()},
        )
        log.info("stage %s done: %d epochs, best val_accuracy %.4f",
                 stage.name, result.epochs_run, result.best_val_accuracy)
        results.append(result)
    return results


def write_results(results: list[StageResult], path: str) -> None:
    write_json([dataclasses.asdict(r) for r in results], path)

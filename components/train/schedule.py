"""The staged unfreezing schedule: train the head first, then the backbone from the top down.

Read it top to bottom as the recipe it automates: freeze the backbone and train
the new head; then unfreeze the backbone's top layers and train again at a
lower learning rate; recompile at every change of ``trainable``, because Keras
only picks up which weights train when the model is compiled. BatchNorm stays
in inference mode throughout (``components.train.model`` calls the backbone with
``training=False``).

The schedule runs one epoch at a time, so it can decide between epochs: stop a
stage early when its monitored metric stalls (ending it with its best epoch's
weights), unfreeze the next block in ``auto`` mode, and checkpoint the model,
the optimizer and its own position, so a Trainer killed mid-run (a preempted
GPU node) resumes at the next epoch of the same stage instead of starting over.

Its parts: what trains (``trainable``), how it learns (``optimizers``), where
it resumes from (``checkpoints``); this module is the loop over stages and epochs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import tensorflow as tf
import tf_keras

from components.artifacts import write_json
from components.train.checkpoints import Checkpoints, ResumeState, fingerprint
from components.train.optimizers import WarmupCosine, make_optimizer
from components.train.options import StageConfig
from components.train.trainable import (block_starts, count_trainable, describe_trainable, first_trainable_layer,
                                        layer_lr_scales, set_trainable)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StageResult:
    name: str
    trainable: str                # what trained, in words
    trainable_params: int
    learning_rate: float
    optimizer: str
    epochs_run: int
    best_epoch: int               # within the stage, from 1; 0: none beat the weights it started with
    best_val_accuracy: float
    stopped_early: bool
    blocks_unfrozen: int
    history: dict[str, list[float]]


def _better(monitor: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if monitor == "val_loss" else value > best


class _Compiled:
    """One stage's model configuration: what trains, its optimizer, compiled."""

    def __init__(self, model, backbone, stage: StageConfig, steps_per_epoch: int, strategy):
        self.model, self.backbone, self.stage = model, backbone, stage
        self.steps_per_epoch, self.strategy = steps_per_epoch, strategy
        self.optimizer = None
        self.first = len(backbone.layers)

    def configure(self, blocks: int, epochs_done: int) -> None:
        """Sets what trains and recompiles with a new optimizer.

        The new optimizer counts its steps from 0, so its learning-rate
        schedule starts ``epochs_done`` epochs into the stage.
        """
        stage = self.stage
        self.first = first_trainable_layer(self.backbone, stage.trainable, blocks)
        set_trainable(self.backbone, self.first)
        warmup = round(stage.warmup_epochs * self.steps_per_epoch)
        # Mid-stage, the newly unfrozen block warms up too: over the stage's
        # warmup, or one epoch when the stage has none.
        rewarm = (warmup or self.steps_per_epoch) if epochs_done else warmup
        schedule = WarmupCosine(stage.learning_rate, stage.epochs * self.steps_per_epoch, rewarm, stage.decay,
                                offset=epochs_done * self.steps_per_epoch, decay_start=warmup)
        with self.strategy.scope():
            decay = stage.layer_lr_decay
            if stage.stem_lr_factor != 1.0:  # the lowest block (depth = the block count) at that factor
                decay = stage.stem_lr_factor ** (1.0 / len(block_starts(self.backbone)))
            scales = layer_lr_scales(self.backbone, self.first, decay)
            self.optimizer = make_optimizer(stage.optimizer, stage.weight_decay, schedule, scales)
            self.model.compile(optimizer=self.optimizer, loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"])
            self.optimizer = self.model.optimizer  # wrapped for loss scaling under mixed precision
            # Its slots exist before a checkpoint is restored into them.
            getattr(self.optimizer, "inner_optimizer", self.optimizer).build(self.model.trainable_variables)

    def current_lr(self) -> float:
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(optimizer._learning_rate(optimizer.iterations))

    def describe(self) -> str:
        return describe_trainable(self.backbone, self.first)


@dataclasses.dataclass
class _Run:
    """What every stage of one schedule shares: the model, the data, where checkpoints go."""

    model: tf_keras.Model
    backbone: tf_keras.Model
    train_ds: object                 # a dataset, or one iterator over an endless one
    eval_ds: tf.data.Dataset
    steps_per_epoch: int
    strategy: tf.distribute.Strategy
    checkpoints: Checkpoints
    callbacks: list


def run_schedule(model: tf_keras.Model, backbone: tf_keras.Model, stages: list[StageConfig],
                 train_ds: tf.data.Dataset, eval_ds: tf.data.Dataset, *, steps_per_epoch: int,
                 log_dir: str | None = None, checkpoint_dir: str | None = None,
                 strategy: tf.distribute.Strategy | None = None, callbacks: list | None = None,
                 fingerprint_extra: str = "") -> list[StageResult]:
    """Runs each stage in turn; epochs are numbered across stages for TensorBoard.

    With ``checkpoint_dir``, resumes where a killed run with the same stages,
    model and ``fingerprint_extra`` (e.g. the data) left off.
    """
    checkpoints = Checkpoints(checkpoint_dir, fingerprint(stages, model, fingerprint_extra))
    state = checkpoints.load()
    resume_from = state.latest if state else None
    if state:
        log.info("resuming from %s at stage %d of %d, after %d of its epochs", checkpoint_dir,
                 state.stage + 1, len(stages), state.epoch)
    state = state or ResumeState()
    # Each fit() call is one epoch. Given an endless (repeated) dataset, fit()
    # would start it over every epoch, so with fewer steps than a pass training
    # would only ever see its beginning: one iterator goes on instead.
    if train_ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        train_ds = iter(train_ds)
    run = _Run(model, backbone, train_ds, eval_ds, steps_per_epoch, strategy or tf.distribute.get_strategy(),
               checkpoints, ([tf_keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else [])
               + list(callbacks or []))
    results = [StageResult(**r) for r in state.results]
    for index, stage in enumerate(stages):
        if index < state.stage:
            continue
        results.append(_run_stage(run, index, stage, state, resume_from))
        resume_from = None
        state.end_stage([dataclasses.asdict(r) for r in results])
        checkpoints.save(state, model, None)
    if resume_from:  # every stage had finished: the weights they ended with
        Checkpoints.restore(resume_from, model)
    return results


def _run_stage(run: _Run, index: int, stage: StageConfig, state: ResumeState, resume_from: str | None) -> StageResult:
    """One stage, from its start or from where a killed run left it; ends with its best weights."""
    model = run.model
    mid_stage = state.mid_stage
    if not mid_stage:
        state.begin_stage(index, blocks=1 if stage.trainable == "auto" else 0)
    compiled = _Compiled(model, run.backbone, stage, run.steps_per_epoch, run.strategy)
    # A restored optimizer has counted the steps since it was made, at the
    # start of the stage or when `auto` last unfroze a block.
    compiled.configure(state.blocks, state.optimizer_epoch)
    if resume_from:
        # Mid-stage: the weights and optimizer of the last epoch; at a stage
        # boundary: the weights the previous stage ended with.
        Checkpoints.restore(resume_from, model, compiled.optimizer if mid_stage else None)
    log.info("stage %s: %s, %d trainable parameters, %s at learning rate %g, %d epochs", stage.name,
             compiled.describe(), count_trainable(model), stage.optimizer, stage.learning_rate, stage.epochs)
    best_weights = None  # the best epoch's, when it was in this process
    if index > 0 and stage.restore_best and not mid_stage:
        best_weights = _enter(run, stage, state, compiled)
    while state.epoch < stage.epochs and not state.stopped:
        if _train_epoch(run, stage, state, compiled) and stage.restore_best:
            best_weights = model.get_weights()
        _after_epoch(run, stage, state, compiled)
        run.checkpoints.save(state, model, compiled.optimizer,
                             best=stage.restore_best and state.best_epoch == state.epoch)
    return _finish(run, stage, state, compiled, best_weights)


def _enter(run: _Run, stage: StageConfig, state: ResumeState, compiled: _Compiled) -> list:
    """A later stage's starting weights are its epoch 0, and its best until an epoch beats them.

    So unfreezing never leaves the model worse on validation than the stage
    before it. Returns those weights.
    """
    entry = run.model.evaluate(run.eval_ds, return_dict=True, verbose=0)
    state.best_value, state.best_epoch = float(entry[stage.monitor.removeprefix("val_")]), 0
    state.entry_val_accuracy = float(entry["accuracy"])
    # Kept as this stage's best so far, for a run resumed within it (written with this
    # stage's optimizer compiled in, as the model that will restore it has).
    run.checkpoints.save(state, run.model, compiled.optimizer, best=True)
    return run.model.get_weights()


def _train_epoch(run: _Run, stage: StageConfig, state: ResumeState, compiled: _Compiled) -> bool:
    """One epoch of fit(), recorded in ``state``; True when the monitored metric improved."""
    lr = compiled.current_lr()
    started = time.monotonic()
    # One fit() per epoch, so Keras's own line would say "Epoch 12/12"
    # every time: the stage's epoch and total are logged instead.
    fit = run.model.fit(run.train_ds, validation_data=run.eval_ds, initial_epoch=state.global_epoch,
                        epochs=state.global_epoch + 1, steps_per_epoch=run.steps_per_epoch,
                        callbacks=run.callbacks, verbose=0)
    state.epoch += 1
    state.global_epoch += 1
    for key, values in fit.history.items():
        state.history.setdefault(key, []).append(float(values[-1]))
    state.history.setdefault("learning_rate", []).append(lr)
    log.info("%s epoch %d/%d: %s, learning rate %.3g (%.1f s)", stage.name, state.epoch, stage.epochs,
             ", ".join(f"{k} {float(v[-1]):.4f}" for k, v in fit.history.items()), lr, time.monotonic() - started)
    value = float(fit.history.get(stage.monitor, [float("nan")])[-1])
    if _better(stage.monitor, value, state.best_value):
        state.best_value, state.best_epoch, state.wait = value, state.epoch, 0
        return True
    state.wait += 1
    return False


def _after_epoch(run: _Run, stage: StageConfig, state: ResumeState, compiled: _Compiled) -> None:
    """After ``patience`` epochs without improvement: unfreeze the next block (auto), or stop the stage."""
    if not (stage.patience and state.wait >= stage.patience and state.epoch < stage.epochs):
        return
    if stage.trainable == "auto" and state.blocks < min(stage.auto_max_blocks, len(block_starts(run.backbone))):
        state.blocks += 1
        state.wait = 0
        state.optimizer_epoch = state.epoch
        compiled.configure(state.blocks, state.epoch)
        log.info("stage %s: %s stalled for %d epochs; unfreezing block %d: %s, %d trainable parameters",
                 stage.name, stage.monitor, stage.patience, state.blocks, compiled.describe(),
                 count_trainable(run.model))
    else:
        state.stopped = True
        log.info("stage %s: %s has not improved for %d epochs; stopping early",
                 stage.name, stage.monitor, stage.patience)


def _finish(run: _Run, stage: StageConfig, state: ResumeState, compiled: _Compiled, best_weights) -> StageResult:
    """Ends the stage with its best weights (or those it started with) and says what it did."""
    kept_entry = stage.restore_best and state.best_epoch == 0 and state.entry_val_accuracy is not None
    if stage.restore_best and (state.best_epoch or kept_entry) and state.best_epoch != state.epoch:
        if best_weights is not None:
            run.model.set_weights(best_weights)
        else:
            Checkpoints.restore(state.best, run.model)
        if kept_entry:
            log.info("stage %s: no epoch beat the weights it started with on %s (%.4f); it ends with them",
                     stage.name, stage.monitor, state.best_value)
        else:
            log.info("stage %s: ends with the weights of its best epoch, %d", stage.name, state.best_epoch)
    val = state.history.get("val_accuracy", [float("nan")])
    result = StageResult(
        name=stage.name, trainable=compiled.describe(), trainable_params=count_trainable(run.model),
        learning_rate=stage.learning_rate, optimizer=stage.optimizer, epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        best_val_accuracy=float(val[state.best_epoch - 1] if state.best_epoch else
                                state.entry_val_accuracy if kept_entry else max(val)),
        stopped_early=state.stopped, blocks_unfrozen=state.blocks, history=state.history)
    best = state.best_value if state.best_value is not None else float("nan")
    log.info("stage %s done: %d epochs, best %s %.4f at epoch %d (val_accuracy %.4f)", stage.name,
             result.epochs_run, stage.monitor, best, state.best_epoch, result.best_val_accuracy)
    return result


def write_results(results: list[StageResult], path: str) -> None:
    write_json([dataclasses.asdict(r) for r in results], path)

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time

import tensorflow as tf
import tf_keras

from components.artifacts import read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclasses.dataclass
class Stage:
    """One stage; the fields mirror pipeline.config.StageConfig."""

    name: str
    epochs: int
    trainable: str = "none"       # none | all | top:N | top:P% | from:LAYER | auto
    learning_rate: float = 1e-3
    warmup_epochs: float = 0.0
    decay: str = "cosine"         # constant | cosine
    optimizer: str = "adam"       # adam | adamw | sgd | rmsprop
    weight_decay: float = 0.0
    layer_lr_decay: float = 1.0
    monitor: str = "val_loss"     # val_loss | val_accuracy (see pipeline.config.StageConfig)
    patience: int = 0
    restore_best: bool = True
    auto_max_blocks: int = 2


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


def stages_from_config(stages: list[dict]) -> list[Stage]:
    names = {f.name for f in dataclasses.fields(Stage)}
    return [Stage(**{k: v for k, v in s.items() if k in names}) for s in stages]


# --- what trains ------------------------------------------------------------

_BLOCK_NAME = re.compile(r"^(.*?block_?\d+[a-z]?)(?:_|$)")   # block5_conv1, conv5_block3_1, block_16_project, block7a_se
_NUMBERED_NAME = re.compile(r"^(.*?_\d+)(?:_|$)")             # expanded_conv_10_depthwise, Conv_1_bn


def block_key(layer_name: str) -> str:
    """The block a layer belongs to, from its name as keras.applications models name layers."""
    for pattern in (_BLOCK_NAME, _NUMBERED_NAME):
        match = pattern.match(layer_name)
        if match:
            return match.group(1)
    return layer_name.split("_")[0]


def block_starts(backbone: tf_keras.Model) -> list[int]:
    """Index of the first layer of each block that has weights, bottom to top.

    A block is a run of consecutive layers whose names share a block prefix
    (``block5_conv1``, ``block5_bn1``, ``block5_pool``) or name the block's
    first layer (``Conv1``, ``bn_Conv1``): unfreezing a block unfreezes it and
    every layer above it.
    """
    starts, current, weighted = [], None, False
    for i, layer in enumerate(backbone.layers):
        key = block_key(layer.name)
        if key != current and not (current and current in layer.name):  # bn_Conv1 belongs to Conv1
            current = key
            weighted = False
            start = i
        if layer.weights and not weighted:
            weighted = True
            starts.append(start)
    return starts


def first_trainable_layer(backbone: tf_keras.Model, spec: str, blocks: int = 0) -> int:
    """Index of the lowest backbone layer that trains under ``spec``; len(layers) when none does."""
    n = len(backbone.layers)
    kind, _, arg = spec.partition(":")
    if spec == "none":
        return n
    if spec == "all":
        return 0
    if spec == "auto":
        starts = block_starts(backbone)
        return starts[-blocks] if 0 < blocks <= len(starts) else (0 if blocks else n)
    if kind == "top" and arg.endswith("%"):
        return n - math.ceil(n * float(arg[:-1]) / 100)
    if kind == "top":
        return max(0, n - int(arg))
    if kind == "from":
        names = [layer.name for layer in backbone.layers]
        if arg not in names:
            raise ValueError(f"trainable from:{arg}: the backbone has no layer named '{arg}'; "
                             f"its layers are: {', '.join(names)}")
        return names.index(arg)
    raise ValueError(f"unknown trainable spec '{spec}'")


def set_trainable(backbone: tf_keras.Model, first: int) -> None:
    """Freezes the backbone's layers below index ``first``; the ones from it up train."""
    backbone.trainable = first < len(backbone.layers)
    if backbone.trainable:
        for i, layer in enumerate(backbone.layers):
            layer.trainable = i >= first


def describe_trainable(backbone: tf_keras.Model, first: int) -> str:
    layers = backbone.layers
    if first >= len(layers):
        return "head only"
    if first == 0:
        return f"all {len(layers)} backbone layers"
    return f"backbone from {layers[first].name} up ({len(layers) - first} of {len(layers)} layers)"


def count_trainable(model: tf_keras.Model) -> int:
    return int(sum(tf.size(w).numpy() for w in model.trainable_weights))


def layer_lr_scales(backbone: tf_keras.Model, first: int, decay: float) -> list[tuple]:
    """(variable, learning-rate factor) pairs: decay**k for the k-th block from the top.

    The head is not listed (factor 1), so it learns at the stage's rate.
    """
    if decay == 1.0:
        return []
    bounds = block_starts(backbone) + [len(backbone.layers)]
    blocks = list(zip(bounds[:-1], bounds[1:]))
    scales = []
    for depth, (lo, hi) in enumerate(reversed(blocks), start=1):
        for layer in backbone.layers[max(lo, first):hi]:
            scales.extend((v, decay ** depth) for v in layer.trainable_weights)
    return scales


# --- how it learns -----------------------------------------------------------

@tf_keras.saving.register_keras_serializable(package="thaw")
class WarmupCosine(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to the curve, which is ``peak`` held or decayed on a cosine to 0.

    A stage's steps are the optimizer's own plus ``offset``: an optimizer made
    mid-stage (when ``auto`` unfreezes a block) continues the stage's curve,
    and warms up to it again over its own first ``warmup_steps``, so the
    newly unfrozen block does not start with full-size steps. The cosine
    starts at ``decay_start`` (the stage's first warmup).
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "cosine",
                 offset: int = 0, decay_start: int | None = None):
        self.peak, self.total_steps, self.warmup_steps = peak, max(1, total_steps), warmup_steps
        self.decay, self.offset = decay, offset
        self.decay_start = warmup_steps if decay_start is None else decay_start

    def __call__(self, step):
        own = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak, tf.float32)
        if self.decay == "constant":
            curve = peak
        else:
            span = float(max(1, self.total_steps - self.decay_start))
            progress = tf.clip_by_value((own + float(self.offset - self.decay_start)) / span, 0.0, 1.0)
            curve = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_steps:
            curve = curve * tf.minimum(1.0, (own + 1.0) / float(self.warmup_steps))
        return curve

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay, "offset": self.offset, "decay_start": self.decay_start}


_OPTIMIZERS = {
    "adam": tf_keras.optimizers.Adam,
    "adamw": tf_keras.optimizers.AdamW,
    "sgd": tf_keras.optimizers.SGD,
    "rmsprop": tf_keras.optimizers.RMSprop,
}
_LAYERWISE: dict[type, type] = {}


def _layerwise(base: type) -> type:
    """``base`` with a learning-rate factor per variable (the per-layer decay).

    Keras optimizers read ``self.learning_rate`` inside ``update_step``, which
    runs once per variable as the train step is traced; the factor for that
    variable is set around the call, so Adam's step size itself scales (scaling
    the gradient would not: Adam is invariant to it).
    """
    if base not in _LAYERWISE:
        class Layerwise(base):
            def __init__(self, lr_scales: list[tuple], **kwargs):
                super().__init__(jit_compile=False, **kwargs)  # the factor is Python state at trace time
                self._lr_scales = {self._var_key(v): scale for v, scale in lr_scales}
                self._lr_scale = None

            @property
            def learning_rate(self):
                lr = base.learning_rate.fget(self)
                return lr if self._lr_scale is None else lr * self._lr_scale

            @learning_rate.setter
            def learning_rate(self, value):
                base.learning_rate.fset(self, value)

            def update_step(self, gradient, variable):
                self._lr_scale = self._lr_scales.get(self._var_key(variable))
                try:
                    return super().update_step(gradient, variable)
                finally:
                    self._lr_scale = None

        Layerwise.__name__ = f"Layerwise{base.__name__}"
        _LAYERWISE[base] = Layerwise
    return _LAYERWISE[base]


def make_optimizer(stage: Stage, schedule: WarmupCosine, lr_scales: list[tuple]):
    kwargs = {"learning_rate": schedule}
    if stage.weight_decay or stage.optimizer == "adamw":
        kwargs["weight_decay"] = stage.weight_decay
    if stage.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    cls = _OPTIMIZERS[stage.optimizer]
    if lr_scales:
        return _layerwise(cls)(lr_scales=lr_scales, **kwargs)
    return cls(**kwargs)


# --- checkpoints ---------------------------------------------------------------

def _checkpoint(model, optimizer=None) -> tf.train.Checkpoint:
    """The model's weights, and the optimizer's state when there is one to keep."""
    return tf.train.Checkpoint(model=model) if optimizer is None else tf.train.Checkpoint(model=model,
                                                                                          optimizer=optimizer)


class CheckpointError(OSError):
    """A checkpoint could not be written; the message names it and what was kept."""


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, tf.errors.OpError) else str(exc)


def _remove_quietly(path: str) -> None:
    """Removes a file or folder that a failed write left; what cannot be removed stays."""
    try:
        (tf.io.gfile.rmtree if tf.io.gfile.isdir(path) else tf.io.gfile.remove)(path)
    except (OSError, tf.errors.OpError):
        pass


class Checkpoints:
    """The schedule's position, and the weights and optimizer state to resume from.

    Each epoch writes a new checkpoint, then points ``state.json`` at it (an
    atomic rename): a kill at any moment leaves the last complete epoch. The
    best epoch of the running stage is kept apart, to end the stage with it.
    """

    def __init__(self, directory: str | None, fingerprint: str):
        self.directory = directory
        self.fingerprint = fingerprint

    def load(self) -> dict | None:
        if not self.directory or not tf.io.gfile.exists(os.path.join(self.directory, STATE_FILE)):
            return None
        state = read_json(self.directory, STATE_FILE)
        if state.get("fingerprint") != self.fingerprint:
            log.warning("checkpoints in %s are from another configuration or data; starting over", self.directory)
            return None
        return state

    def save(self, state: dict, model, optimizer, best: bool = False) -> None:
        """Writes this epoch's checkpoint (and, if ``best``, the stage's best), then commits ``state``.

        ``state.json`` changes once, after every file it names is written, so a
        kill at any point leaves either the previous epoch or this one whole.
        """
        if not self.directory:
            return
        old = {state.get("latest"), state.get("best")}
        tag = f"s{state['stage']}-e{state['global_epoch']}"
        new = {"latest": os.path.join(self.directory, "latest-" + tag)}
        if best:
            new["best"] = os.path.join(self.directory, "best-" + tag)
        tmp = os.path.join(self.directory, STATE_FILE + ".tmp")
        try:
            if best:
                _checkpoint(model).write(new["best"])
            _checkpoint(model, optimizer).write(new["latest"])
            write_json({**state, **new, "fingerprint": self.fingerprint}, tmp)
            tf.io.gfile.rename(tmp, os.path.join(self.directory, STATE_FILE), overwrite=True)
        except (OSError, tf.errors.OpError) as exc:  # a full or failing disk: keep the last whole epoch
            for path in [tmp] + [p for prefix in new.values()
                                 for p in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp*")]:
                _remove_quietly(path)
            raise CheckpointError(
                f"could not write the checkpoint {new['latest']} ({_reason(exc)}). The last complete one, "
                f"{state.get('latest') or 'none yet'}, is kept and {STATE_FILE} still names it: free space "
                f"under {self.directory} and rerun, and training resumes from it") from exc
        state.update(new, fingerprint=self.fingerprint)
        for prefix in old - {state.get("latest"), state.get("best"), None}:
            for path in tf.io.gfile.glob(prefix + ".*"):
                tf.io.gfile.remove(path)

    @staticmethod
    def restore(prefix: str, model, optimizer=None) -> None:
        _checkpoint(model, optimizer).read(prefix).expect_partial()


def fingerprint(stages: list[Stage], model: tf_keras.Model, extra: str = "") -> str:
    text = json.dumps([dataclasses.asdict(s) for s in stages], sort_keys=True)
    shapes = ",".join(f"{w.name}{tuple(w.shape)}" for w in model.weights)
    return hashlib.sha256((text + shapes + extra).encode()).hexdigest()[:16]


# --- the schedule ----------------------------------------------------------------

def _better(monitor: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if monitor == "val_loss" else value > best


class _Stage:
    """One stage's model configuration: what trains, its optimizer, compiled."""

    def __init__(self, model, backbone, stage: Stage, steps_per_epoch: int, strategy):
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
            scales = layer_lr_scales(self.backbone, self.first, stage.layer_lr_decay)
            self.optimizer = make_optimizer(stage, schedule, scales)
            self.model.compile(optimizer=self.optimizer, loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"])
            self.optimizer = self.model.optimizer  # wrapped for loss scaling under mixed precision
            # Its slots exist before a checkpoint is restored into them.
            getattr(self.optimizer, "inner_optimizer", self.optimizer).build(self.model.trainable_variables)

    def current_lr(self) -> float:
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(optimizer._learning_rate(optimizer.iterations))


def run_schedule(model: tf_keras.Model, backbone: tf_keras.Model, stages: list[Stage],
                 train_ds: tf.data.Dataset, eval_ds: tf.data.Dataset, *, steps_per_epoch: int,
                 log_dir: str | None = None, checkpoint_dir: str | None = None,
                 strategy: tf.distribute.Strategy | None = None, callbacks: list | None = None,
                 fingerprint_extra: str = "") -> list[StageResult]:
    """Runs each stage in turn; epochs are numbered across stages for TensorBoard.

    With ``checkpoint_dir``, resumes where a killed run with the same stages,
    model and ``fingerprint_extra`` (e.g. the data) left off.
    """
    strategy = strategy or tf.distribute.get_strategy()
    checkpoints = Checkpoints(checkpoint_dir, fingerprint(stages, model, fingerprint_extra))
    state = checkpoints.load()
    resumed = state is not None
    if resumed:
        log.info("resuming from %s at stage %d of %d, after %d of its epochs", checkpoint_dir,
                 state["stage"] + 1, len(stages), state["epoch"])
    else:
        state = {"stage": 0, "epoch": 0, "global_epoch": 0, "results": []}
    results = [StageResult(**r) for r in state["results"]]
    global_epoch = state["global_epoch"]
    board = [tf_keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    # Each fit() call below is one epoch. Given an endless (repeated) dataset,
    # fit() would start it over every epoch, so with fewer steps than a pass
    # training would only ever see its beginning: one iterator goes on instead.
    if train_ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        train_ds = iter(train_ds)

    for index, stage in enumerate(stages):
        if index < state["stage"]:
            continue
        mid_stage = state["epoch"] > 0  # resuming inside this stage
        current = _Stage(model, backbone, stage, steps_per_epoch, strategy)
        blocks = state["blocks"] if mid_stage else (1 if stage.trainable == "auto" else 0)
        epoch = state["epoch"] if mid_stage else 0
        best = state.get("best_value") if mid_stage else None
        best_epoch = state.get("best_epoch", 0) if mid_stage else 0
        wait = state.get("wait", 0) if mid_stage else 0
        history: dict[str, list[float]] = state.get("history", {}) if mid_stage else {}
        # A restored optimizer has counted the steps since it was made, at
        # the start of the stage or when `auto` last unfroze a block.
        optimizer_epoch = state.get("optimizer_epoch", 0) if mid_stage else 0
        current.configure(blocks, optimizer_epoch)
        if resumed and state.get("latest"):
            # Mid-stage: the weights and optimizer of the last epoch; at a stage
            # boundary: the weights the previous stage ended with.
            Checkpoints.restore(state["latest"], model, current.optimizer if mid_stage else None)
            resumed = False
        state.update(stage=index, epoch=epoch, blocks=blocks, best_value=best, best_epoch=best_epoch,
                     wait=wait, history=history, optimizer_epoch=optimizer_epoch)
        trainable = count_trainable(model)
        log.info("stage %s: %s, %d trainable parameters, %s at learning rate %g, %d epochs",
                 stage.name, describe_trainable(backbone, current.first), trainable, stage.optimizer,
                 stage.learning_rate, stage.epochs)
        stopped = bool(state.get("stopped")) if mid_stage else False
        best_weights = None  # the best epoch's, when it was in this process
        if index > 0 and stage.restore_best and not mid_stage:
            # The weights this stage starts with are its epoch 0: it ends with
            # them unless one of its epochs beats them on validation, so
            # unfreezing never leaves the model worse than the stage before it.
            entry = model.evaluate(eval_ds, return_dict=True, verbose=0)
            best, best_epoch = float(entry[stage.monitor.removeprefix("val_")]), 0
            best_weights = model.get_weights()
            state.update(best_value=best, best_epoch=0, entry_val_accuracy=float(entry["accuracy"]))
            # Kept as this stage's best so far, for a run resumed within it (written with this
            # stage's optimizer compiled in, as the model that will restore it has).
            checkpoints.save(state, model, current.optimizer, best=True)
        while epoch < stage.epochs and not stopped:
            lr = current.current_lr()
            started = time.monotonic()
            # One fit() per epoch, so Keras's own line would say "Epoch 12/12"
            # every time: the stage's epoch and total are logged instead.
            fit = model.fit(train_ds, validation_data=eval_ds, initial_epoch=global_epoch,
                            epochs=global_epoch + 1, steps_per_epoch=steps_per_epoch,
                            callbacks=board + list(callbacks or []), verbose=0)
            epoch += 1
            global_epoch += 1
            for key, values in fit.history.items():
                history.setdefault(key, []).append(float(values[-1]))
            history.setdefault("learning_rate", []).append(lr)
            log.info("%s epoch %d/%d: %s, learning rate %.3g (%.1f s)", stage.name, epoch, stage.epochs,
                     ", ".join(f"{k} {float(v[-1]):.4f}" for k, v in fit.history.items()), lr,
                     time.monotonic() - started)
            value = float(fit.history.get(stage.monitor, [float("nan")])[-1])
            state.update(stage=index, epoch=epoch, global_epoch=global_epoch, blocks=blocks, history=history)
            if _better(stage.monitor, value, best):
                best, best_epoch, wait = value, epoch, 0
                state.update(best_value=best, best_epoch=best_epoch, wait=wait)
                if stage.restore_best:
                    best_weights = model.get_weights()
            else:
                wait += 1
                state["wait"] = wait
            if stage.patience and wait >= stage.patience and epoch < stage.epochs:
                more = len(block_starts(backbone))
                if stage.trainable == "auto" and blocks < min(stage.auto_max_blocks, more):
                    blocks += 1
                    wait = 0
                    state.update(blocks=blocks, wait=wait, optimizer_epoch=epoch)
                    current.configure(blocks, epoch)
                    log.info("stage %s: %s stalled for %d epochs; unfreezing block %d: %s, %d trainable "
                             "parameters", stage.name, stage.monitor, stage.patience, blocks,
                             describe_trainable(backbone, current.first), count_trainable(model))
                else:
                    stopped = True
                    log.info("stage %s: %s has not improved for %d epochs; stopping early",
                             stage.name, stage.monitor, stage.patience)
            state["stopped"] = stopped
            checkpoints.save(state, model, current.optimizer,
                             best=stage.restore_best and best_epoch == epoch)
        kept_entry = stage.restore_best and best_epoch == 0 and state.get("entry_val_accuracy") is not None
        if stage.restore_best and (best_epoch or kept_entry) and best_epoch != epoch:
            if best_weights is not None:
                model.set_weights(best_weights)
            else:
                Checkpoints.restore(state["best"], model)
            if kept_entry:
                log.info("stage %s: no epoch beat the weights it started with on %s (%.4f); it ends with "
                         "them", stage.name, stage.monitor, best)
            else:
                log.info("stage %s: ends with the weights of its best epoch, %d", stage.name, best_epoch)
        val = history.get("val_accuracy", [float("nan")])
        result = StageResult(
            name=stage.name, trainable=describe_trainable(backbone, current.first),
            trainable_params=count_trainable(model), learning_rate=stage.learning_rate,
            optimizer=stage.optimizer, epochs_run=epoch, best_epoch=best_epoch,
            best_val_accuracy=float(val[best_epoch - 1] if best_epoch else
                                    state["entry_val_accuracy"] if kept_entry else max(val)),
            stopped_early=stopped, blocks_unfrozen=blocks, history=history)
        log.info("stage %s done: %d epochs, best %s %.4f at epoch %d (val_accuracy %.4f)", stage.name,
                 result.epochs_run, stage.monitor, best if best is not None else float("nan"), best_epoch,
                 result.best_val_accuracy)
        results.append(result)
        # The next stage starts from this one's final (best) weights.
        state.update(stage=index + 1, epoch=0, blocks=0, history={}, best_value=None, best_epoch=0, wait=0,
                     stopped=False, entry_val_accuracy=None, results=[dataclasses.asdict(r) for r in results])
        checkpoints.save(state, model, None)
    if resumed and state.get("latest"):  # every stage had finished: the weights they ended with
        Checkpoints.restore(state["latest"], model)
    return results


def write_results(results: list[StageResult], path: str) -> None:
    write_json([dataclasses.asdict(r) for r in results], path)

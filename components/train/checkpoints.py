"""Checkpoints and the schedule's resume state, so a killed Trainer resumes at its next epoch.

A Trainer on a preempted GPU node is retried by the orchestrator; it finds
the last complete epoch here and goes on from it instead of starting over.
Each epoch writes a new checkpoint, then points ``state.json`` at it with one
atomic rename: a kill at any moment leaves the last complete epoch whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import tensorflow as tf
import tf_keras

from components.artifacts import read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclasses.dataclass
class ResumeState:
    """Where the schedule is: what ``state.json`` records after every epoch.

    The fields of the running stage are reset when it ends (``end_stage``),
    so a run resumed at a stage boundary starts that stage afresh.
    """

    stage: int = 0                    # index of the running stage
    epoch: int = 0                    # its epochs done; 0: at its start
    global_epoch: int = 0             # epochs done across stages (TensorBoard's axis)
    blocks: int = 0                   # blocks `auto` has unfrozen in this stage
    optimizer_epoch: int = 0          # the stage's epoch when its optimizer was made
    best_value: float | None = None   # the monitored metric's best value in this stage
    best_epoch: int = 0               # from 1; 0: none beat the weights the stage started with
    wait: int = 0                     # epochs since the monitored metric last improved
    stopped: bool = False             # stopped early
    entry_val_accuracy: float | None = None  # of the weights the stage started with, if measured
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    results: list[dict] = dataclasses.field(default_factory=list)  # the finished stages' StageResults
    latest: str | None = None         # checkpoint prefix of the last complete epoch
    best: str | None = None           # checkpoint prefix of this stage's best epoch

    @property
    def mid_stage(self) -> bool:
        return self.epoch > 0

    def begin_stage(self, index: int, blocks: int) -> None:
        self.stage, self.blocks = index, blocks

    def end_stage(self, results: list[dict]) -> None:
        """The next stage starts from this one's final weights, with nothing of its own yet."""
        fresh = ResumeState()
        for name in ("epoch", "blocks", "optimizer_epoch", "best_value", "best_epoch", "wait", "stopped",
                     "entry_val_accuracy", "history"):
            setattr(self, name, getattr(fresh, name))
        self.stage += 1
        self.results = results


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
    """The weights and optimizer state to resume from, and the ResumeState that names them.

    The best epoch of the running stage is kept apart, to end the stage with it.
    """

    def __init__(self, directory: str | None, fingerprint: str):
        self.directory = directory
        self.fingerprint = fingerprint

    def load(self) -> ResumeState | None:
        """The state a killed run left here, if it was the same run (same fingerprint)."""
        if not self.directory or not tf.io.gfile.exists(os.path.join(self.directory, STATE_FILE)):
            return None
        saved = read_json(self.directory, STATE_FILE)
        if saved.pop("fingerprint", None) != self.fingerprint:
            log.warning("checkpoints in %s are from another configuration or data; starting over", self.directory)
            return None
        known = {f.name for f in dataclasses.fields(ResumeState)}
        if set(saved) - known:
            log.warning("checkpoints in %s were written by another version of Thaw (%s); starting over",
                        self.directory, ", ".join(sorted(set(saved) - known)))
            return None
        return ResumeState(**saved)

    def save(self, state: ResumeState, model, optimizer, best: bool = False) -> None:
        """Writes this epoch's checkpoint (and, if ``best``, the stage's best), then commits ``state``.

        ``state.json`` changes once, after every file it names is written, so a
        kill at any point leaves either the previous epoch or this one whole.
        """
        if not self.directory:
            return
        old = {state.latest, state.best}
        tag = f"s{state.stage}-e{state.global_epoch}"
        new = {"latest": os.path.join(self.directory, "latest-" + tag)}
        if best:
            new["best"] = os.path.join(self.directory, "best-" + tag)
        tmp = os.path.join(self.directory, STATE_FILE + ".tmp")
        try:
            if best:
                _checkpoint(model).write(new["best"])
            _checkpoint(model, optimizer).write(new["latest"])
            write_json({**dataclasses.asdict(state), **new, "fingerprint": self.fingerprint}, tmp)
            tf.io.gfile.rename(tmp, os.path.join(self.directory, STATE_FILE), overwrite=True)
        except (OSError, tf.errors.OpError) as exc:  # a full or failing disk: keep the last whole epoch
            for path in [tmp] + [p for prefix in new.values()
                                 for p in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp*")]:
                _remove_quietly(path)
            raise CheckpointError(
                f"could not write the checkpoint {new['latest']} ({_reason(exc)}). The last complete one, "
                f"{state.latest or 'none yet'}, is kept and {STATE_FILE} still names it: free space "
                f"under {self.directory} and rerun, and training resumes from it") from exc
        for name, prefix in new.items():
            setattr(state, name, prefix)
        for prefix in old - {state.latest, state.best, None}:
            for path in tf.io.gfile.glob(prefix + ".*"):
                tf.io.gfile.remove(path)

    @staticmethod
    def restore(prefix: str, model, optimizer=None) -> None:
        _checkpoint(model, optimizer).read(prefix).expect_partial()


def fingerprint(stages: list, model: tf_keras.Model, extra: str = "") -> str:
    """What a checkpoint may be resumed by: the same stages, model shapes and ``extra`` (e.g. the data)."""
    text = json.dumps([s.model_dump(mode="json") for s in stages], sort_keys=True)
    shapes = ",".join(f"{w.name}{tuple(w.shape)}" for w in model.weights)
    return hashlib.sha256((text + shapes + extra).encode()).hexdigest()[:16]

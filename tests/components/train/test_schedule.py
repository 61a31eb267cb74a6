"""The unfreezing schedule: stages in order, BatchNorm in inference mode, early stopping, auto, resume."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components.train.options import StageConfig
from components.train.schedule import run_schedule
from components.train.trainable import count_trainable
from tests.conftest import REPO
from tests.support.schedule_job import classifier, toy_data


def test_the_head_trains_first_then_the_top_with_batchnorm_in_inference_mode(tmp_path):
    tf_keras.utils.set_random_seed(0)
    model, backbone = classifier()
    # block3_bn is one the top stage unfreezes (its gamma and beta train): a frozen BN layer
    # runs in inference mode anyway, so only an unfrozen one shows the backbone is called so.
    bn = backbone.get_layer("block3_bn")
    moving = (bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy())
    gamma = bn.gamma.numpy().copy()
    kernels = {n: backbone.get_layer(n).kernel.numpy().copy() for n in ("block1_conv", "block3_conv")}
    stages = [StageConfig(name="head", epochs=2, trainable="none", learning_rate=1e-2, warmup_epochs=1),
              StageConfig(name="top", epochs=1, trainable="top:3", learning_rate=1e-3, decay="constant")]
    results = run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=4,
                           log_dir=str(tmp_path))

    assert [r.name for r in results] == ["head", "top"]
    head_params = 4 * 2 + 2  # the new dense layer alone
    assert results[0].trainable_params == head_params
    assert results[1].trainable_params == head_params + 3 * 3 * 4 * 4 + 4 + 2 * 4  # block3's conv and BN
    assert [r.learning_rate for r in results] == [1e-2, 1e-3]
    # The learning rate per epoch: warmup over the first epoch, then cosine; constant in the top stage.
    assert results[0].history["learning_rate"] == pytest.approx([2.5e-3, 1e-2], rel=1e-5)
    assert results[1].history["learning_rate"] == pytest.approx([1e-3])
    assert [r.epochs_run for r in results] == [2, 1]
    # The top stage moved block3 only; block1 stayed frozen through both stages.
    np.testing.assert_array_equal(backbone.get_layer("block1_conv").kernel.numpy(), kernels["block1_conv"])
    assert not np.array_equal(backbone.get_layer("block3_conv").kernel.numpy(), kernels["block3_conv"])
    # The unfrozen BatchNorm trained (gamma moved) in inference mode: its moving statistics never changed.
    assert bn.trainable and not np.array_equal(bn.gamma.numpy(), gamma)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), moving[1])
    assert count_trainable(model) == results[1].trainable_params
    assert tf.io.gfile.glob(str(tmp_path / "train" / "events.out.tfevents.*"))  # TensorBoard


class KeepWeights(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.by_epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch.append(self.model.get_weights())



def test_early_stopping_ends_the_stage_with_its_best_epochs_weights():
    tf_keras.utils.set_random_seed(0)
    model, backbone = classifier()
    kept = KeepWeights()
    # Validation labels are the training labels swapped: once the model
    # learns, val_loss only gets worse.
    stage = StageConfig(name="all", epochs=8, trainable="all", learning_rate=1e-2, decay="constant", monitor="val_loss",
                        patience=2)
    (result,) = run_schedule(model, backbone, [stage], toy_data(), toy_data(flip_labels=True), steps_per_epoch=4,
                             callbacks=[kept])
    losses = result.history["val_loss"]
    best = int(np.argmin(losses)) + 1
    assert result.stopped_early and result.best_epoch == best and result.epochs_run == best + 2 < 8
    assert result.best_val_accuracy == result.history["val_accuracy"][best - 1]
    for got, want in zip(model.get_weights(), kept.by_epoch[best - 1]):
        np.testing.assert_array_equal(got, want)


class StopAtEpoch(tf_keras.callbacks.Callback):
    """Raises as epoch ``epoch`` (counted across stages, from 0) begins: a run that dies there."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"stopped at epoch {epoch}")


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_later_stage_that_never_beats_its_starting_weights_ends_with_them(tmp_path, interrupted):
    tf_keras.utils.set_random_seed(0)
    model, backbone = classifier()
    kept = KeepWeights()
    # The head learns; then a rate of 50 with plain SGD wrecks every weight it touches (a rate the
    # configuration refuses, so the stage is built unchecked).
    stages = [StageConfig(name="head", epochs=3, trainable="none", learning_rate=1e-2, decay="constant"),
              StageConfig.model_construct(name="wreck", epochs=3, trainable="all", learning_rate=50.0,
                                          decay="constant", optimizer="sgd")]
    checkpoints = str(tmp_path / "checkpoints")
    if interrupted:  # dies as the wreck stage's second epoch begins; a fresh model resumes from the checkpoints
        with pytest.raises(KeyboardInterrupt):
            run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=4,
                         checkpoint_dir=checkpoints, callbacks=[kept, StopAtEpoch(4)])
        tf_keras.backend.clear_session()
        tf_keras.utils.set_random_seed(1)
        model, backbone = classifier()
    head, wreck = run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=4,
                               checkpoint_dir=checkpoints, callbacks=[] if interrupted else [kept])
    assert head.best_epoch == 3
    assert wreck.epochs_run == 3 and wreck.best_epoch == 0
    # Every wreck epoch was worse on validation (or diverged: NaN).
    assert not any(loss <= head.history["val_loss"][-1] for loss in wreck.history["val_loss"])
    assert wreck.best_val_accuracy == head.history["val_accuracy"][-1]
    # It ends with the weights the head stage ended with, not the wreck's last or best epoch.
    for got, want in zip(model.get_weights(), kept.by_epoch[2]):
        np.testing.assert_array_equal(got, want)


def test_auto_unfreezes_the_next_block_when_validation_stalls():
    tf_keras.utils.set_random_seed(0)
    model, backbone = classifier()
    stage = StageConfig(name="auto", epochs=6, trainable="auto", learning_rate=1e-2, decay="constant",
                        monitor="val_loss", patience=1, auto_max_blocks=2, restore_best=False)
    (result,) = run_schedule(model, backbone, [stage], toy_data(), toy_data(flip_labels=True), steps_per_epoch=4)
    # A stalled epoch unfreezes block 2; another, at the limit of 2 blocks, stops the stage.
    assert result.blocks_unfrozen == 2 and result.stopped_early and result.epochs_run < 6
    assert result.trainable == "backbone from block2_conv up (6 of 11 layers)"
    assert backbone.get_layer("block2_conv").trainable and not backbone.get_layer("block1_conv").trainable
    # The epoch after the unfreeze starts warming up again (over one epoch: 4 steps).
    assert sorted(set(result.history["learning_rate"])) == pytest.approx([2.5e-3, 1e-2])
    assert result.history["learning_rate"].count(pytest.approx(2.5e-3)) == 1


def run_job(checkpoint_dir, *args):
    proc = subprocess.run([sys.executable, "-m", "tests.support.schedule_job", str(checkpoint_dir), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, (json.loads(lines[-1]) if lines else None)


def test_a_killed_run_resumes_at_the_next_epoch_of_the_same_stage(tmp_path):
    # Epochs 0-1 are the head stage, 2-4 the top stage; die as epoch 3 begins.
    killed, _ = run_job(tmp_path / "resumed", "--kill-at-epoch", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed_proc, resumed = run_job(tmp_path / "resumed")
    assert resumed_proc.returncode == 0, resumed_proc.stderr[-2000:]
    assert "resuming from" in resumed_proc.stderr and "at stage 2 of 2, after 1 of its epochs" in resumed_proc.stderr
    assert resumed["trained"] == [3, 4]
    assert [(r["name"], r["epochs_run"]) for r in resumed["results"]] == [("head", 2), ("top", 3)]
    # It ends where an uninterrupted run ends: same history, same weights.
    whole_proc, whole = run_job(tmp_path / "whole")
    assert whole["trained"] == [0, 1, 2, 3, 4]
    assert resumed["results"] == whole["results"]
    assert resumed["weights"] == whole["weights"]
    # Killed mid-save (epoch 4's files written, state.json not yet naming
    # them): it redoes epoch 4 (index 3) from epoch 3's checkpoint.
    mid_save, _ = run_job(tmp_path / "mid_save", "--kill-before-commit", "4")
    assert mid_save.returncode == -signal.SIGKILL, mid_save.stderr[-2000:]
    _, after = run_job(tmp_path / "mid_save")
    assert after["trained"] == [3, 4] and after["weights"] == whole["weights"]
    # Started again after the schedule finished (killed while exporting): no
    # epoch is trained again, and the model has the trained weights.
    again_proc, again = run_job(tmp_path / "whole")
    assert again_proc.returncode == 0 and again["trained"] == [] and again["weights"] == whole["weights"]


def test_the_schedule_runs_under_mirrored_strategy_in_mixed_precision(tmp_path):
    proc, out = run_job(tmp_path / "mirrored", "--replicas", "2", "--mixed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out["replicas"] == 2 and out["trained"] == [0, 1, 2, 3, 4]
    assert out["head_compute_dtype"] == "float16" and out["output_dtype"] == "float32"


def test_epochs_of_fewer_steps_than_the_data_go_on_through_it():
    produced = []

    def record(i):
        produced.append(int(i))
        return i

    ids = tf.data.Dataset.range(400).map(lambda i: tf.ensure_shape(tf.py_function(record, [i], tf.int64), []))
    data = ids.map(lambda i: (tf.fill([16, 16, 3], tf.cast(i % 200, tf.float32)), i % 2)).repeat().batch(4)
    model, backbone = classifier()
    run_schedule(model, backbone, [StageConfig(name="head", epochs=10, trainable="none", learning_rate=1e-3)], data,
                 toy_data(), steps_per_epoch=2)
    # 10 epochs of 2 batches of 4: the stream reaches about element 80, it does
    # not read elements 0-7 (and a prefetch) ten times over.
    assert max(produced) >= 70 and len(produced) == len(set(produced)), sorted(produced)[:20]


def test_each_epoch_is_logged_within_its_stage_and_keras_counts_nothing(caplog, capsys):
    caplog.set_level("INFO", logger="components.train.schedule")
    model, backbone = classifier()
    stages = [StageConfig(name="head", epochs=2, trainable="none", learning_rate=1e-2, decay="constant"),
              StageConfig(name="top", epochs=1, trainable="top:3", learning_rate=1e-3, decay="constant")]
    run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=2)
    epochs = [m.split(":")[0] for m in caplog.messages if " epoch " in m and m.split()[0] in ("head", "top")]
    assert epochs == ["head epoch 1/2", "head epoch 2/2", "top epoch 1/1"]
    line = next(m for m in caplog.messages if m.startswith("top epoch 1/1"))
    assert "val_accuracy" in line and "learning rate 0.001" in line
    assert "Epoch " not in capsys.readouterr().out  # Keras's own "Epoch 3/3" for every epoch is gone

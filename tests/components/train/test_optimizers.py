"""Optimizers and learning-rate curves: warmup, cosine decay, per-block decay."""

import numpy as np
import pytest
import tf_keras

from components.train.optimizers import WarmupCosine
from components.train.options import StageConfig
from components.train.schedule import run_schedule
from tests.support.schedule_job import classifier, toy_data


def test_warmup_then_cosine_decay_and_its_continuation():
    schedule = WarmupCosine(1e-3, total_steps=100, warmup_steps=10)
    lrs = [float(schedule(step)) for step in (0, 4, 9, 10, 55, 99)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert lrs[3] == pytest.approx(1e-3) and lrs[4] == pytest.approx(5e-4, rel=1e-3) and lrs[5] < 1e-6
    # An optimizer made at stage step 55 continues the curve, warming up to it over its own steps.
    rewarmed = WarmupCosine(1e-3, 100, warmup_steps=4, offset=55, decay_start=10)
    assert float(rewarmed(3)) == pytest.approx(float(schedule(58)), rel=1e-5)
    assert float(rewarmed(1)) == pytest.approx(float(schedule(56)) / 2, rel=1e-5)
    assert float(WarmupCosine(1e-3, 100, decay="constant")(99)) == pytest.approx(1e-3)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop", "sgd"])
def test_per_block_learning_rate_decay_moves_earlier_blocks_less(optimizer):
    moves = {}
    for decay in (1.0, 0.5):
        tf_keras.utils.set_random_seed(0)
        model, backbone = classifier()
        before = {n: backbone.get_layer(n).kernel.numpy().copy() for n in ("block1_conv", "block2_conv", "block3_conv")}
        head = model.get_layer("probabilities").kernel.numpy().copy()
        stage = StageConfig(name="all", epochs=1, trainable="all", learning_rate=1e-2, decay="constant",
                            optimizer=optimizer, layer_lr_decay=decay)
        run_schedule(model, backbone, [stage], toy_data().take(1), toy_data().take(1), steps_per_epoch=1)
        moves[decay] = {n: np.abs(backbone.get_layer(n).kernel.numpy() - w).mean() for n, w in before.items()}
        moves[decay]["head"] = np.abs(model.get_layer("probabilities").kernel.numpy() - head).mean()
    ratio = {n: moves[0.5][n] / moves[1.0][n] for n in moves[1.0]}
    # One step from the same start: the head at the full rate, block3 at half, block2 a quarter, block1 an eighth.
    assert ratio["head"] == pytest.approx(1.0, rel=1e-4)
    assert ratio["block3_conv"] == pytest.approx(0.5, rel=0.02)
    assert ratio["block2_conv"] == pytest.approx(0.25, rel=0.02)
    assert ratio["block1_conv"] == pytest.approx(0.125, rel=0.02)


def test_a_stem_factor_spreads_the_rates_from_the_stem_to_the_head_whatever_the_block_count():
    moves = {}
    for factor in (1.0, 0.125):
        tf_keras.utils.set_random_seed(0)
        model, backbone = classifier()
        before = {n: backbone.get_layer(n).kernel.numpy().copy() for n in ("block1_conv", "block2_conv", "block3_conv")}
        stage = StageConfig(name="all", epochs=1, trainable="all", learning_rate=1e-2, decay="constant",
                            stem_lr_factor=factor)
        run_schedule(model, backbone, [stage], toy_data().take(1), toy_data().take(1), steps_per_epoch=1)
        moves[factor] = {n: np.abs(backbone.get_layer(n).kernel.numpy() - w).mean() for n, w in before.items()}
    ratio = {n: moves[0.125][n] / moves[1.0][n] for n in moves[1.0]}
    # Three blocks: the lowest at 1/8 of the head's rate, and the rates between evenly spread on a log scale.
    assert ratio["block1_conv"] == pytest.approx(0.125, rel=0.02)
    assert ratio["block2_conv"] == pytest.approx(0.25, rel=0.02)
    assert ratio["block3_conv"] == pytest.approx(0.5, rel=0.02)


def test_one_spread_of_rates_at_a_time():
    with pytest.raises(ValueError, match="set stem_lr_factor or layer_lr_decay, not both"):
        StageConfig(name="all", trainable="all", layer_lr_decay=0.7, stem_lr_factor=0.01)

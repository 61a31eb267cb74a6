"""The classifier around the backbone: BatchNorm in inference mode, unless told to train it (a network from scratch)."""

import numpy as np
import pytest
import tf_keras

from components.train.backbone import feature_layer
from components.train.model import build_classifier
from components.train.options import HeadConfig, StageConfig
from components.train.schedule import run_schedule
from tests.support.schedule_job import blocks_cnn, toy_data


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_an_unfrozen_backbones_batchnorm_trains_only_when_asked(train_batchnorm):
    tf_keras.utils.set_random_seed(0)
    full = blocks_cnn(16)
    backbone = tf_keras.Model(full.inputs, feature_layer(full).output, name="backbone")
    model = build_classifier(backbone, 2, 16, HeadConfig(dropout=0.0), train_batchnorm=train_batchnorm)
    bn = backbone.get_layer("block1_bn")
    before = bn.moving_mean.numpy().copy()
    stage = StageConfig(name="all", epochs=1, trainable="all", learning_rate=1e-3, decay="constant")
    run_schedule(model, backbone, [stage], toy_data(), toy_data(seed=1), steps_per_epoch=2)
    # Unfrozen in both cases; its statistics move only when it runs in training mode.
    assert bn.trainable
    assert (not np.array_equal(bn.moving_mean.numpy(), before)) is train_batchnorm

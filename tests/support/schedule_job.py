"""A small schedule run, shared by the schedule tests and run in subprocesses by them.

    python -m tests.support.schedule_job CHECKPOINT_DIR [--kill-at-epoch N] [--replicas N] [--mixed]

prints one JSON line: the epochs this process trained (numbered across
stages), each stage's result and a digest of the final weights. With
--kill-at-epoch the process SIGKILLs itself as that epoch begins, as a
preempted node would die; with --kill-before-commit, in the middle of saving
a checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys

import numpy as np


def blocks_cnn(size=16, classes=3):
    """Three blocks named the way keras.applications names them: block1_conv, block1_bn, ..."""
    import tf_keras

    inputs = tf_keras.Input((size, size, 3), name="image")
    x = tf_keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for block in (1, 2, 3):
        x = tf_keras.layers.Conv2D(4, 3, padding="same", name=f"block{block}_conv")(x)
        x = tf_keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = tf_keras.layers.ReLU(name=f"block{block}_relu")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf_keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return tf_keras.Model(inputs, outputs)


def classifier(classes=2, size=16):
    """The demo-like backbone cut at its feature map, under a new head without dropout (runs repeat exactly)."""
    import tf_keras

    from components.train.backbone import feature_layer
    from components.train.model import build_classifier
    from components.train.options import HeadConfig

    full = blocks_cnn(size)
    backbone = tf_keras.Model(full.inputs, feature_layer(full).output, name="backbone")
    return build_classifier(backbone, classes, size, HeadConfig(dropout=0.0)), backbone


def toy_data(n=32, size=16, seed=0, flip_labels=False):
    """Bright images are class 1, dark ones class 0; flip_labels swaps the classes."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.uniform(0, 120, (n, size, size, 3)) + 120 * y[:, None, None, None]).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, 1 - y if flip_labels else y)).batch(8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir")
    parser.add_argument("--kill-at-epoch", type=int, default=-1)
    parser.add_argument("--kill-before-commit", type=int, default=-1,
                        help="die after writing the checkpoint of this many epochs, before state.json names it")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--mixed", action="store_true")
    args = parser.parse_args(argv)

    import logging

    import tensorflow as tf

    logging.basicConfig(level=logging.INFO)
    if args.replicas > 1:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    import tf_keras

    from components.train.options import StageConfig
    from components.train.schedule import run_schedule

    if args.kill_before_commit >= 0:
        rename = tf.io.gfile.rename

        def rename_or_die(src, dst, overwrite=False):
            if src.endswith(".tmp") and json.load(open(src))["global_epoch"] == args.kill_before_commit:
                os.kill(os.getpid(), signal.SIGKILL)
            return rename(src, dst, overwrite)

        tf.io.gfile.rename = rename_or_die
    tf.config.experimental.enable_op_determinism()
    tf_keras.utils.set_random_seed(0)
    if args.mixed:
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.replicas)])
                if args.replicas > 1 else tf.distribute.get_strategy())
    with strategy.scope():
        model, backbone = classifier()
    trained = []

    class Epochs(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == args.kill_at_epoch:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            trained.append(epoch)

    stages = [StageConfig(name="head", epochs=2, trainable="none", learning_rate=1e-2, decay="constant"),
              StageConfig(name="top", epochs=3, trainable="top:3", learning_rate=1e-3, warmup_epochs=1,
                          layer_lr_decay=0.5)]
    results = run_schedule(model, backbone, stages, toy_data(), toy_data(seed=1), steps_per_epoch=4,
                           checkpoint_dir=args.checkpoint_dir, strategy=strategy, callbacks=[Epochs()])
    weights = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    print(json.dumps({
        "trained": trained,
        "replicas": strategy.num_replicas_in_sync,
        "output_dtype": model.output.dtype.name,
        "head_compute_dtype": model.get_layer("head_pool").compute_dtype,
        "results": [{"name": r.name, "epochs_run": r.epochs_run, "history": r.history} for r in results],
        "weights": weights,
    }))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import components  # noqa: F401  (the one Keras)

    main()

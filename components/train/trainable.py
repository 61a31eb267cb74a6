"""What trains: the backbone's blocks, which of its layers a stage unfreezes, and their learning-rate factors.

A stage names what trains in a small language (none, all, top:N, top:P%,
from:LAYER, auto; read by ``components.train.options.parse_trainable``); this
module turns it into the index of the lowest backbone layer that trains, and
sets ``trainable`` accordingly. ``auto`` unfreezes whole blocks, as
keras.applications models name them, from the top down.
"""

from __future__ import annotations

import math
import re

import tensorflow as tf
import tf_keras

from components.train.options import parse_trainable

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
    trainable = parse_trainable(spec)
    if trainable.kind == "none":
        return n
    if trainable.kind == "all":
        return 0
    if trainable.kind == "auto":
        starts = block_starts(backbone)
        return starts[-blocks] if 0 < blocks <= len(starts) else (0 if blocks else n)
    if trainable.kind == "top%":
        return n - math.ceil(n * trainable.percent / 100)
    if trainable.kind == "top":
        return max(0, n - trainable.layers)
    names = [layer.name for layer in backbone.layers]
    if trainable.layer not in names:
        raise ValueError(f"trainable from:{trainable.layer}: the backbone has no layer named '{trainable.layer}'; "
                         f"its layers are: {', '.join(names)}")
    return names.index(trainable.layer)


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

"""What trains: blocks by keras.applications names, and each trainable setting."""

import pytest
import tf_keras

from components.train.trainable import block_starts, count_trainable, first_trainable_layer, set_trainable
from tests.support.schedule_job import classifier


def test_blocks_follow_keras_applications_layer_names():
    _, backbone = classifier()
    names = [layer.name for layer in backbone.layers]
    assert [names[i] for i in block_starts(backbone)] == ["block1_conv", "block2_conv", "block3_conv"]
    mobilenet = tf_keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    starts = [mobilenet.layers[i].name for i in block_starts(mobilenet)]
    assert starts[:3] == ["Conv1", "expanded_conv_depthwise", "block_1_expand"]
    assert starts[-2:] == ["block_16_expand", "Conv_1"]


@pytest.mark.parametrize("spec,blocks,first_name", [
    ("none", 0, None), ("all", 0, "image"), ("top:3", 0, "block3_conv"), ("top:50%", 0, "block2_conv"),
    ("from:block2_conv", 0, "block2_conv"), ("auto", 1, "block3_conv"), ("auto", 2, "block2_conv")])
def test_what_trains_at_each_trainable_setting(spec, blocks, first_name):
    model, backbone = classifier()
    first = first_trainable_layer(backbone, spec, blocks)
    set_trainable(backbone, first)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and backbone.trainable]
    if first_name is None:
        assert not backbone.trainable_weights and count_trainable(model) == 4 * 2 + 2
    else:
        names = [layer.name for layer in backbone.layers]
        assert trainable == names[names.index(first_name):]
        frozen = {layer.name for layer in backbone.layers} - set(trainable)
        assert not [w for layer in backbone.layers if layer.name in frozen for w in layer.trainable_weights]


def test_a_trainable_layer_that_does_not_exist_is_named_with_the_choices():
    _, backbone = classifier()
    with pytest.raises(ValueError, match="no layer named 'block9_conv'.*block1_conv"):
        first_trainable_layer(backbone, "from:block9_conv")

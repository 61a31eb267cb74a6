"""The real-photo sets: the ELPV solar cells from PyPI's elpv-dataset wheel, filed by their experts' labels.

The first test in a fresh cache downloads the wheel (91 MB) once.
"""

import hashlib
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from demo import photo_sets

from tests.conftest import REPO

ROOT = str(REPO)


@pytest.fixture(scope="module")
def solar_cells(tmp_path_factory):
    out = tmp_path_factory.mktemp("solar") / "data"
    return out, photo_sets.write_photos("solar_cells", out)


def test_the_solar_cells_are_the_published_data_set_filed_by_type_and_condition(solar_cells):
    out, counts = solar_cells
    # Deitsch et al. (2019) count 1,508 functional cells and 715 defective ones among the 2,624
    # (the other 401 were uncertain, 1/3 or 2/3): these are the numbers the package must give.
    assert counts == {"mono_functional": 588, "mono_defective": 313, "poly_functional": 920, "poly_defective": 402}
    assert counts["mono_functional"] + counts["poly_functional"] == 1508
    assert counts["mono_defective"] + counts["poly_defective"] == 715
    for name, count in counts.items():
        assert len(list((out / name).glob("*.png"))) == count
    first = Image.open(next((out / "poly_defective").glob("*.png")))
    assert first.size == (300, 300) and first.mode == "L"


def test_each_cell_is_the_packaged_file_under_its_labelled_class(solar_cells):
    out, _ = solar_cells
    with zipfile.ZipFile(photo_sets.elpv_wheel()) as wheel:
        rows = photo_sets.elpv_labels(wheel)
        assert len(rows) == 2624
        for path, probability, cell_type in rows[::97]:  # a sample across both types and all labels
            name = os.path.basename(path)
            expected = photo_sets.elpv_class(probability, cell_type)
            written = list(out.glob(f"*/{name}"))
            if expected is None:
                assert written == [], f"{name} (p={probability}) was uncertain and must be left out"
            else:
                assert [p.parent.name for p in written] == [expected]
                assert written[0].read_bytes() == wheel.read(f"elpv_dataset/data/{path}")


def test_the_photos_are_distinct_real_images(solar_cells):
    out, _ = solar_cells
    files = sorted(out.glob("mono_defective/*.png"))
    pixels = [np.asarray(Image.open(p)) for p in files[:60]]
    assert len({p.tobytes() for p in pixels}) == 60
    # Photos, not flat fills: every one has a spread of grey levels.
    assert min(float(p.std()) for p in pixels) > 5


def test_a_cached_wheel_that_is_not_the_release_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("THAW_CACHE_DIR", str(tmp_path))
    wheel = tmp_path / "photo-sets" / photo_sets.ELPV_WHEEL
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(photo_sets.PhotoSetError) as caught:
        photo_sets.elpv_wheel()
    message = str(caught.value)
    assert str(wheel) in message and hashlib.sha256(b"not the wheel").hexdigest() in message
    assert "Delete it" in message
    assert wheel.read_bytes() == b"not the wheel"  # not removed behind the user's back


def test_a_failed_download_names_the_package_and_where_to_put_the_wheel(tmp_path):
    # pip against an index on a closed local port: a real pip failure, at once.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(THAW_CACHE_DIR=str(tmp_path), PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0",
               PIP_TIMEOUT="2", PIP_CONFIG_FILE=os.devnull)
    code = "from demo import photo_sets; photo_sets.elpv_wheel()"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "PhotoSetError" in done.stderr
    assert f"could not download {photo_sets.ELPV_PACKAGE} {photo_sets.ELPV_VERSION}" in done.stderr
    assert str(tmp_path / "photo-sets" / photo_sets.ELPV_WHEEL) in done.stderr
    assert not list((tmp_path / "photo-sets").glob(".download-*"))


def test_an_unknown_photo_set_is_named():
    with pytest.raises(photo_sets.PhotoSetError, match="no photo set 'cifar'; the sets are solar_cells, lfw"):
        photo_sets.write_photos("cifar", "/nonexistent")

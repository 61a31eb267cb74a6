"""Real photo sets for the real-photo demo and ``bench.transfer --real``, from package registries only.

Two sets, by name (``thaw demo --real --photos NAME``):

- ``solar_cells`` (the default): the ELPV data set (Deitsch et al., ZAE Bayern
  / FAU Erlangen-Nuremberg): 2,624 electroluminescence photographs of solar
  cells cut from 44 photovoltaic modules, 300x300 8-bit grayscale, each labelled
  by experts with the probability that the cell is defective (0, 1/3, 2/3 or 1)
  and its type (mono- or polycrystalline). PyPI ``elpv-dataset`` 1.0.0.post1
  ships the photos inside its wheel (91 MB); the wheel is fetched by pip once,
  checked against its sha256 and cached, and the photos are read straight out
  of it. Images under CC BY-NC-SA 4.0 (code Apache 2.0): fine for a demo and a
  benchmark, not for a model sold commercially. Four classes, cell type x
  condition: ``mono_functional`` (588), ``mono_defective`` (313),
  ``poly_functional`` (920), ``poly_defective`` (402). The 401 cells the
  experts were unsure of (1/3, 2/3) are left out. Cracks a few pixels wide on
  a grain texture that ImageNet never showed: frozen ImageNet features alone do
  poorly here, which is what makes fine-tuning matter.
- ``lfw``: scikit-image's LFW subset, 100 face and 100 non-face crops of
  Labeled Faces in the Wild photographs, 25x25 grayscale (read in the torch
  runtime, which has scikit-image; see demo.pretrained). Too easy to tell
  schedules apart: frozen features alone reach 0.97.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import typing
import zipfile
from pathlib import Path

from components.file_lock import exclusive
from components.serve.serving_runtime import cache_dir, output_tail

ELPV_PACKAGE = "elpv-dataset"
ELPV_VERSION = "1.0.0.post1"
ELPV_WHEEL = "elpv_dataset-1.0.0.post1-py3-none-any.whl"
ELPV_SHA256 = "85e31c1126ee9b48e62d3a0232c58f58b2d189b0814a45c13642fa0415af4a4c"
ELPV_LABELS = "elpv_dataset/data/labels.csv"
# The experts' probability that a cell is defective -> the condition it is filed under; others are left out.
ELPV_CONDITIONS = {0.0: "functional", 1.0: "defective"}


class PhotoSetError(RuntimeError):
    """A photo set could not be fetched or read; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class PhotoSet:
    name: str
    title: str                  # one line, for the demo's and the benchmark's headers
    classes: tuple[str, ...]
    image_size: int             # the size the demo and the benchmark run EfficientNet-Lite0 at
    write: typing.Callable[[Path], dict[str, int]]   # out_dir -> images written per class
    licence: str
    # training.augment for these photos: only changes that keep a photo's class. A solar cell
    # flipped either way is still the same kind of cell (busbars stay straight lines).
    augment: dict = dataclasses.field(default_factory=dict)
    # The demo's gate: floors a model fine-tuned on these photos clears and a broken one does not.
    gate: dict = dataclasses.field(default_factory=dict)


def elpv_wheel() -> Path:
    """The cached elpv-dataset wheel, fetched by pip first (under a lock) if missing; its sha256 checked."""
    home = cache_dir() / "photo-sets"
    wheel = home / ELPV_WHEEL
    if not wheel.exists():
        home.mkdir(parents=True, exist_ok=True)
        with exclusive(str(home / f".{ELPV_WHEEL}.lock"), f"a download of {ELPV_WHEEL}", wait=None):
            if not wheel.exists():
                _download(wheel)
    _check_sha256(wheel)
    return wheel


def _download(wheel: Path) -> None:
    with tempfile.TemporaryDirectory(dir=wheel.parent, prefix=".download-") as tmp:
        requirement = Path(tmp, "requirement.txt")
        requirement.write_text(f"{ELPV_PACKAGE}=={ELPV_VERSION} --hash=sha256:{ELPV_SHA256}\n")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--only-binary", ":all:", "--require-hashes", "-r", str(requirement), "-d", tmp],
                              capture_output=True, text=True)
        fetched = Path(tmp, ELPV_WHEEL)
        if done.returncode != 0 or not fetched.exists():
            raise PhotoSetError(
                f"could not download {ELPV_PACKAGE} {ELPV_VERSION} from the Python package index with pip: "
                f"{output_tail(done, 4) or 'no wheel came back'}\nOn a machine without the index, copy {ELPV_WHEEL} "
                f"(sha256 {ELPV_SHA256}) to {wheel}.")
        os.replace(fetched, wheel)


def _check_sha256(wheel: Path) -> None:
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != ELPV_SHA256:
        raise PhotoSetError(f"{wheel} is not {ELPV_PACKAGE} {ELPV_VERSION}: its sha256 is {digest.hexdigest()}, "
                            f"expected {ELPV_SHA256}. Delete it and run again to download it afresh.")


def elpv_labels(wheel: zipfile.ZipFile) -> list[tuple[str, float, str]]:
    """labels.csv's rows: (image path inside the package's data folder, defect probability, cell type)."""
    rows = []
    for number, line in enumerate(wheel.read(ELPV_LABELS).decode().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2] not in ("mono", "poly"):
            raise PhotoSetError(f"{ELPV_LABELS} line {number} in {ELPV_WHEEL}: expected 'path probability "
                                f"mono|poly', got {line!r}")
        rows.append((fields[0], float(fields[1]), fields[2]))
    return rows


def elpv_class(probability: float, cell_type: str) -> str | None:
    """The class a labelled cell is filed under (``poly_defective``), or None when the experts were unsure."""
    condition = ELPV_CONDITIONS.get(probability)
    return None if condition is None else f"{cell_type}_{condition}"


def write_solar_cells(out_dir: Path) -> dict[str, int]:
    """The ELPV cells with certain labels as PNGs, byte for byte as shipped, in out_dir/<class>/."""
    counts = {name: 0 for name in SOLAR_CELL_CLASSES}
    with zipfile.ZipFile(elpv_wheel()) as wheel:
        for path, probability, cell_type in elpv_labels(wheel):
            name = elpv_class(probability, cell_type)
            if name is None:
                continue
            folder = Path(out_dir, name)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / os.path.basename(path)).write_bytes(wheel.read(f"elpv_dataset/data/{path}"))
            counts[name] += 1
    return counts


def write_lfw(out_dir: Path) -> dict[str, int]:
    from demo.pretrained import write_lfw_photos

    return write_lfw_photos(out_dir)


SOLAR_CELL_CLASSES = ("mono_functional", "mono_defective", "poly_functional", "poly_defective")
PHOTO_SETS = {
    "solar_cells": PhotoSet(
        "solar_cells", "ELPV solar cells (electroluminescence photos), mono/poly x functional/defective",
        SOLAR_CELL_CLASSES, 128, write_solar_cells,
        f"PyPI {ELPV_PACKAGE} {ELPV_VERSION}: images CC BY-NC-SA 4.0 (ZAE Bayern), code Apache-2.0",
        augment={"flip": "both"}, gate={"min_accuracy": 0.75, "min_macro_recall": 0.6}),
    "lfw": PhotoSet(
        "lfw", "scikit-image's LFW subset, faces vs non-faces", ("face", "non_face"), 96, write_lfw,
        "scikit-image's data (BSD-3-Clause); the photos are from Labeled Faces in the Wild",
        gate={"min_accuracy": 0.9}),
}
DEFAULT_PHOTO_SET = "solar_cells"


def photo_set(name: str) -> PhotoSet:
    try:
        return PHOTO_SETS[name]
    except KeyError:
        raise PhotoSetError(f"no photo set {name!r}; the sets are {', '.join(PHOTO_SETS)}") from None


def write_photos(name: str, out_dir: str | os.PathLike) -> dict[str, int]:
    """Writes the named set's photos into out_dir/<class>/, replacing PNGs there; returns images per class."""
    chosen, out = photo_set(name), Path(out_dir)
    for png in out.glob("*/*.png"):
        png.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return chosen.write(out)

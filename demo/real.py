"""The real-photo demo: a photo set from the registry on EfficientNet-Lite0 with ImageNet weights."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from demo.digits import MANIFEST, RECIPE_VERSION

REAL_CONFIG = "thaw.yaml"
# The photos kept with --per-class are drawn at random with this seed (the same
# on every machine). The first N by name would not do: the ELPV cells' files run
# module by module, so the first N come from a few modules, and the splits
# (by content hash) would test on near-copies of the training photos.
SAMPLE_SEED = 0


def make_real_demo(out_dir: str | os.PathLike, photos: str | None = None, per_class: int | None = None,
                   force: bool = False) -> dict:
    """Makes (or reuses) the real-photo demo under ``out_dir``: ``data/`` and ``thaw.yaml``.

    The photos are a set from demo.photo_sets (default: the ELPV solar
    cells), one folder per class, at most ``per_class`` per class (None: all),
    drawn at random with a fixed seed (SAMPLE_SEED);
    the backbone is EfficientNet-Lite0 with ImageNet weights, converted by
    demo.pretrained (cached). ``thaw.yaml`` names both, so
    ``thaw run --config OUT/thaw.yaml`` runs the pipeline on it.
    """
    import yaml

    from demo.photo_sets import DEFAULT_PHOTO_SET, photo_set, write_photos
    from demo.pretrained import ensure_backbone

    chosen = photo_set(photos or DEFAULT_PHOTO_SET)
    out = Path(out_dir).resolve()
    backbone = ensure_backbone()
    data_dir = out / "data"
    manifest_path = out / MANIFEST
    key = hashlib.sha256(json.dumps([RECIPE_VERSION, backbone["recipe"], chosen.name, chosen.image_size, per_class,
                                     "sample", SAMPLE_SEED,
                                     chosen.gate, chosen.augment]).encode()).hexdigest()[:16]
    if not force and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("recipe") == key and (out / REAL_CONFIG).exists():
            return manifest
    counts = write_photos(chosen.name, data_dir)
    if per_class is not None:
        counts = sample_per_class(data_dir, per_class)
    config = {
        "output_dir": "thaw-output-real",
        "data": {"root": str(data_dir)},
        "backbone": {"path": backbone["backbone"], "image_size": chosen.image_size},
        "gate": dict(chosen.gate),
    }
    if chosen.augment:
        config["training"] = {"augment": dict(chosen.augment)}
    (out / REAL_CONFIG).write_text(f"# Written by `thaw demo --real --photos {chosen.name}`: {chosen.title}, "
                                   "on EfficientNet-Lite0 with ImageNet weights.\n"
                                   + yaml.safe_dump(config, sort_keys=False))
    manifest = {"recipe": key, "photos": chosen.name, "title": chosen.title, "licence": chosen.licence,
                "data": str(data_dir), "backbone": backbone["backbone"], "config": str(out / REAL_CONFIG),
                "classes": counts, "image_size": chosen.image_size, "conversion": backbone["check"]}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def sample_per_class(data_dir: Path, per_class: int, seed: int = SAMPLE_SEED) -> dict[str, int]:
    """Keeps ``per_class`` PNGs of each class folder, drawn at random with ``seed`` (each class its own
    draw, the same on every machine); deletes the rest; returns what is left per class."""
    counts = {}
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.png"))
        keep = set(random.Random(f"{seed}:{folder.name}").sample(files, min(per_class, len(files))))
        for extra in files:
            if extra not in keep:
                extra.unlink()
        counts[folder.name] = len(keep)
    return counts

"""The directory TF Serving polls: ``<base>/<version>/``, written so it never sees half a model.

TF Serving loads any new numeric folder under the model's base path. A model
copied straight into one can be picked up half-written (tfx issue 4466). So a
push writes the model into a hidden staging folder beside the versions
(TF Serving ignores names that are not numbers), ``saved_model.pb`` last, and
then renames it into place: one atomic step on a local or mounted filesystem.
On object stores (gs://), where there is no atomic rename, the files go straight
to the version folder with ``saved_model.pb`` last, so the folder is not a
loadable model until everything else is there.

Versions only go up. The last ``keep`` versions stay for rollback; a rollback
moves the newest version aside into ``.rolled-back/`` (kept, not deleted), and
TF Serving's default "latest" policy falls back to the one before.
"""

from __future__ import annotations

import os
import time
import uuid

import tensorflow as tf

SAVED_MODEL = "saved_model.pb"
ROLLED_BACK = ".rolled-back"


def _is_remote(path: str) -> bool:
    return "://" in path


def _numeric_children(path: str) -> list[int]:
    if not tf.io.gfile.isdir(path):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(path))
    return sorted(int(name) for name in names if name.isdigit())


def versions(base: str) -> list[int]:
    """The versions TF Serving can see, oldest first."""
    return _numeric_children(base)


def next_version(base: str) -> int:
    """Strictly above every version ever pushed here, rolled-back ones included.

    Seconds since the epoch when that is higher, so versions also say when.
    """
    known = versions(base) + _numeric_children(os.path.join(base, ROLLED_BACK))
    return max([int(time.time())] + [v + 1 for v in known])


def _copy_tree(src: str, dst: str) -> None:
    """Copies a SavedModel directory, its top-level saved_model.pb last."""
    last = None
    for dirpath, _, filenames in tf.io.gfile.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = dst if rel == "." else os.path.join(dst, rel)
        tf.io.gfile.makedirs(target_dir)
        for name in filenames:
            if rel == "." and name == SAVED_MODEL:
                last = os.path.join(dirpath, name)
                continue
            tf.io.gfile.copy(os.path.join(dirpath, name), os.path.join(target_dir, name), overwrite=True)
    if last is None:
        raise FileNotFoundError(f"{src} holds no {SAVED_MODEL}: it is not a SavedModel")
    tf.io.gfile.copy(last, os.path.join(dst, SAVED_MODEL), overwrite=True)


def push(model_dir: str, base: str, keep: int) -> str:
    """Publishes the SavedModel at ``model_dir`` as a new version; returns its folder."""
    tf.io.gfile.makedirs(base)
    version = next_version(base)
    final = os.path.join(base, str(version))
    staging = final if _is_remote(base) else os.path.join(base, f".incoming-{version}-{uuid.uuid4().hex[:8]}")
    try:
        _copy_tree(model_dir, staging)
        if staging != final:
            tf.io.gfile.rename(staging, final)
    except BaseException:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        raise
    prune(base, keep)
    return final


def prune(base: str, keep: int) -> list[int]:
    """Deletes all but the newest ``keep`` versions; returns the ones deleted."""
    old = versions(base)[:-keep] if keep > 0 else []
    for version in old:
        tf.io.gfile.rmtree(os.path.join(base, str(version)))
    return old


def rollback(base: str) -> tuple[int, int]:
    """Takes the newest version out of service; returns (version removed, version now served)."""
    current = versions(base)
    if len(current) < 2:
        raise ValueError(
            f"{base} has {len(current)} version(s) ({current}): a rollback needs a previous version to fall back to")
    newest, previous = current[-1], current[-2]
    aside = os.path.join(base, ROLLED_BACK)
    tf.io.gfile.makedirs(aside)
    tf.io.gfile.rename(os.path.join(base, str(newest)), os.path.join(aside, str(newest)))
    return newest, previous

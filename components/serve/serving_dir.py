"""The directory TF Serving polls: ``<base>/<version>/``, written so it never sees half a model.

TF Serving loads any new numeric folder under the model's base path. A model
copied straight into one can be picked up half-written (tfx issue 4466). So a
push writes the model into a hidden staging folder beside the versions
(TF Serving ignores names that are not numbers), ``saved_model.pb`` last, and
then renames it into place: one atomic step on a local or mounted filesystem.
On object stores (gs://), where there is no atomic rename, the files go straight
to the version folder with ``saved_model.pb`` last, so the folder is not a
loadable model until everything else is there.

Pushes and rollbacks into one local base take turns: each holds an flock on
``<base>/.push.lock`` from choosing the version number to the rename, so two
runs sharing a serving directory never race for a number.

Versions only go up. The last ``keep`` versions stay for rollback; a rollback
moves the newest version aside into ``.rolled-back/`` (kept, not deleted), and
TF Serving's default "latest" policy falls back to the one before.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import tensorflow as tf

from components.file_lock import exclusive

SAVED_MODEL = "saved_model.pb"
ROLLED_BACK = ".rolled-back"
PUSH_LOCK = ".push.lock"
# How long a push waits for another push or rollback into the same base.
PUSH_WAIT_S = 600.0


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


def copy_saved_model(src: str, dst: str) -> None:
    """Copies a SavedModel directory, its top-level saved_model.pb last."""
    for dirpath, _, filenames in tf.io.gfile.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = dst if rel == "." else os.path.join(dst, rel)
        tf.io.gfile.makedirs(target_dir)
        for name in filenames:
            if not (rel == "." and name == SAVED_MODEL):
                tf.io.gfile.copy(os.path.join(dirpath, name), os.path.join(target_dir, name), overwrite=True)
    tf.io.gfile.copy(os.path.join(src, SAVED_MODEL), os.path.join(dst, SAVED_MODEL), overwrite=True)


def _turn(base: str, what: str):
    """Exclusive use of a local base (object stores have no flock: Kubeflow runs one at a time)."""
    if _is_remote(base):
        return contextlib.nullcontext()
    return exclusive(os.path.join(base, PUSH_LOCK), f"a {what} into {base}", wait=PUSH_WAIT_S)


def push(model_dir: str, base: str, keep: int) -> str:
    """Publishes the SavedModel at ``model_dir`` as a new version; returns its folder."""
    tf.io.gfile.makedirs(base)
    with _turn(base, "push"):
        return _push(model_dir, base, keep)


def _push(model_dir: str, base: str, keep: int) -> str:
    if not tf.io.gfile.exists(os.path.join(model_dir, SAVED_MODEL)):
        raise FileNotFoundError(f"{model_dir} holds no {SAVED_MODEL}: it is not a SavedModel")
    if not _is_remote(base):
        _remove_stale_staging(base)
    version = next_version(base)
    final = os.path.join(base, str(version))
    staging = final if _is_remote(base) else os.path.join(base, f".incoming-{version}-{uuid.uuid4().hex[:8]}")
    try:
        copy_saved_model(model_dir, staging)
        if staging != final:
            tf.io.gfile.rename(staging, final)
    except BaseException as exc:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        if isinstance(exc, (OSError, tf.errors.OpError)):  # a full or failing disk
            served = versions(base)
            reason = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
            raise OSError(
                f"could not push {model_dir} into {base} as version {version} ({reason}). No part of it is "
                f"visible to TF Serving; " + (f"version {served[-1]} keeps serving" if served else
                                              "no version was served before") +
                f". Fix that (a full disk: free space under {base}) and push again: the next run does") from exc
        raise
    prune(base, keep)
    return final


def _remove_stale_staging(base: str) -> None:
    """Staging folders left by a push that was killed; only called holding the push lock,
    so no push is writing any of them."""
    for name in os.listdir(base):
        if name.startswith(".incoming-"):
            tf.io.gfile.rmtree(os.path.join(base, name))


def prune(base: str, keep: int) -> list[int]:
    """Deletes all but the newest ``keep`` versions; returns the ones deleted."""
    old = versions(base)[:-keep] if keep > 0 else []
    for version in old:
        tf.io.gfile.rmtree(os.path.join(base, str(version)))
    return old


def rollback(base: str) -> tuple[int, int]:
    """Takes the newest version out of service; returns (version removed, version now served)."""
    with _turn(base, "rollback"):
        return _rollback(base)


def _rollback(base: str) -> tuple[int, int]:
    current = versions(base)
    if len(current) < 2:
        raise ValueError(
            f"{base} has {len(current)} version(s) ({current}): a rollback needs a previous version to fall back to")
    newest, previous = current[-1], current[-2]
    aside = os.path.join(base, ROLLED_BACK)
    tf.io.gfile.makedirs(aside)
    tf.io.gfile.rename(os.path.join(base, str(newest)), os.path.join(aside, str(newest)))
    return newest, previous

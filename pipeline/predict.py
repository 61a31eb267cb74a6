"""Classifying images with a pushed model: a local SavedModel, or TF Serving's REST API.

Both paths speak the same contract: ``serving_default`` takes the encoded
image bytes as ``image_bytes`` (base64 ``{"b64": ...}`` over REST, as TF
Serving does for inputs whose name ends in ``_bytes``) and answers with the
class names and probabilities, top k included.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

from components.serve.serving_dir import SAVED_MODEL, versions


class PredictError(RuntimeError):
    """A prediction that could not be made; the message names the image or the server."""


def resolve_model_dir(path: str) -> str:
    """A SavedModel folder, or a serving directory of versions (the newest is used)."""
    if os.path.exists(os.path.join(path, SAVED_MODEL)):
        return path
    found = versions(path)
    if found:
        return os.path.join(path, str(found[-1]))
    raise PredictError(f"{path} is neither a SavedModel (no {SAVED_MODEL}) nor a serving directory of "
                       "numbered versions: point --model at one, or at a TF Serving URL")


def _row(image: str, classes: list[str], probabilities: list[float], top_k: int) -> dict:
    top = [{"class": c, "probability": float(p)} for c, p in zip(classes, probabilities)][:top_k]
    return {"image": image, "class": top[0]["class"], "probability": top[0]["probability"], "top_k": top}


def _read(image: str) -> bytes:
    try:
        with open(image, "rb") as f:
            return f.read()
    except OSError as exc:
        raise PredictError(f"cannot read {image}: {exc.strerror}") from None


def predict_local(model_dir: str, images: list[str], top_k: int) -> list[dict]:
    import tensorflow as tf

    serve = tf.saved_model.load(resolve_model_dir(model_dir)).signatures["serving_default"]
    rows = []
    for image in images:
        try:
            out = serve(image_bytes=tf.constant([_read(image)]))
        except tf.errors.InvalidArgumentError as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid image"
            raise PredictError(f"{image}: the model refused it: {message}") from None
        rows.append(_row(image, [c.decode() for c in out["top_k_classes"].numpy()[0]],
                         out["top_k_probabilities"].numpy()[0].tolist(), top_k))
    return rows


def predict_url(url: str, images: list[str], top_k: int, timeout_s: float = 30.0) -> list[dict]:
    """POSTs to TF Serving's REST predict endpoint: http://HOST:8501/v1/models/NAME[:predict]."""
    endpoint = url if url.endswith(":predict") else url.rstrip("/") + ":predict"
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("THAW_SERVING_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    rows = []
    for image in images:
        body = json.dumps({"signature_name": "serving_default",
                           "instances": [{"b64": base64.b64encode(_read(image)).decode("ascii")}]})
        request = urllib.request.Request(endpoint, data=body.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                prediction = json.load(response)["predictions"][0]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise PredictError(f"{image}: {endpoint} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise PredictError(f"cannot reach {endpoint}: {exc}") from None
        rows.append(_row(image, prediction["top_k_classes"], prediction["top_k_probabilities"], top_k))
    return rows


def predict(model: str, images: list[str], top_k: int = 5) -> list[dict]:
    """One row per image: ``image``, ``class``, ``probability`` and ``top_k``."""
    if model.startswith(("http://", "https://")):
        return predict_url(model, images, top_k)
    return predict_local(model, images, top_k)

"""Checks a SavedModel the way TF Serving will use it, in a process of its own.

  python -m components.serve.serving_probe MODEL_DIR --budgets '{"p99_ms_batch_1": 500, ...}' --max-pixels N

Loads the model with ``tf.saved_model.load`` (TensorFlow's C++ runtime, no
Keras, as TF Serving does), then:
- the contract: ``serving_default`` takes one string tensor ``image_bytes`` of
  shape [None] and returns class names and probabilities;
- replays the warmup requests from ``assets.extra``; every answer must be well
  formed: probabilities in [0, 1] that sum to 1, class names from the model's
  own label vocabulary;
- measures p50 and p99 latency at batch 1 and at a larger batch against budgets;
- sends bad inputs (empty bytes, bytes that are no image, a truncated JPEG, an
  image over the pixel limit) and expects InvalidArgument for each, never a
  crash; a hang is caught by the caller's timeout on this whole process.
Prints one JSON object: ``passed``, ``problems`` and the numbers.
"""

import argparse
import io
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
import tensorflow as tf

from components.model_contract import LABEL_COUNTS_FILE, SERVING_INPUT_KEY, WARMUP_FILE

REQUIRED_OUTPUTS = {"classes", "class_ids", "probabilities", "top_k_classes", "top_k_probabilities"}


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def read_warmup(model_dir: str) -> list[list[bytes]]:
    """The image batches of the warmup requests."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(model_dir, "assets.extra", WARMUP_FILE)
    batches = []
    if not os.path.exists(path):
        return batches
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        batches.append(list(tf.make_ndarray(log.predict_log.request.inputs[SERVING_INPUT_KEY]).ravel()))
    return batches


def check_contract(signature) -> list[str]:
    problems = []
    inputs = signature.structured_input_signature[1]
    if set(inputs) != {SERVING_INPUT_KEY}:
        problems.append(f"serving_default takes {sorted(inputs)}, expected only '{SERVING_INPUT_KEY}'")
    elif inputs[SERVING_INPUT_KEY].dtype != tf.string or inputs[SERVING_INPUT_KEY].shape.as_list() != [None]:
        problems.append(f"'{SERVING_INPUT_KEY}' is {inputs[SERVING_INPUT_KEY]}, expected a string tensor of shape [None]")
    missing = REQUIRED_OUTPUTS - set(signature.structured_outputs)
    if missing:
        problems.append(f"serving_default lacks the outputs {sorted(missing)}")
    return problems


def check_answer(out: dict, batch: int, class_names: set[str]) -> list[str]:
    problems = []
    probabilities = out["probabilities"].numpy()
    if probabilities.shape[0] != batch:
        problems.append(f"{probabilities.shape[0]} answers for a batch of {batch}")
    if not np.all((probabilities >= 0) & (probabilities <= 1)):
        problems.append("probabilities outside [0, 1]")
    sums = probabilities.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        problems.append(f"probabilities sum to {sums.min():.4f}..{sums.max():.4f}, not 1")
    names = {c.decode() for c in out["classes"].numpy()} | {c.decode() for c in out["top_k_classes"].numpy().ravel()}
    if class_names and not names <= class_names:
        problems.append(f"class names {sorted(names - class_names)} are not in the label vocabulary")
    return problems


def latency_ms(serve, images: list[bytes], batch: int, calls: int) -> dict[str, float]:
    """p50/p99 over ``calls`` requests of ``batch`` images, after one untimed call."""
    request = tf.constant([images[i % len(images)] for i in range(batch)])
    serve(image_bytes=request)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        serve(image_bytes=request)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def bad_inputs(images: list[bytes], max_pixels: int) -> dict[str, bytes]:
    from PIL import Image

    real = Image.open(io.BytesIO(images[0])).convert("RGB")
    jpeg = io.BytesIO()
    real.resize((max(64, real.width), max(64, real.height))).save(jpeg, format="JPEG")
    side = int(max_pixels ** 0.5) + 1
    return {
        "empty bytes": b"",
        "bytes that are no image": b"this is not an image, it is a sentence",
        "a truncated JPEG": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        f"an image over the pixel limit ({side}x{side})": bomb_png(side, side),
    }


def probe(model_dir: str, budgets: dict, max_pixels: int) -> dict:
    problems: list[str] = []
    model = tf.saved_model.load(model_dir)
    serve = model.signatures["serving_default"]
    problems += check_contract(serve)
    if problems:  # nothing else can be asked of a model that takes other inputs
        return {"passed": False, "problems": problems}
    counts_path = os.path.join(model_dir, "assets.extra", LABEL_COUNTS_FILE)
    class_names = set(json.load(open(counts_path))) if os.path.exists(counts_path) else set()

    warmup = read_warmup(model_dir)
    if not warmup:
        problems.append("the model has no warmup requests in assets.extra")
    for batch in warmup:
        problems += [f"warmup request of {len(batch)}: {p}"
                     for p in check_answer(serve(image_bytes=tf.constant(batch)), len(batch), class_names)]
    images = [image for batch in warmup for image in batch]

    latency = {}
    if images:
        for batch, calls in ((1, 50), (int(budgets["batch_size"]), 10)):
            latency[f"batch_{batch}"] = measured = latency_ms(serve, images, batch, calls)
            budget = budgets[f"p99_ms_batch_{'1' if batch == 1 else 'n'}"]
            if measured["p99"] > budget:
                problems.append(f"p99 latency at batch {batch} is {measured['p99']:.1f} ms, over the budget "
                                f"of {budget:g} ms")

    rejected = {}
    for name, data in (bad_inputs(images, max_pixels) if images else {}).items():
        try:
            serve(image_bytes=tf.constant([data]))
            rejected[name] = "accepted"
            problems.append(f"{name} was accepted; expected InvalidArgument")
        except tf.errors.InvalidArgumentError:
            rejected[name] = "InvalidArgument"
        except Exception as exc:  # noqa: BLE001 (any other failure is itself the finding)
            rejected[name] = type(exc).__name__
            problems.append(f"{name} raised {type(exc).__name__}, expected InvalidArgument")
    return {"passed": not problems, "problems": problems, "latency_ms": latency,
            "bad_inputs": rejected, "warmup_requests": len(warmup)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--budgets", required=True, help="JSON: p99_ms_batch_1, p99_ms_batch_n, batch_size")
    parser.add_argument("--max-pixels", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(probe(args.model_dir, json.loads(args.budgets), args.max_pixels)))


if __name__ == "__main__":
    sys.exit(main())

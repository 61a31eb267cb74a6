"""Training speed and memory: the input pipeline against a plain decode loop, and train steps by what trains.

(i) Input pipeline. components.train.input_pipeline.make_dataset reads gzipped
TFRecords of tf.Examples (image_bytes, label_id) as the Trainer does: real
digits (scikit-learn's), upscaled to ``--jpeg-size`` px JPEGs with noise, each
one distinct, decoded and resized to ``--image-size``. Three ways: evaluation
(training=False), training without augmentation, and training with flip +
crop (flip horizontal, crop 0.1) — shuffled, augmented, repeated. The
baseline is a Python loop over the same encoded images, already in memory
(no file reading or parsing), calling components.image_ops.decode_and_resize
one image at a time (as a tf.function, so it is the decode and not eager
overhead that is measured). Ratio = pipeline images/s / loop images/s. The
training pipelines repeat without end, so they are read for the whole batches
of one pass (``images // batch``; one more batch would refill the shuffle
buffer from the next pass). The ways are interleaved over ``--rounds``
rounds; the table shows each one's best round (the least disturbed by other
work on the machine) and the range, and the median time to the first batch:
a training pipeline first fills its shuffle buffer (10,000 records, here all
of them), and components.train.schedule calls model.fit once per epoch, so a new
iterator pays that again at the start of every epoch.

(ii) Train steps. A keras.applications MobileNetV2 (alpha 1.0, weights=None:
this measures speed, not quality; it stands in for a real backbone with its
154 layers, depthwise convolutions and BatchNorm) at ``--image-size`` px,
under components.train.model.build_classifier's default head, with what trains set
by components.train.schedule.first_trainable_layer/set_trainable as the schedule
sets it: frozen (trainable none), the top block (what ``auto`` unfreezes
first: Conv_1), the top two blocks (block_16 and up: ``auto``'s default
limit), and all. Adam, batch ``--batch``, random pixels fed from memory so
the input pipeline is not what is timed; images/s from the median step time
after warm-up steps, best of ``--config-rounds`` fresh processes per
configuration (interleaved), and ratios to frozen. A forward-only row
(predict, no gradients: the least work per image) is there for reference.

(iii) Memory. Each configuration of (ii) runs in a fresh process, measured by
bench.memory.run_measured (peak resident memory of the process tree, sampled
from /proc); TensorFlow's import and the model are in every row, so the
differences are what training the extra layers costs (gradients, Adam slots,
activations kept for the backward pass).

  bin/thaw-env python -m bench.training
  bin/thaw-env python -m bench.training --images 2000 --image-size 128 --batch 32 --json build/bench/training.json

About 4-5 minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from bench.memory import run_measured

AUGMENT = {"flip": "horizontal", "crop": 0.1}
PIPELINES = ("loop", "eval", "train", "train+augment")
CONFIGS = {  # name: (trainable spec, blocks for auto)
    "frozen": ("none", 0),
    "top block": ("auto", 1),
    "top 2 blocks": ("auto", 2),
    "all": ("all", 0),
}
FORWARD = "forward only"
NUM_CLASSES = 10


# --- (i) the input pipeline ------------------------------------------------------

def write_records(out_dir: str, count: int, size: int, shards: int = 4) -> list[str]:
    """Gzipped TFRecords of tf.Examples as Transform writes them: image_bytes (JPEG) and label_id."""
    import tensorflow as tf
    from PIL import Image
    from sklearn.datasets import load_digits

    from components.train.preprocessing import IMAGE_KEY, LABEL_ID_KEY

    digits = load_digits()
    rng = np.random.default_rng(0)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    paths = [os.path.join(out_dir, f"train-{i:05d}-of-{shards:05d}.gz") for i in range(shards)]
    writers = [tf.io.TFRecordWriter(p, options) for p in paths]
    scale = -(-size // 8)
    for i in range(count):
        image = digits.images[i % len(digits.images)] * (255 / 16)
        pixels = np.kron(image, np.ones((scale, scale)))[:size, :size] + rng.normal(0, 8, (size, size))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=90)
        label = int(digits.target[i % len(digits.target)])
        example = tf.train.Example(features=tf.train.Features(feature={
            IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
            LABEL_ID_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }))
        writers[i % shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return paths


def read_bytes(paths: list[str]) -> list[bytes]:
    import tensorflow as tf

    from components.train.preprocessing import IMAGE_KEY

    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(paths, compression_type="GZIP").map(lambda r: tf.io.parse_single_example(r, spec))
    return [e[IMAGE_KEY] for e in ds.as_numpy_iterator()]


def time_pipelines(paths: list[str], count: int, image_size: int, batch: int, rounds: int) -> tuple[dict, dict]:
    """Images/s of each way per round, interleaved; and seconds to the first batch (or image) per round."""
    import tensorflow as tf

    from components import image_ops
    from components.train.input_pipeline import make_dataset
    from components.train.options import AugmentConfig

    encoded = read_bytes(paths)
    assert len(encoded) == count
    decode = tf.function(lambda b: image_ops.decode_and_resize(b, image_size),
                         input_signature=[tf.TensorSpec([], tf.string)])
    steps = count // batch  # whole batches of one pass: one more would refill the shuffle buffer

    def loop(start):
        first = None
        for b in encoded:
            decode(tf.constant(b)).numpy()
            first = first or time.perf_counter() - start
        return count, first

    def pipeline(training: bool, augmentation: AugmentConfig | None):
        def run(start):
            ds = make_dataset(paths, image_size, batch, training=training, seed=0, augmentation=augmentation)
            if training:  # repeats without end
                ds = ds.take(steps)
            images, first = 0, None
            for x, _ in ds:
                images += int(x.shape[0])
                first = first or time.perf_counter() - start
            return images, first
        return run

    ways = {"loop": loop, "eval": pipeline(False, None), "train": pipeline(True, None),
            "train+augment": pipeline(True, AugmentConfig(**AUGMENT))}
    decode(tf.constant(encoded[0]))
    ways["eval"](time.perf_counter())  # warm-up: the file cache, tf.data's first use
    rates, firsts = {name: [] for name in ways}, {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            start = time.perf_counter()
            images, first = fn(start)
            rates[name].append(images / (time.perf_counter() - start))
            firsts[name].append(first)
    return rates, firsts


# --- (ii) train steps, (iii) memory: one configuration per fresh process ----------

def run_config(name: str, image_size: int, batch: int, warmup: int, steps: int) -> dict:
    """Images/s of train steps (or forward passes) for one configuration; runs in its own process."""
    import tensorflow as tf
    import tf_keras

    from components.train.backbone import load_backbone
    from components.train.model import build_classifier
    from components.train.options import BackboneConfig, HeadConfig
    from components.train.trainable import count_trainable, describe_trainable, first_trainable_layer, set_trainable

    tf_keras.utils.set_random_seed(0)
    backbone = load_backbone(BackboneConfig(architecture="MobileNetV2", path="", image_size=image_size))
    model = build_classifier(backbone.model, NUM_CLASSES, image_size, HeadConfig(), scaling=backbone.scaling)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, batch)
    stamps = []

    class Stamp(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

        def on_predict_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    total = warmup + steps + 1
    if name == FORWARD:
        trainable, params = "nothing (inference)", 0
        ds = tf.data.Dataset.from_tensors(x).repeat(total)
        model.predict(ds, callbacks=[Stamp()], verbose=0)
    else:
        spec, blocks = CONFIGS[name]
        first = first_trainable_layer(backbone.model, spec, blocks)
        set_trainable(backbone.model, first)
        model.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        trainable, params = describe_trainable(backbone.model, first), count_trainable(model)
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        model.fit(ds, steps_per_epoch=total, epochs=1, callbacks=[Stamp()], verbose=0)
    step_s = np.diff(stamps)[warmup:]  # the first steps trace and warm up
    return {"config": name, "trainable": trainable, "trainable_params": params, "steps": len(step_s),
            "median_step_s": float(np.median(step_s)), "images_per_s": batch / float(np.median(step_s)),
            "mean_images_per_s": batch / float(np.mean(step_s))}


def measure_config(name: str, args) -> dict:
    seconds, peak_mib, stdout = run_measured(
        [sys.executable, "-m", "bench.training", "--one", name, "--image-size", str(args.image_size),
         "--batch", str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.steps)])
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_mib": peak_mib, "process_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images in the TFRecords for (i)")
    parser.add_argument("--jpeg-size", type=int, default=224, help="pixels per side of the stored JPEGs")
    parser.add_argument("--image-size", type=int, default=128, help="pixels per side fed to the model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (i); the best is reported")
    parser.add_argument("--config-rounds", type=int, default=3,
                        help="fresh processes per configuration of (ii, iii), interleaved; the best is reported")
    parser.add_argument("--warmup", type=int, default=3, help="train steps not timed in (ii)")
    parser.add_argument("--steps", type=int, default=15, help="train steps timed in (ii)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a measured child process
    args = parser.parse_args()

    import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

    if args.one:
        print(json.dumps(run_config(args.one, args.image_size, args.batch, args.warmup, args.steps)))
        return

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_records(tmp, args.images, args.jpeg_size)
        megabytes = sum(os.path.getsize(p) for p in paths) / 2**20
        rates, firsts = time_pipelines(paths, args.images, args.image_size, args.batch, args.rounds)
    measured = {name: [] for name in [*CONFIGS, FORWARD]}
    for _ in range(args.config_rounds):
        for name in measured:
            measured[name].append(measure_config(name, args))
    configs = {}
    for name, rows in measured.items():
        best = max(rows, key=lambda r: r["images_per_s"])
        configs[name] = {**best, "peak_mib": max(r["peak_mib"] for r in rows),
                         "images_per_s_rounds": [r["images_per_s"] for r in rows],
                         "peak_mib_rounds": [r["peak_mib"] for r in rows]}
    total_s = time.perf_counter() - began

    print(f"(i) input pipeline: {args.images} digits as {args.jpeg_size}px JPEGs in gzipped TFRecords "
          f"({megabytes:.1f} MiB), decoded and resized to {args.image_size}px, batch {args.batch}; "
          f"best of {args.rounds} interleaved rounds; {os.cpu_count()} CPUs")
    print("    loop = decode_and_resize (tf.function) on each image in turn, bytes already in memory")
    print()
    print("| way | images/s (best) | min - max | x loop | first batch s (median) |")
    print("|---|---|---|---|---|")
    loop = max(rates["loop"])
    for name in PIPELINES:
        label = {"loop": "loop (baseline)", "eval": "make_dataset, training=False",
                 "train": "make_dataset, training=True", "train+augment":
                 "make_dataset, training=True, augment flip+crop"}[name]
        best = max(rates[name])
        print(f"| {label} | {best:.0f} | {min(rates[name]):.0f} - {best:.0f} | {best / loop:.2f} | "
              f"{statistics.median(firsts[name]):.2f} |")
    print()
    print(f"(ii, iii) train steps: MobileNetV2 (weights=None) at {args.image_size}px + the default head "
          f"({NUM_CLASSES} classes), Adam, batch {args.batch}; median step of {args.steps} after {args.warmup} warm-up "
          f"steps, best of {args.config_rounds} fresh processes per row (all rounds in brackets); peak RSS of the "
          "process, the largest of its rounds")
    print()
    print("| backbone trains | layers | trainable params | images/s (rounds) | x frozen | peak RSS MiB | x frozen |")
    print("|---|---|---|---|---|---|---|")
    frozen = configs["frozen"]
    for name, c in configs.items():
        print(f"| {name} | {c['trainable']} | {c['trainable_params']:,} | {c['images_per_s']:.1f} "
              f"({', '.join(f'{r:.0f}' for r in c['images_per_s_rounds'])}) | "
              f"{c['images_per_s'] / frozen['images_per_s']:.2f} | {c['peak_mib']} | "
              f"{c['peak_mib'] / frozen['peak_mib']:.2f} |")
    print(f"total {total_s:.0f}s")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("one", "json")},
                       "pipeline_images_per_s": rates, "pipeline_first_batch_s": firsts,
                       "pipeline_ratio_to_loop": {n: max(rates[n]) / loop for n in PIPELINES},
                       "configs": configs, "total_s": total_s}, f, indent=2)


if __name__ == "__main__":
    main()

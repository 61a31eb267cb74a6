"""Ingestion throughput and memory: ImageExampleGen's Beam pipeline against a plain loop.

The baseline is a single-process Python loop that reads, checks and writes the
same images the same way (the same inspect_image and to_example functions,
gzipped TFRecords). Both run on the same images in fresh processes, at N and
2N images, so the report shows the speed-up and whether peak memory stays
flat as the data doubles.

  bin/thaw-env python -m bench.ingestion --images 2000 --size 256
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

from bench.memory import run_measured

SPLITS = [("train", 0.8), ("eval", 0.2)]


def make_images(root: str, count: int, size: int = 256) -> None:
    """Real digits, upscaled, each with its own noise so no two are duplicates."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = digits.images[i % len(digits.images)] * (255 / 16)
        label = str(digits.target[i % len(digits.images)])
        pixels = np.kron(image, np.ones((size // 8, size // 8))) + rng.normal(0, 8, (size, size))
        folder = os.path.join(root, label)
        os.makedirs(folder, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=90)
        with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
            f.write(buffer.getvalue())


def run_loop(data_root: str, out: str) -> dict:
    """The baseline: one process, one file at a time, the same checks and records."""
    import tensorflow as tf

    from components import image_records
    from components.image_example_gen import list_images

    start = time.perf_counter()
    items, _ = list_images(data_root)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {name: tf.io.TFRecordWriter(os.path.join(out, f"{name}.gz"), options) for name, _ in SPLITS}
    ingested = 0
    for uri, shown, label in items:
        record = image_records.inspect_image(uri, shown, label, 50_000_000)
        if record["kind"] == "example":
            record["split"] = image_records.split_for(record["sha256"], SPLITS)
            writers[record["split"]].write(image_records.to_example(record))
            ingested += 1
    for writer in writers.values():
        writer.close()
    return {"ingested": ingested, "work_s": time.perf_counter() - start}


def run_beam(data_root: str, out: str, workers: int) -> dict:
    """ImageExampleGen's own pipeline on the DirectRunner, multi-processing."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components import image_example_gen as ieg

    start = time.perf_counter()
    options = PipelineOptions([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
    report = ieg.ingest(beam.Pipeline(options=options), data_root, SPLITS, os.path.join(out, "examples"),
                        os.path.join(out, "report"), 50_000_000)
    return {"ingested": report["ingested"], "work_s": time.perf_counter() - start}


def measure(variant: str, data_root: str, workers: int) -> tuple[float, float, int, int]:
    """(whole-process seconds, seconds after imports, peak MiB, images ingested)."""
    with tempfile.TemporaryDirectory() as out:
        seconds, peak_mib, stdout = run_measured(
            [sys.executable, "-m", "bench.ingestion", "--one", variant, "--data", data_root,
             "--out", out, "--workers", str(workers)])
    result = json.loads(stdout.strip().splitlines()[-1])
    return seconds, result["work_s"], peak_mib, result["ingested"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="N: runs at N and 2N images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--size", type=int, default=256, help="pixels per side of the test JPEGs")
    parser.add_argument("--one", choices=["loop", "beam"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # a measured child process
        import components  # noqa: F401
        result = run_loop(args.data, args.out) if args.one == "loop" else run_beam(args.data, args.out, args.workers)
        print(json.dumps(result))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (args.images, 2 * args.images):
            root = os.path.join(tmp, f"images-{count}")
            make_images(root, count, args.size)
            loop = measure("loop", root, args.workers)
            beam_ = measure("beam", root, args.workers)
            assert loop[3] == beam_[3] == count, (loop[3], beam_[3], count)
            rows.append((count, loop, beam_))

    print(f"ingestion: {args.workers} Beam workers (DirectRunner multi-processing) against a "
          f"single-process loop; JPEG {args.size}x{args.size}")
    print("whole process = interpreter start and imports included; work = after imports")
    print(f"{'images':>7} {'loop img/s':>11} {'beam img/s':>11} {'ratio':>6}   "
          f"{'work: loop':>11} {'beam':>7} {'ratio':>6}   {'peak MiB: loop':>15} {'beam':>6}")
    for count, (l_s, l_w, l_mib, _), (b_s, b_w, b_mib, _) in rows:
        print(f"{count:>7} {count / l_s:>11.1f} {count / b_s:>11.1f} {l_s / b_s:>6.2f}   "
              f"{count / l_w:>11.1f} {count / b_w:>7.1f} {l_w / b_w:>6.2f}   {l_mib:>15} {b_mib:>6}")
    (n1, _, b1), (n2, _, b2) = rows
    print(f"beam peak memory at {n2} / at {n1} images: {b2[2] / b1[2]:.2f}")


if __name__ == "__main__":
    main()

"""Ingestion throughput and memory: ImageExampleGen's Beam pipeline against a plain loop.

Both of the DirectRunner's parallel modes are measured: threads (the local
default: decoding, hashing and compression release the GIL) and processes.

The baseline is a single-process Python loop that reads, checks and writes the
same images the same way (the same inspect_image and to_example functions,
gzipped TFRecords). Both run on the same images in fresh processes, at N and
2N images, so the report shows the speed-up and whether peak memory stays
flat as the data doubles.

  bin/thaw-env python -m bench.ingestion --images 2000 --size 768
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


def make_images(root: str, count: int, size: int = 768) -> None:
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

    from components.ingest import image_records
    from components.ingest.image_example_gen import list_images

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


def run_beam(data_root: str, out: str, mode: str, workers: int) -> dict:
    """ImageExampleGen's own pipeline on the DirectRunner, in threads or processes."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.ingest import image_example_gen as ieg

    start = time.perf_counter()
    options = PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])
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
    parser.add_argument("--size", type=int, default=768, help="pixels per side of the test JPEGs")
    parser.add_argument("--one", choices=["loop", "multi_threading", "multi_processing"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # a measured child process
        import components  # noqa: F401
        if args.one == "loop":
            result = run_loop(args.data, args.out)
        else:
            result = run_beam(args.data, args.out, args.one, args.workers)
        print(json.dumps(result))
        return

    variants = ["loop", "multi_threading", "multi_processing"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (args.images, 2 * args.images):
            root = os.path.join(tmp, f"images-{count}")
            make_images(root, count, args.size)
            results = {v: measure(v, root, args.workers) for v in variants}
            for variant, (_, _, _, ingested) in results.items():
                assert ingested == count, (variant, ingested, count)
            rows.append((count, results))

    print(f"ingestion of JPEG {args.size}x{args.size}: ImageExampleGen's Beam pipeline (DirectRunner, "
          f"{args.workers} workers) against a single-process loop doing the same reads, checks and writes")
    print("work = images/s after imports; whole = the whole process, interpreter start and imports included")
    print(f"{'images':>7} {'variant':>17} {'work img/s':>11} {'x loop':>7} {'whole img/s':>12} {'x loop':>7} "
          f"{'peak MiB':>9}")
    for count, results in rows:
        loop_whole, loop_work = results["loop"][0], results["loop"][1]
        for variant, (whole, work, mib, _) in results.items():
            print(f"{count:>7} {variant:>17} {count / work:>11.1f} {loop_work / work:>7.2f} "
                  f"{count / whole:>12.1f} {loop_whole / whole:>7.2f} {mib:>9}")
    for variant in variants:
        small, large = rows[0][1][variant][2], rows[1][1][variant][2]
        print(f"{variant}: peak memory at {rows[1][0]} / at {rows[0][0]} images: {large / small:.2f}")


if __name__ == "__main__":
    main()

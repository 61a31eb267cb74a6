"""Ingestion throughput and memory: ImageExampleGen's Beam pipeline against a plain loop.

The baseline is a single-process Python loop that reads, checks and writes the
same images the same way (the same inspect_image and to_example functions,
gzipped TFRecords). Both run on the same images in fresh processes, at N and
2N images, so the report shows the speed-up and whether peak memory stays
flat as the data doubles.

  bin/thaw-env python -m bench.ingestion --images 2000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile

import numpy as np

from bench.memory import run_measured

SPLITS = [("train", 0.8), ("eval", 0.2)]


def make_images(root: str, count: int, size: int = 96) -> None:
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
    """The baseline: one process, one file at a time."""
    import tensorflow as tf

    from components import image_example_gen as ieg

    files, _ = ieg.list_images(data_root)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {name: tf.io.TFRecordWriter(os.path.join(out, f"{name}.gz"), options) for name, _ in SPLITS}
    ingested = 0
    for path, label in files:
        record = ieg.inspect_image(data_root, path, label, 50_000_000)
        if record["kind"] == "example":
            writers[ieg.split_for(record["sha256"], SPLITS)].write(ieg.to_example(record))
            ingested += 1
    for writer in writers.values():
        writer.close()
    return {"ingested": ingested}


def run_beam(data_root: str, out: str, workers: int) -> dict:
    """ImageExampleGen's own pipeline on the DirectRunner, multi-processing."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components import image_example_gen as ieg

    options = PipelineOptions([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
    report = ieg.ingest(beam.Pipeline(options=options), data_root, SPLITS, os.path.join(out, "examples"),
                        os.path.join(out, "report"), 50_000_000)
    return {"ingested": report["ingested"]}


def measure(variant: str, data_root: str, workers: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as out:
        seconds, peak_mib, stdout = run_measured(
            [sys.executable, "-m", "bench.ingestion", "--one", variant, "--data", data_root,
             "--out", out, "--workers", str(workers)])
    return seconds, peak_mib, json.loads(stdout.strip().splitlines()[-1])["ingested"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="N: runs at N and 2N images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
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
            make_images(root, count)
            loop_s, loop_mib, loop_n = measure("loop", root, args.workers)
            beam_s, beam_mib, beam_n = measure("beam", root, args.workers)
            assert loop_n == beam_n == count, (loop_n, beam_n, count)
            rows.append((count, count / loop_s, count / beam_s, loop_mib, beam_mib))

    print(f"ingestion, {args.workers} Beam workers (DirectRunner multi-processing), JPEG 96x96")
    print(f"{'images':>7} {'loop img/s':>11} {'beam img/s':>11} {'beam/loop':>10} {'loop MiB':>9} {'beam MiB':>9}")
    for count, loop_rate, beam_rate, loop_mib, beam_mib in rows:
        print(f"{count:>7} {loop_rate:>11.1f} {beam_rate:>11.1f} {beam_rate / loop_rate:>10.2f} "
              f"{loop_mib:>9} {beam_mib:>9}")
    (n1, *_, b1), (n2, *_, b2) = rows
    print(f"beam peak memory at {n2} / at {n1} images: {b2 / b1:.2f}")


if __name__ == "__main__":
    main()

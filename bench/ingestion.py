"""Ingestion throughput and memory: ImageExampleGen's Beam pipeline against a plain loop.

The baseline ("loop") is a single-process Python loop that reads, checks and
writes the same images the way ImageExampleGen did before issue 18: the same
inspect_image and to_example functions, and TensorFlow's gzip TFRecordWriter
at its default deflate level (6). Since issue 18 the pipeline writes its gzip
files as stored blocks (components/ingest/tfrecord_files.py): images are
compressed already and deflating them again was the largest share of the
work. So the loop's per-image work is cheaper in the pipeline; to say what is
owed to Beam, "loop_stored" is the same loop writing stored gzip too, and
each pipeline row has a ratio against both loops.

Pipeline variants, all on the DirectRunner with --workers workers:
multi_threading (the local default), multi_threading_deflate (the same with
the Examples deflated at level 6, as before issue 18) and, when named in
--variants, multi_processing.
Every variant runs in a fresh process at N and 2N images (--rounds times,
interleaved; the fastest round is reported, and the largest peak memory).
Two peaks: the whole process tree's, sampled from /proc every 50 ms, imports
included (about 200 MiB of TensorFlow's comes and goes between runs of the
same variant at start-up), and the work's, the kernel's exact peak (VmHWM)
after the child resets it once its imports are done.

Checked, not only printed (the exit status is 1 when one fails):
- every variant ingests every image, and writes the same examples (the
  records of each split, byte for byte, whatever their order);
- memory is flat: each variant's peak resident memory during the work at 2N
  images is at most --memory-limit (1.1) times its peak at N (for
  multi_processing, whose workers are other processes: the sampled peak of
  its process tree).
The throughput ratios are printed and written, never asserted: the machine
may be shared (the load average is reported next to them).

The profile: one process times each per-image stage (read, header, decode,
hash, serialize, frame, deflate at level 6 or stored) on the N images, in
CPU seconds; each variant's CPU seconds, less its stages times how often it
runs them, is Beam's own work (and for the loop, TFRecordWriter's). Beam's fixed cost is measured on 10 images.

  bin/thaw-env python -m bench.ingestion --images 500 --json build/bench/ingestion.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

from bench.memory import run_measured

SPLITS = [("train", 0.8), ("eval", 0.2)]
LOOPS = ["loop", "loop_stored"]
PIPELINES = ["multi_threading", "multi_threading_deflate", "multi_processing"]
DEFLATE_BEFORE = 6  # zlib's default level: Beam's WriteToTFRecord and TensorFlow's GZIP writer
FIXED_IMAGES = 10


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


def run_loop(data_root: str, out: str, level: int | None = None) -> dict:
    """The baseline: one process, one file at a time, the same checks and records.
    ``level`` None: TensorFlow's GZIP writer at its default level, as ImageExampleGen wrote before."""
    import tensorflow as tf

    from components.ingest import image_records
    from components.ingest.image_example_gen import list_images

    start = time.perf_counter()
    items, _ = list_images(data_root)
    options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=level)
    writers = {}
    for name, _ in SPLITS:
        os.makedirs(os.path.join(out, f"Split-{name}"), exist_ok=True)
        writers[name] = tf.io.TFRecordWriter(os.path.join(out, f"Split-{name}", "data.gz"), options)
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


def run_beam(data_root: str, out: str, mode: str, workers: int, level: int | None = None) -> dict:
    """ImageExampleGen's own pipeline on the DirectRunner, in threads or processes."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.ingest import image_example_gen as ieg

    if level is not None:
        ieg.EXAMPLES_DEFLATE_LEVEL = level
    start = time.perf_counter()
    options = PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])
    report = ieg.ingest(beam.Pipeline(options=options), data_root, SPLITS, out, os.path.join(out, "report"),
                        50_000_000)
    return {"ingested": report["ingested"], "work_s": time.perf_counter() - start}


def examples_digest(out: str) -> dict[str, str]:
    """Per split, a hash of its records' hashes in sorted order: equal when the records are.
    Read here in the parent with gzip and TFRecord's framing, so no child's memory holds it."""
    import glob
    import gzip
    import struct

    digests = {}
    for name, _ in SPLITS:
        hashes = []
        for path in glob.glob(os.path.join(out, f"Split-{name}", "*.gz")):
            with gzip.open(path, "rb") as f:
                while head := f.read(12):
                    (length,) = struct.unpack("<Q", head[:8])
                    hashes.append(hashlib.sha256(f.read(length)).digest())
                    f.read(4)
        digests[name] = hashlib.sha256(b"".join(sorted(hashes))).hexdigest()
    return digests


def _peak_rss_mib() -> int:
    """This process's peak resident memory (VmHWM) since it was last reset."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM:"))


def run_one(variant: str, data_root: str, out: str, workers: int) -> dict:
    """One measured child: the variant's work, timed in seconds and CPU seconds, then its output's digest."""
    import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
    from components.ingest import image_example_gen  # noqa: F401  (imports are not the work)

    with open("/proc/self/clear_refs", "w") as f:  # the peak from here on: the work's, not the imports'
        f.write("5")
    cpu = time.process_time()
    if variant == "loop":
        result = run_loop(data_root, out)
    elif variant == "loop_stored":
        result = run_loop(data_root, out, level=0)
    elif variant == "multi_threading_deflate":
        result = run_beam(data_root, out, "multi_threading", workers, level=DEFLATE_BEFORE)
    else:
        result = run_beam(data_root, out, variant, workers)
    result["work_cpu_s"] = time.process_time() - cpu  # this process's threads; not multi_processing's workers
    result["work_peak_mib"] = _peak_rss_mib()  # idem
    return result


def profile_stages(data_root: str, fixed_root: str, workers: int) -> dict:
    """CPU seconds per image of each stage, one process, one image at a time; and Beam's fixed cost."""
    import zlib

    from PIL import Image

    import components  # noqa: F401
    from components.ingest import image_records, tfrecord_files
    from components.ingest.image_example_gen import list_images

    items, _ = list_images(data_root)
    stages = dict.fromkeys(["read", "header", "decode", "hash", "serialize", "frame", "deflate_6", "stored"], 0.0)

    def timed(stage, fn, *args):
        start = time.thread_time()
        value = fn(*args)
        stages[stage] += time.thread_time() - start
        return value

    def header(data):
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format, probe.size

    def decode(data):
        with Image.open(io.BytesIO(data)) as image:
            image.load()

    def deflate(level, data):
        gzip = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return gzip.compress(data) + gzip.flush()

    for uri, shown, label in items:
        data = timed("read", image_records.read, uri, 64 << 20)
        fmt, (width, height) = timed("header", header, data)
        timed("decode", decode, data)
        sha = timed("hash", lambda d: hashlib.sha256(d).hexdigest(), data)
        example = timed("serialize", image_records.to_example, {
            "image_bytes": data, "label": label, "height": height, "width": width, "channels": 3,
            "format": fmt.lower(), "path": shown, "sha256": sha, "reencoded": ""})
        timed("frame", tfrecord_files.frame, example)
        timed("deflate_6", deflate, DEFLATE_BEFORE, example)
        timed("stored", deflate, tfrecord_files.STORED, example)
    with tempfile.TemporaryDirectory() as out:  # Beam's cost on next to nothing: start, stages, finalizing
        fixed = run_one("multi_threading", fixed_root, out, workers)
    return {"per_image_cpu_s": {k: v / len(items) for k, v in stages.items()}, "images": len(items),
            "fixed_images": FIXED_IMAGES, "fixed_work_s": fixed["work_s"], "fixed_cpu_s": fixed["work_cpu_s"]}


# How many times each variant runs each stage per image (the pipeline, like the loop, reads and hashes each
# file once: it writes an image's example as it checks it).
STAGE_COUNTS = {
    "loop": {"read": 1, "header": 1, "decode": 1, "hash": 1, "serialize": 1, "frame": 1, "deflate_6": 1},
    "loop_stored": {"read": 1, "header": 1, "decode": 1, "hash": 1, "serialize": 1, "frame": 1, "stored": 1},
    "multi_threading": {"read": 1, "header": 1, "decode": 1, "hash": 1, "serialize": 1, "frame": 1, "stored": 1},
    "multi_threading_deflate": {"read": 1, "header": 1, "decode": 1, "hash": 1, "serialize": 1, "frame": 1,
                                "deflate_6": 1},
}


def shares(profile: dict, variant: str, images: int, cpu_s: float) -> dict[str, float]:
    """Fractions of a variant's CPU seconds: each stage, and the rest (Beam's own, or TFRecordWriter's)."""
    per_image = profile["per_image_cpu_s"]
    parts = {stage: count * per_image[stage] * images / cpu_s for stage, count in STAGE_COUNTS[variant].items()}
    parts["rest"] = 1 - sum(parts.values())
    return parts


def measure(variant: str, data_root: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        seconds, peak_mib, stdout = run_measured(
            [sys.executable, "-m", "bench.ingestion", "--one", variant, "--data", data_root,
             "--out", out, "--workers", str(workers)])
        examples = examples_digest(out)
    return {**json.loads(stdout.strip().splitlines()[-1]), "variant": variant, "whole_s": seconds, "peak_mib": peak_mib,
            "examples": examples}


def checked_peak(run: dict) -> int:
    """The peak the memory check compares: the work's own (VmHWM reset after the imports) in one process;
    multi_processing's workers are other processes, so for it the sampled peak of the whole tree."""
    return run["peak_mib"] if run.get("variant") == "multi_processing" else run["work_peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="N: runs at N and 2N images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--size", type=int, default=768, help="pixels per side of the test JPEGs")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant and N, interleaved")
    parser.add_argument("--variants", nargs="+", choices=LOOPS[1:] + PIPELINES, default=LOOPS[1:] + PIPELINES[:2],
                        help="besides the loop, which always runs (multi_processing only when named: its workers "
                             "take minutes and gigabytes to start here)")
    parser.add_argument("--memory-limit", type=float, default=1.1, help="largest peak at 2N / peak at N allowed")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", choices=LOOPS + PIPELINES + ["profile"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--fixed-data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one == "profile":
        print(json.dumps(profile_stages(args.data, args.fixed_data, args.workers)))
        return
    if args.one:  # a measured child process
        print(json.dumps(run_one(args.one, args.data, args.out, args.workers)))
        return

    variants = ["loop", *dict.fromkeys(args.variants)]
    began, load_start = time.perf_counter(), os.getloadavg()
    counts = (args.images, 2 * args.images)
    runs = {(count, v): [] for count in counts for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {count: os.path.join(tmp, f"images-{count}") for count in (FIXED_IMAGES, *counts)}
        for count, root in roots.items():
            make_images(root, count, args.size)
        _, _, stdout = run_measured([sys.executable, "-m", "bench.ingestion", "--one", "profile", "--data",
                                     roots[args.images], "--fixed-data", roots[FIXED_IMAGES],
                                     "--workers", str(args.workers)])
        profile = json.loads(stdout.strip().splitlines()[-1])
        for _ in range(args.rounds):
            for count in counts:
                for variant in variants:
                    runs[count, variant].append(measure(variant, roots[count], args.workers))
    load_end = os.getloadavg()

    failures = []
    rows = []
    for count in counts:
        best = {v: min(runs[count, v], key=lambda r: r["work_s"]) for v in variants}
        for variant in variants:
            r = best[variant]
            row = {"images": count, "variant": variant, "ingested": r["ingested"], "work_s": r["work_s"],
                   "work_cpu_s": r["work_cpu_s"], "whole_s": r["whole_s"], "images_per_s": count / r["work_s"],
                   "x_loop": best["loop"]["work_s"] / r["work_s"],
                   "cpu_x_loop": best["loop"]["work_cpu_s"] / r["work_cpu_s"],
                   "whole_x_loop": best["loop"]["whole_s"] / r["whole_s"],
                   "peak_mib": max(x["peak_mib"] for x in runs[count, variant]),
                   "work_peak_mib": max(map(checked_peak, runs[count, variant])),
                   "rounds_work_s": [x["work_s"] for x in runs[count, variant]],
                   "rounds_peak_mib": [x["peak_mib"] for x in runs[count, variant]],
                   "rounds_work_peak_mib": [checked_peak(x) for x in runs[count, variant]]}
            if "loop_stored" in best:
                row["x_loop_stored"] = best["loop_stored"]["work_s"] / r["work_s"]
            if variant in STAGE_COUNTS and count == args.images:
                row["cpu_shares"] = shares(profile, variant, count, r["work_cpu_s"])
            rows.append(row)
            if r["ingested"] != count:
                failures.append(f"{variant} ingested {r['ingested']} of {count} images")
            if any(x["examples"] != best["loop"]["examples"] for x in runs[count, variant]):
                failures.append(f"{variant} at {count} images wrote other examples than the loop")
    memory = {}
    for variant in variants:
        small, large = (max(map(checked_peak, runs[count, variant])) for count in counts)
        memory[variant] = {"peak_mib_n": small, "peak_mib_2n": large, "ratio": large / small,
                           "ok": large <= args.memory_limit * small}
        if not memory[variant]["ok"]:
            failures.append(f"{variant}: peak memory at {counts[1]} images is {large} MiB, "
                            f"{large / small:.2f}x its {small} MiB at {counts[0]} (limit {args.memory_limit}x)")

    print(f"ingestion of JPEG {args.size}x{args.size}: ImageExampleGen's Beam pipeline (DirectRunner, "
          f"{args.workers} workers) against a single-process loop doing the same reads, checks and writes; "
          f"{os.cpu_count()} CPUs, load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end")
    print("work = after imports; x loop: against the loop as ImageExampleGen wrote before (deflate 6); "
          "x stored: against the loop writing stored gzip like the pipeline now; whole = whole process")
    print("cpu s: CPU seconds of the work, all threads of the variant's process (not multi_processing's workers); "
          "cpu x loop: the loop's CPU seconds over the variant's")
    print(f"{'images':>7} {'variant':>24} {'work img/s':>11} {'x loop':>7} {'x stored':>9} {'cpu s':>7} "
          f"{'cpu x loop':>10} {'whole img/s':>12} {'x loop':>7} {'peak MiB':>9} {'work peak':>9}")
    for row in rows:
        stored = f"{row['x_loop_stored']:>9.2f}" if "x_loop_stored" in row else f"{'':>9}"
        print(f"{row['images']:>7} {row['variant']:>24} {row['images_per_s']:>11.1f} {row['x_loop']:>7.2f} "
              f"{stored} {row['work_cpu_s']:>7.2f} {row['cpu_x_loop']:>10.2f} {row['images'] / row['whole_s']:>12.1f} "
              f"{row['whole_x_loop']:>7.2f} {row['peak_mib']:>9} {row['work_peak_mib']:>9}")
    print()
    per_image = profile["per_image_cpu_s"]
    print(f"profile: CPU ms per image and stage, one process ({profile['images']} images): "
          + ", ".join(f"{k} {1000 * v:.2f}" for k, v in per_image.items()))
    print(f"Beam's fixed cost ({FIXED_IMAGES} images, multi_threading): {profile['fixed_work_s']:.2f} s, "
          f"{profile['fixed_cpu_s']:.2f} CPU s")
    print(f"shares of each variant's CPU seconds at {args.images} images (rest: Beam's own work, or the loop's "
          "TFRecordWriter and Python):")
    for row in rows:
        if "cpu_shares" in row:
            print(f"  {row['variant']:>24}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["cpu_shares"].items()))
    print()
    for variant, m in memory.items():
        print(f"{variant}: peak memory of the work at {counts[1]} / at {counts[0]} images: {m['peak_mib_2n']} / "
              f"{m['peak_mib_n']} MiB = {m['ratio']:.2f} ({'ok' if m['ok'] else 'OVER'} <= {args.memory_limit})")
    total_s = time.perf_counter() - began
    print(f"total {total_s:.0f}s")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("one", "json", "data", "out",
                                                                                   "fixed_data")},
                       "cpus": os.cpu_count(), "load_average": {"start": load_start, "end": load_end},
                       "rows": rows, "memory": memory, "profile": profile, "failures": failures,
                       "passed": not failures, "total_s": total_s}, f, indent=2)
    if failures:
        sys.exit("bench.ingestion failed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()

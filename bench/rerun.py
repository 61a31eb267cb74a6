"""No work redone: a re-run on unchanged data, and one with 5% new files, against the first run.

What is timed is the data side of a scheduled run, as the pipeline runs it:
DataFingerprint (list, hash what is not on record, compare with the served
model's fingerprint) and, when it says the data changed, ImageExampleGen's
Beam ingestion (read, check, hash, encode, write; a file unchanged since the
last ingestion is not read: its tf.Example is copied from that run's
examples). Training is left out: on unchanged data it does not run at all,
and otherwise it costs what it costs. Every run's outputs are under one
pipeline root, as the pipeline's are, where each finds the last one's records.

  first      no record yet: every file hashed, then ingested
  unchanged  the same files: every hash reused, the run stops (nothing ingested)
  5% new     5% more files: only those hashed; only those ingested, the rest copied
  5% new, no reuse   the same data again with ingestion's reuse off (as before it existed), for comparison

The ratios are each re-run's wall time over the first run's (and, steadier on a
shared machine, its CPU seconds: the FnApiRunner runs in this process); all four in one
process, on the same images, in the order above. The four are made
``--repeats`` times, each time on fresh images, and the medians of the ratios
are reported (each trial's too): on a shared 2-core machine one trial is noisy.
An untimed ingestion of 20 images first pays Beam's start-up in this process,
so no first run carries it.

  bin/thaw-env python -m bench.rerun --images 1000 --json rerun.json
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench.ingestion import make_images

SPLITS = [("train", 0.7), ("validation", 0.15), ("test", 0.15)]


def one_run(data: str, work: str, name: str, served: dict | None, reuse: bool = True) -> dict:
    """DataFingerprint then, unless unchanged, the ingestion (copying unchanged files' examples from the
    last ingestion, unless not ``reuse``); returns its times and the fingerprint record."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.ingest import fingerprint as fp
    from components.ingest.image_example_gen import ingest

    settings = fp.settings(json.dumps({"data": {"splits": dict(SPLITS)}}), "", "")
    began, cpu = time.perf_counter(), time.process_time()
    record = fp.fingerprint_data(data, [], settings, os.path.join(work, "root"), served, False, False,
                                 os.path.join(work, "root", name, "fingerprint"))
    fingerprinted = time.perf_counter() - began
    ingested, report = 0.0, {"reuse": {"reused": 0, "read": 0}, "ingested": 0}
    if record["train"]:
        start = time.perf_counter()
        pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
        root = os.path.join(work, "root")
        report = ingest(pipeline, data, SPLITS, os.path.join(root, name, "examples"),
                        os.path.join(root, name, "report"), max_pixels=50_000_000,
                        pipeline_root=root if reuse else None)
        ingested = time.perf_counter() - start
    return {"seconds": round(fingerprinted + ingested, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "fingerprint_s": round(fingerprinted, 3),
            "ingestion_s": round(ingested, 3), "files": record["files"], "hashed": record["hashed"],
            "reused": record["reused"], "stopped_early": not record["train"],
            "examples_copied": report["reuse"]["reused"], "files_read": report["reuse"]["read"],
            "ingested": report["ingested"], "record": record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images in the first run (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--new", type=float, default=0.05, help="share of new files (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--repeats", type=int, default=3,
                        help="times the three runs are made, each on fresh images; the ratios are the medians "
                             "(default: %(default)s)")
    args = parser.parse_args()

    warm_up()
    trials = [trial(args) for _ in range(args.repeats)]
    # The details shown are those of the trial whose 5%-new ratio is the median.
    first, unchanged, five, extra, _, _, no_reuse, _ = sorted(trials, key=lambda t: t[5])[len(trials) // 2]
    result = {
        "images": args.images, "size": args.size, "new_files": extra, "cpus": os.cpu_count(), "repeats": args.repeats,
        "first": first, "unchanged": unchanged, "five_percent_new": five, "five_percent_new_no_reuse": no_reuse,
        "unchanged_over_first": statistics.median(t[4] for t in trials),
        "five_percent_new_over_first": statistics.median(t[5] for t in trials),
        "five_percent_new_no_reuse_over_first": statistics.median(t[7] for t in trials),
        # CPU seconds of this process (the FnApiRunner runs in it): steadier than wall time on a shared machine.
        "cpu_five_percent_new_over_first": statistics.median(t[2]["cpu_s"] / t[0]["cpu_s"] for t in trials),
        "cpu_five_percent_new_no_reuse_over_first": statistics.median(t[6]["cpu_s"] / t[0]["cpu_s"] for t in trials),
        "each_trial": [{"unchanged_over_first": t[4], "five_percent_new_over_first": t[5],
                        "five_percent_new_no_reuse_over_first": t[7]} for t in trials],
    }
    for name, run in (("first", first), ("unchanged", unchanged), (f"{extra} new files", five),
                      (f"{extra} new files, ingestion's reuse off", no_reuse)):
        print(f"{name}: {run['seconds']:.2f} s, CPU {run['cpu_s']:.2f} s (fingerprint {run['fingerprint_s']:.2f} s, ingestion "
              f"{run['ingestion_s']:.2f} s); {run['files']} files, {run['hashed']} hashed, {run['reused']} reused"
              + ("; stopped early" if run["stopped_early"] else
                 f"; ingestion read {run['files_read']} files, copied {run['examples_copied']} examples"))
    print(f"re-run on unchanged data / first run: {result['unchanged_over_first']:.4f} (median of {args.repeats}: "
          + ", ".join(f"{t[4]:.4f}" for t in trials) + ")")
    print(f"re-run with {args.new:.0%} new files / first run: {result['five_percent_new_over_first']:.4f} (median of "
          f"{args.repeats}: " + ", ".join(f"{t[5]:.4f}" for t in trials) + ")")
    print(f"the same with ingestion's reuse off / first run: {result['five_percent_new_no_reuse_over_first']:.4f} "
          f"(median of {args.repeats}: " + ", ".join(f"{t[7]:.4f}" for t in trials) + ")")
    print(f"in CPU seconds: 5% new / first run {result['cpu_five_percent_new_over_first']:.4f}, with reuse off "
          f"{result['cpu_five_percent_new_no_reuse_over_first']:.4f} (medians)")
    for first, unchanged, five, extra, _, _, no_reuse, _ in trials:
        if unchanged["hashed"] or not unchanged["stopped_early"] or five["hashed"] != extra:
            sys.exit(f"unexpected: the unchanged re-run hashed {unchanged['hashed']} files (stopped early: "
                     f"{unchanged['stopped_early']}); the 5% re-run hashed {five['hashed']} of {extra} new files")
        if five["examples_copied"] != first["ingested"] or five["files_read"] != extra or five["ingested"] != (
                no_reuse["ingested"]):
            sys.exit(f"unexpected: the 5% re-run copied {five['examples_copied']} examples of the first run's "
                     f"{first['ingested']} and read {five['files_read']} files for {extra} new ones; it ingested "
                     f"{five['ingested']}, without reuse {no_reuse['ingested']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def warm_up() -> None:
    """One untimed ingestion of a few images, so Beam's start-up in this process is in no first run's time."""
    work = tempfile.mkdtemp(prefix="thaw-bench-rerun-warm-")
    try:
        make_images(os.path.join(work, "data"), 20, 32)
        one_run(os.path.join(work, "data"), work, "warm", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def trial(args) -> tuple:
    """The runs on fresh images: (first, unchanged, 5% new, new files, the two ratios, 5% new without
    ingestion's reuse, and its ratio)."""
    work = tempfile.mkdtemp(prefix="thaw-bench-rerun-")
    try:
        data = os.path.join(work, "data")
        make_images(data, args.images, args.size)
        time.sleep(2.5)  # past fingerprint._RACY_NS: files written this moment have their times recorded
        first = one_run(data, work, "first", None)
        # The first run's model is served now: what its push record says of its data.
        rec = first["record"]
        served = {"model": "bench", "why": "the first run's model", "data_fingerprint": rec["fingerprint"],
                  "data_digest": rec["data_digest"], "settings_digest": rec["settings_digest"]}
        unchanged = one_run(data, work, "unchanged", served)
        more = os.path.join(work, "more")  # 5% new images, distinct from the first ones (another noise draw)
        extra = max(1, round(args.images * args.new))
        make_images(more, args.images + extra, args.size)
        for label in os.listdir(more):
            for name in sorted(os.listdir(os.path.join(more, label))):
                if int(name.split(".")[0]) >= args.images:
                    os.makedirs(os.path.join(data, label), exist_ok=True)
                    shutil.copy(os.path.join(more, label, name), os.path.join(data, label, f"new-{name}"))
        five = one_run(data, work, "new_files", served)
        no_reuse = one_run(data, work, "new_files_no_reuse", served, reuse=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for run in (first, unchanged, five, no_reuse):
        run.pop("record")
    return (first, unchanged, five, extra, round(unchanged["seconds"] / first["seconds"], 4),
            round(five["seconds"] / first["seconds"], 4), no_reuse, round(no_reuse["seconds"] / first["seconds"], 4))


if __name__ == "__main__":
    main()

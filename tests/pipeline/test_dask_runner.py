"""Beam on Dask: the runner beam.runner: dask names, on a LocalCluster of two worker processes over TCP.

Ingestion (ImageExampleGen's Beam pipeline) runs on it and must write what the FnApiRunner writes: the
same examples in each split by content hash, the same report. The scheduler's task stream must show the
work ran in both worker processes, so a runner that quietly ran it in this process would fail.
"""

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from distributed import Client, LocalCluster, get_task_stream

from components.ingest import image_example_gen as ieg
from pipeline import config as config_lib

from tests.support.images import encode, noise

SPLITS = [("train", 0.6), ("validation", 0.2), ("test", 0.2)]


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded worker processes on loopback, as `dask scheduler` and two
    `dask worker`s on separate machines would be."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local, set_as_default=False) as client:
        yield local, client


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three classes of real images, with what ingestion must judge across workers: a copy, the same image
    under two labels, a file that is no image and one cut short."""
    root = tmp_path_factory.mktemp("images")
    files = {f"{label}/{i}.png": encode(noise("RGB", seed=100 * k + i), "PNG")
             for k, label in enumerate(("cat", "dog", "owl")) for i in range(12)}
    files.update({
        "cat/copy-of-0.png": files["cat/0.png"],
        "dog/also-owl.png": files["owl/3.png"],
        "owl/notes.jpg": b"not pixels\n",
        "dog/cut.png": encode(noise("RGB", size=(100, 100), seed=7), "PNG")[:300],
        "owl/photo.jpg": encode(noise("RGB", size=(40, 30), seed=8), "JPEG"),
    })
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def ingest(args: list[str], data: Path, out: Path) -> dict:
    return ieg.ingest(beam.Pipeline(options=PipelineOptions(args)), str(data), SPLITS, str(out / "examples"),
                      str(out / "report"), max_pixels=1_000_000, min_side=8)


def examples_by_split(out: Path) -> dict[str, list[str]]:
    """Each split's examples as the sorted SHA-256 of their content (serialized deterministically)."""
    found = {}
    for split in sorted((out / "examples").iterdir()):
        records = [hashlib.sha256(tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True))
                   .hexdigest() for path in sorted(split.glob("*.gz"))
                   for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
        found[split.name] = sorted(records)
    return found


def test_ingestion_on_two_dask_workers_writes_what_the_fnapi_runner_writes(cluster, images, tmp_path):
    local, client = cluster
    config = config_lib.load(None, {"beam.runner": "dask", "beam.dask_address": local.scheduler_address,
                                    # the images are few: four bundles, so both workers get some
                                    "beam_pipeline_args": ["--dask_npartitions=4"]})
    expected = ingest(config_lib.ThawConfig().beam_args(), images, tmp_path / "fnapi")
    with get_task_stream(client) as tasks:
        report = ingest(config.beam_args(), images, tmp_path / "dask")

    assert report == expected
    assert report["ingested"] == 36 and sum(report["splits"].values()) == 36  # owl/3.png is in a label conflict
    assert {q["code"] for q in report["quarantined"]} == {"duplicate", "label_conflict", "not_an_image", "truncated"}
    on_dask = examples_by_split(tmp_path / "dask")
    assert on_dask == examples_by_split(tmp_path / "fnapi")
    assert [len(on_dask[f"Split-{name}"]) for name, _ in SPLITS] == [report["splits"][n] for n, _ in SPLITS]
    # The work ran in the two worker processes, not here.
    per_worker = {}
    for task in tasks.data:
        per_worker[task["worker"]] = per_worker.get(task["worker"], 0) + 1
    assert set(per_worker) == set(local.scheduler_info["workers"]), per_worker
    assert min(per_worker.values()) >= 10, per_worker
    # Grouping by content shuffled between the workers by tasks, never through one process's disk (partd):
    # on a cluster of several machines, the other workers could not read it.
    keys = [str(task["key"]) for task in tasks.data]
    assert any("shuffle" in key for key in keys) and not any("partd" in key for key in keys)
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_ingestion_reusing_the_last_examples_on_dask_writes_what_a_full_ingestion_writes(cluster, images, tmp_path):
    """The copy path (components/ingest/reuse.py) on the two workers: the last run's examples read there,
    matched to the files unchanged, and written with the new files' as a full ingestion writes them."""
    local, _ = cluster
    args = config_lib.load(None, {"beam.runner": "dask", "beam.dask_address": local.scheduler_address,
                                  "beam_pipeline_args": ["--dask_npartitions=4"]}).beam_args()
    data, root = tmp_path / "data", tmp_path / "root"
    shutil.copytree(images, data)
    time.sleep(2.1)  # older than the window in which a file's times are not trusted (image_records.RACY_NS)

    def run(out: Path, pipeline_root) -> dict:
        return ieg.ingest(beam.Pipeline(options=PipelineOptions(args)), str(data), SPLITS, str(out / "examples"),
                          str(out / "report"), max_pixels=1_000_000, min_side=8, pipeline_root=pipeline_root)

    run(root / "first", str(root))
    for i in range(3):
        (data / "owl" / f"new-{i}.png").write_bytes(encode(noise("RGB", seed=900 + i), "PNG"))
    (data / "cat" / "5.png").unlink()
    again = run(root / "again", str(root))
    full = ingest(config_lib.ThawConfig().beam_args(), data, tmp_path / "full")
    assert again["reuse"]["reused"] == 35 and again["reuse"]["read"] == 3 + 5  # new, and quarantined before
    assert {k: v for k, v in again.items() if k != "reuse"} == {k: v for k, v in full.items() if k != "reuse"}
    assert examples_by_split(root / "again") == examples_by_split(tmp_path / "full")


def test_the_runner_keeps_every_branch_each_output_apart_side_inputs_once_and_reads(cluster, tmp_path):
    """Each of the stock DaskRunner's four defects (pipeline/dask_runner.py), on a pipeline small enough to
    read: three sinks, a Partition, a side input, and a read of what was written."""
    local, _ = cluster
    args = config_lib.load(None, {"beam.runner": "dask", "beam.dask_address": local.scheduler_address,
                                  "beam_pipeline_args": ["--dask_npartitions=3"]}).beam_args()
    out = str(tmp_path)
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        numbers = p | beam.Create(list(range(20)))
        even, odd = numbers | beam.Partition(lambda x, n: x % 2, 2)
        _ = even | "Even" >> beam.io.WriteToText(out + "/even")
        _ = odd | "Odd" >> beam.io.WriteToText(out + "/odd")
        count = numbers | beam.combiners.Count.Globally()
        _ = (numbers | "WithCount" >> beam.Map(lambda x, n: x * 100 + n, beam.pvalue.AsSingleton(count))
             | "All" >> beam.io.WriteToText(out + "/all"))

    def lines(prefix: str) -> list[int]:
        return sorted(int(line) for path in tmp_path.glob(f"{prefix}-*-of-*") for line in path.read_text().split())

    assert lines("even") == list(range(0, 20, 2))
    assert lines("odd") == list(range(1, 20, 2))
    assert lines("all") == [x * 100 + 20 for x in range(20)]
    assert not list(tmp_path.glob("beam-temp-*")), "a sink left its temporary files"

    with beam.Pipeline(options=PipelineOptions(args)) as p:
        _ = (p | beam.io.ReadFromText(out + "/all-*") | beam.Map(int) | beam.CombineGlobally(sum)
             | beam.Map(str) | beam.io.WriteToText(out + "/sum"))
    assert lines("sum") == [sum(x * 100 + 20 for x in range(20))]



def test_workers_know_the_keras_objects_this_process_registered(cluster, tmp_path):
    """The Evaluator loads the candidate on the workers; its optimizer's schedule is Thaw's own, registered
    when the Trainer imported it in the step's process. A worker that lacks it fails to load the model."""
    import components.train.optimizers  # noqa: F401  (registers thaw>WarmupCosine here, as the Trainer does)

    def known(_) -> str:  # local, so it travels by value: the worker imports nothing of Thaw's for it
        import tf_keras

        return str("thaw>WarmupCosine" in tf_keras.saving.get_custom_objects())

    local, _ = cluster
    args = config_lib.load(None, {"beam.runner": "dask", "beam.dask_address": local.scheduler_address,
                                  "beam_pipeline_args": ["--dask_npartitions=2"]}).beam_args()
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        _ = p | beam.Create([1, 2, 3, 4]) | beam.Map(known) | beam.io.WriteToText(str(tmp_path / "known"))
    lines = [line for path in tmp_path.glob("known-*") for line in path.read_text().split()]
    assert lines == ["True"] * 4

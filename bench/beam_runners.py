"""Each Beam step of the DAG on the FnApiRunner and on Dask: ran or not, same output or not, wall time.

Takes a finished run (``thaw run --output DIR`` on the FnApiRunner) and replays its Beam steps with the
very inputs and execution properties its metadata store recorded: ImageExampleGen's ingestion, then the
stock StatisticsGen, Transform and Evaluator executors, each on

- ``fnapi``: Beam's FnApiRunner, in this process (the reference);
- ``dask``: Thaw's repaired DaskRunner (beam.runner: dask, pipeline/dask_runner.py);
- ``dask-beam``: Beam 2.77's own apache_beam.runners.dask.dask_runner.DaskRunner,

the Dask ones on a distributed.LocalCluster of two single-threaded worker processes over TCP on loopback.
Each output is compared with the FnApiRunner's: examples by content hash (ingestion; Transform's
transformed examples), statistics protos (StatisticsGen; TFDV's quantiles are approximate, so a histogram
boundary may differ in float tolerance), the transform graph's vocabulary, metrics within 1e-6 and the
blessing (Evaluator).

  bin/thaw run --output /tmp/run                      # the reference run, on the FnApiRunner
  bin/thaw-env python -m bench.beam_runners --run /tmp/run --json /tmp/beam-runners.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback

RUNNERS = {
    "fnapi": ["--runner=FnApiRunner"],
    "dask": ["--runner=pipeline.dask_runner.DaskRunner"],
    "dask-beam": ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"],
}
STEPS = ("ImageExampleGen", "StatisticsGen", "Transform", "Evaluator")


def recorded(run_dir: str) -> dict:
    """Per component ID: its recorded inputs and outputs (TFX artifacts) and execution properties."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(run_dir, "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    found = {}
    for execution in store.get_executions():
        contexts = store.get_contexts_by_execution(execution.id)
        node = next((c.name.rsplit(".", 1)[-1] for c in contexts
                     if store.get_context_types_by_id([c.type_id])[0].name == "node"), None)
        if node not in STEPS:
            continue
        properties = {}
        for key, value in execution.custom_properties.items():
            if key.startswith("__"):
                continue
            kind = value.WhichOneof("value")
            properties[key] = getattr(value, kind) if kind in ("string_value", "int_value", "double_value") else None
        inputs, outputs = {}, {}
        for event in store.get_events_by_execution_ids([execution.id]):
            artifact = store.get_artifacts_by_id([event.artifact_id])[0]
            kind = store.get_artifact_types_by_id([artifact.type_id])[0]
            side = inputs if event.type == event.INPUT else outputs if event.type == event.OUTPUT else None
            if side is not None:
                side.setdefault(event.path.steps[0].key, []).append(artifact_utils.deserialize_artifact(kind, artifact))
        found[node] = {"inputs": inputs, "outputs": outputs, "properties": properties}
    return found


def fresh_outputs(outputs: dict, root: str) -> dict:
    """Copies of the recorded output artifacts, pointing under ``root``."""
    import copy

    fresh = {}
    for key, artifacts in outputs.items():
        fresh[key] = []
        for i, artifact in enumerate(artifacts):
            new = copy.deepcopy(artifact)
            new.uri = os.path.join(root, key, str(i))
            os.makedirs(new.uri, exist_ok=True)
            fresh[key].append(new)
    return fresh


def executor_of(step: str):
    if step == "StatisticsGen":
        from tfx.components.statistics_gen.executor import Executor
    elif step == "Transform":
        from tfx.components.transform.executor import Executor
    elif step == "Evaluator":
        from components.gate.evaluator import Executor
    else:
        raise ValueError(step)
    return Executor


def run_step(step: str, record: dict, beam_args: list[str], out: str) -> dict:
    """Runs one step's executor on ``beam_args`` into ``out``; its output artifacts' URIs."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    if step == "ImageExampleGen":
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        from components.ingest import image_example_gen as ieg

        props = record["properties"]
        ieg.ingest(beam.Pipeline(options=PipelineOptions(beam_args)), props["data_root"],
                   list(json.loads(props["splits_json"]).items()), os.path.join(out, "examples"),
                   os.path.join(out, "report"), props["max_pixels"], props["min_side"], props["max_file_bytes"],
                   json.loads(props["allowed_roots_json"]))
        return {"examples": os.path.join(out, "examples"), "report": os.path.join(out, "report")}
    outputs = fresh_outputs(record["outputs"], out)
    context = BaseBeamExecutor.Context(beam_pipeline_args=beam_args, tmp_dir=os.path.join(out, ".temp"),
                                       unique_id=step)
    executor_of(step)(context).Do(record["inputs"], outputs, dict(record["properties"]))
    return {key: artifacts[0].uri for key, artifacts in outputs.items()}


def records_digest(folder: str) -> dict[str, tuple[int, str]]:
    """Per split folder: how many tf.Examples, and one hash of their sorted content hashes."""
    import tensorflow as tf

    found = {}
    for split in sorted(os.listdir(folder)):
        path = os.path.join(folder, split)
        if not os.path.isdir(path) or not split.startswith("Split-"):
            continue
        # Parsed and serialized again deterministically: a map's entries (an Example's features) may be
        # serialized in any order, and differ in bytes, not content, between processes.
        hashes = sorted(hashlib.sha256(tf.train.Example.FromString(r.numpy()).SerializeToString(
                            deterministic=True)).hexdigest()
                        for name in sorted(os.listdir(path)) if name.endswith(".gz")
                        for r in tf.data.TFRecordDataset(os.path.join(path, name), compression_type="GZIP"))
        found[split] = (len(hashes), hashlib.sha256("".join(hashes).encode()).hexdigest()[:16])
    return found


def statistics(folder: str) -> dict:
    """Each split's statistics, every dataset's features in order of their path: TFDV lists them in the
    order its merged accumulators met them, which depends on how the records were spread over bundles."""
    import copy

    from tensorflow_data_validation.utils import stats_util

    found = {}
    for split in sorted(os.listdir(folder)):
        path = os.path.join(folder, split, "FeatureStats.pb")
        if os.path.exists(path):
            stats = stats_util.load_stats_binary(path)
            for dataset in stats.datasets:
                ordered = sorted((copy.deepcopy(f) for f in dataset.features), key=lambda f: list(f.path.step))
                del dataset.features[:]
                dataset.features.extend(ordered)
            found[split] = stats
    return found


def close(a, b, tolerance: float) -> list[str]:
    """Where two protos' numbers differ beyond ``tolerance`` (relative), or anything else differs."""
    from google.protobuf import json_format

    diffs = []

    def walk(x, y, path):
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{path}.{key}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if not math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance):
                diffs.append(f"{path}: {x} != {y}")
        elif x != y:
            diffs.append(f"{path}: {str(x)[:60]} != {str(y)[:60]}")

    walk(json_format.MessageToDict(a), json_format.MessageToDict(b), "")
    return diffs


def compare(step: str, got: dict, want: dict) -> list[str]:
    """What differs between a run's outputs and the FnApiRunner's: empty when equal."""
    if step == "ImageExampleGen":
        diffs = [] if records_digest(got["examples"]) == records_digest(want["examples"]) else [
            f"examples {records_digest(got['examples'])} != {records_digest(want['examples'])}"]
        mine, theirs = (json.load(open(os.path.join(d["report"], "ingestion_report.json"))) for d in (got, want))
        return diffs + ([] if mine == theirs else ["ingestion reports differ"])
    if step == "StatisticsGen":
        mine, theirs = statistics(got["statistics"]), statistics(want["statistics"])
        if sorted(mine) != sorted(theirs):
            return [f"splits {sorted(mine)} != {sorted(theirs)}"]
        return [f"{split}{d}" for split in mine for d in close(mine[split], theirs[split], 1e-6)]
    if step == "Transform":
        diffs = []
        if records_digest(got["transformed_examples"]) != records_digest(want["transformed_examples"]):
            diffs.append(f"transformed examples {records_digest(got['transformed_examples'])} != "
                         f"{records_digest(want['transformed_examples'])}")
        assets = lambda d: {n: open(os.path.join(d, "transform_fn", "assets", n), "rb").read()  # noqa: E731
                            for n in sorted(os.listdir(os.path.join(d, "transform_fn", "assets")))}
        if assets(got["transform_graph"]) != assets(want["transform_graph"]):
            diffs.append("vocabulary files differ")
        return diffs
    if step == "Evaluator":
        import tensorflow_model_analysis as tfma

        def metrics(d):
            found = {}
            for per_slice in tfma.load_metrics(d["evaluation"]):
                for pair in per_slice.metric_keys_and_values:
                    value = pair.value
                    found[f"{per_slice.slice_key} {pair.key}".replace("\n", " ")] = (
                        value.double_value.value if value.HasField("double_value") else str(value))
            return found

        mine, theirs = metrics(got), metrics(want)
        diffs = [f"{k}: {mine.get(k)} != {theirs.get(k)}" for k in sorted(set(mine) | set(theirs))
                 if k not in mine or k not in theirs or not (mine[k] == theirs[k] or (
                     isinstance(mine[k], float) and isinstance(theirs[k], float)
                     and math.isclose(mine[k], theirs[k], abs_tol=1e-6)))]
        if sorted(os.listdir(got["blessing"])) != sorted(os.listdir(want["blessing"])):
            diffs.append(f"blessing {os.listdir(got['blessing'])} != {os.listdir(want['blessing'])}")
        return diffs
    raise ValueError(step)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished `thaw run --output DIR` (FnApiRunner)")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="seconds a step may take on a runner")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    records = recorded(args.run)
    work = tempfile.mkdtemp(prefix="beam-runners-")
    rows = []
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        for step in args.steps.split(","):
            reference = None
            for runner in args.runners.split(","):
                beam_args = list(RUNNERS[runner])
                if runner != "fnapi":
                    beam_args += [f"--dask_client_address={cluster.scheduler_address}"]
                out = os.path.join(work, step, runner)
                row = {"step": step, "runner": runner}
                started = time.perf_counter()
                tasks_before = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
                try:
                    produced = run_step(step, records[step], beam_args, out)
                    row["wall_s"] = round(time.perf_counter() - started, 1)
                    if runner == "fnapi":
                        reference, row["same_as_fnapi"] = produced, True
                    else:
                        try:
                            row["differences"] = compare(step, produced, reference)[:5]
                        except OSError as exc:  # it finished, but left out an output
                            row["differences"] = [f"{type(exc).__name__}: {exc}"]
                        row["same_as_fnapi"] = not row["differences"]
                    row["ran"] = True
                except Exception as exc:  # noqa: BLE001  (the row records why)
                    row.update(ran=False, wall_s=round(time.perf_counter() - started, 1),
                               error=f"{type(exc).__name__}: {str(exc)[:300]}",
                               # Beam's own frames: where its runner gave up
                               where=[line.strip() for line in traceback.format_exc().splitlines()
                                      if "apache_beam/runners/dask" in line or "dask/bag" in line][-4:])
                row["dask_tasks"] = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values()) \
                    - tasks_before
                rows.append(row)
                print(json.dumps(row), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n| step | runner | ran | same output as FnApiRunner | wall s | Dask tasks |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['step']} | {row['runner']} | {'yes' if row['ran'] else 'no: ' + row['error'][:80]} | "
              f"{row.get('same_as_fnapi', '-')} | {row['wall_s']} | {row['dask_tasks']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

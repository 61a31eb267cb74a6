"""What a run did, read back from its metadata store and artifacts.

The summary answers the first questions after a run: how much data went in,
how the model scored, whether it was blessed (and if not, which threshold it
missed), and where the pushed model is. It reads only what the run recorded,
so it works the same for a run that just ended and one from last week.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.artifacts import (BACKBONE_FILE, STAGE_RESULTS_FILE, DataFingerprint, DataVerdict, IngestionReport,
                                  read_json)
from components.ingest.data_gate import VERDICT_FILE
from components.ingest.fingerprint import FINGERPRINT_FILE
from components.ingest.image_example_gen import REPORT_FILE
from components.ingest.quarantine import Quarantined, by_code, describe, read_entries
from components.serve.serving_validator import REPORT_FILE as SERVING_REPORT_FILE

_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


@dataclasses.dataclass
class RunSummary:
    run_id: str = ""
    classes: list[str] = dataclasses.field(default_factory=list)
    ingested: int = 0
    splits: dict[str, int] = dataclasses.field(default_factory=dict)
    per_class: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    quarantined: list[dict[str, str]] = dataclasses.field(default_factory=list)
    sizes: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_passed: bool | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    data_checks: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone: dict[str, Any] = dataclasses.field(default_factory=dict)
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    baseline_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    serving_passed: bool | None = None
    serving: dict[str, Any] = dataclasses.field(default_factory=dict)
    verdict: list[str] = dataclasses.field(default_factory=list)
    pushed: bool = False
    pushed_to: str = ""
    # DataFingerprint's record (components.ingest.fingerprint): files hashed and reused, and ``train``.
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Ingestion's reuse (components.ingest.reuse): files whose examples were copied from the last ingestion.
    reuse: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Where the first artifact of each type this run wrote lives (for the report).
    # Ids grow in creation order, so for Examples it is ingestion's, not Transform's.
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def gate_split(self) -> str:
        """The split the Evaluator graded on: test; ``eval`` in a run made before the test split."""
        return "eval" if "eval" in self.splits and "test" not in self.splits else "test"

    def gate_label(self) -> str:
        """What the gate's number is, said beside it."""
        if self.gate_split == "eval":
            return ("eval split, the gate's number (a run from before the held-out test split: the schedule "
                    "chose its epochs on these same images, so it is optimistic)")
        return "test split, the gate's number (held out: nothing in training saw it)"

    def validation_accuracy(self) -> float | None:
        """The schedule's number: the validation accuracy of the weights the last stage ended with."""
        return self.stages[-1].get("best_val_accuracy") if self.stages else None

    @property
    def data_unchanged(self) -> bool:
        """The run stopped before ingestion: nothing changed since the served model was trained."""
        return bool(self.fingerprint) and not self.fingerprint.get("train", True)

    def fingerprint_lines(self) -> list[str]:
        f = self.fingerprint
        if not f:
            return []
        changes = f.get("changes")
        changed = (f"; against the served model's data: {changes['added']} added, {changes['changed']} changed, "
                   f"{changes['removed']} removed" if changes else "")
        out = [f"data fingerprint: {f['files']} files, {f['hashed']} hashed, {f['reused']} hashes reused from the "
               f"last run's record (same path, size and times){' (rehash asked)' if f.get('rehash') else ''}"
               f"{changed}; {f['fingerprint'][:12]}"]
        if self.data_unchanged:
            served = f.get("served") or {}
            out.append(f"data unchanged: the same {f['files']} files by content hash and the same configuration "
                       f"as the served model ({served.get('why', served.get('model', ''))}) was trained on; "
                       "nothing trained, nothing pushed (thaw run --force trains anyway)")
        elif f.get("forced"):
            out.append("data unchanged since the served model was trained, but the run was forced: training")
        return out

    def lines(self) -> list[str]:
        """The terminal summary."""
        out = [f"run {self.run_id}"]
        out.extend(self.fingerprint_lines())
        if self.data_unchanged:
            return out
        splits = ", ".join(f"{n} {c}" for n, c in self.splits.items())
        out.append(f"data: {self.ingested} images in {len(self.classes)} classes ({splits}); "
                   f"{len(self.quarantined)} quarantined")
        out.extend(_quarantine_lines(read_entries(self.quarantined)))
        if self.reuse.get("reused"):
            out.append(f"ingestion: {self.reuse['reused']} files unchanged since the last ingestion (path, label, "
                       f"size and times), their examples copied; {self.reuse['read']} files read")
        if self.sizes.get("width"):
            w, h = self.sizes["width"], self.sizes["height"]
            out.append(f"image sizes: width {w['min']}-{w['max']} (median {w['p50']}), "
                       f"height {h['min']}-{h['max']} (median {h['p50']})")
        for warning in self.warnings:
            out.append(f"  warning: {warning}")
        if self.data_passed is False:
            out.append("data validation: STOPPED the run before training:")
            out.extend(f"  - {problem}" for problem in self.problems)
        elif self.data_passed:
            out.append("data validation: passed")
        if self.backbone:
            out.append(f"backbone: {backbone_line(self.backbone)}")
        for s in self.stages:
            stopped = " (stopped early)" if s.get("stopped_early") else ""
            out.append(f"stage {s['name']}: {s.get('trainable', '')}, {s['trainable_params']} trainable "
                       f"parameters, {s.get('optimizer', '')} at learning rate {s['learning_rate']:g}, "
                       f"{s['epochs_run']} epochs{stopped}, best validation accuracy {s['best_val_accuracy']:.4f}")
        if self.validation_accuracy() is not None:
            out.append(f"validation accuracy {self.validation_accuracy():.4f} (validation split, the schedule's "
                       "number: the epochs were chosen on it)")
        if self.metrics:
            out.append(f"{self.gate_split} accuracy {self.metrics.get('accuracy', float('nan')):.4f} ({self.gate_label()})")
            out.append(f"evaluation: {_format_metrics(self.metrics)}")
        if self.baseline_metrics:
            out.append(f"baseline (the served model): {_format_metrics(self.baseline_metrics)}")
        if self.data_passed is False or (self.blessed is None and not self.stages):
            return out  # stopped by the data gate, or ingestion and validation alone
        if self.blessed is None:
            out.append("gate: the run stopped before the model was evaluated")
        elif self.blessed:
            out.append("gate: BLESSED")
        else:
            out.append("gate: not blessed: " + "; ".join(self.verdict or ["see the Evaluator's output"]))
        if self.serving_passed is not None:
            latency = ", ".join(f"{k.replace('_', ' ')} p50 {v['p50']:.1f} ms p99 {v['p99']:.1f} ms"
                                for k, v in self.serving.get("latency_ms", {}).items())
            rejected = sum(1 for r in self.serving.get("bad_inputs", {}).values() if r == "InvalidArgument")
            detail = f"{latency}; {rejected} of {len(self.serving.get('bad_inputs', {}))} bad inputs rejected"
            if self.serving_passed:
                out.append(f"serving validation: passed ({detail})")
            else:
                out.append("serving validation: FAILED: " + "; ".join(self.serving.get("problems", [])))
        if self.pushed:
            out.append(f"pushed: {self.pushed_to}")
        elif self.blessed is not None:
            out.append("pushed: nothing; the serving directory is unchanged")
        return out


def backbone_line(backbone: dict[str, Any]) -> str:
    """The backbone a run trained on, in one line: architecture, where its weights came from, image size."""
    size = backbone.get("image_size")
    return (f"{backbone.get('architecture', '?')}, weights from {backbone.get('weights', '?')}, "
            f"at {size}x{size} ({backbone.get('path', '')})")


def _quarantine_lines(entries: list[Quarantined], most: int = 20) -> list[str]:
    """Each code with its meaning and count, and under it its files, ``most`` files in all:
    the meaning is said once per code, the detail once per file."""
    out: list[str] = []
    listed = 0
    for code, group in by_code(entries).items():
        name, meaning = describe(code)
        out.append(f"  {len(group)} {name or 'other'}: {meaning}")
        for entry in group[:most - listed]:
            out.append(f"    {entry.path}" + (f": {entry.detail}" if entry.detail else ""))
        listed += len(group[:most - listed])
    if listed < len(entries):
        out.append(f"  ... and {len(entries) - listed} more in the ingestion report")
    return out


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _latest_run_context(store: metadata_store.MetadataStore) -> metadata_store_pb2.Context | None:
    runs = store.get_contexts_by_type("pipeline_run")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)) if runs else None


def _outputs_by_type(store, run: metadata_store_pb2.Context) -> dict[str, list]:
    """The artifacts this run's executions wrote, grouped by artifact type name."""
    executions = store.get_executions_by_context(run.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    ids = sorted({e.artifact_id for e in events if e.type in _OUTPUT_EVENTS})
    artifacts = store.get_artifacts_by_id(ids)
    types = {t.id: t.name for t in store.get_artifact_types_by_id(list({a.type_id for a in artifacts}))}
    grouped: dict[str, list] = {}
    for artifact in artifacts:
        if artifact.state == metadata_store_pb2.Artifact.LIVE:
            grouped.setdefault(types[artifact.type_id], []).append(artifact)
    return grouped


def _metric_values(evaluation_uri: str) -> tuple[dict[str, float], dict[str, float]]:
    """Overall-slice metrics of the candidate and, if there was one, the baseline."""
    candidate: dict[str, float] = {}
    baseline: dict[str, float] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for kv in metrics.metric_keys_and_values:
            if kv.key.is_diff:
                continue
            value = kv.value.double_value.value if kv.value.HasField("double_value") else None
            if value is None:
                continue
            name = "accuracy" if kv.key.name == "sparse_categorical_accuracy" else kv.key.name
            target = baseline if kv.key.model_name == "baseline" else candidate
            target[name] = int(value) if name == "example_count" else float(value)
    return candidate, baseline


def _describe_threshold(threshold) -> str:
    """A threshold proto in words, e.g. 'at least 0.8' or 'a change of at least -0.01'."""
    parts = []
    if threshold.HasField("value_threshold"):
        v = threshold.value_threshold
        if v.HasField("lower_bound"):
            parts.append(f"at least {v.lower_bound.value:g}")
        if v.HasField("upper_bound"):
            parts.append(f"at most {v.upper_bound.value:g}")
    if threshold.HasField("change_threshold"):
        c = threshold.change_threshold
        if c.HasField("absolute"):
            parts.append(f"a change of at least {c.absolute.value:.4g}")
        if c.HasField("relative"):
            parts.append(f"a relative change of at least {c.relative.value:.4g}")
    return " and ".join(parts) or str(threshold).replace("\n", " ")


def _slice_name(slice_key) -> str:
    keys = slice_key.single_slice_keys
    if not keys:
        return "overall"
    return ", ".join(f"{k.column}={k.bytes_value.decode() if k.bytes_value else k.int64_value}" for k in keys)


def _slice_name_of_spec(spec) -> str:
    values = ", ".join(f"{k}={v}" for k, v in spec.feature_values.items())
    return values or ("by " + ", ".join(spec.feature_keys) if spec.feature_keys else "overall")


def _verdict(evaluation_uri: str, candidate: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Each failed threshold: which metric and slice, the candidate's value, the baseline's, the threshold."""
    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key.name
            short = "accuracy" if key == "sparse_categorical_accuracy" else key
            value = failure.metric_value.double_value.value
            where = _slice_name(per_slice.slice_key)
            if failure.metric_key.is_diff:
                values = (f"the candidate's {candidate.get(short, float('nan')):.4f} against the baseline's "
                          f"{baseline.get(short, float('nan')):.4f} is a change of {value:+.4f}")
            else:
                values = f"the candidate's is {value:.4f}"
                if where == "overall" and short in baseline:
                    values += f" (the baseline's {baseline[short]:.4f})"
            lines.append(f"{short} ({where}): {values}; the gate needs "
                         f"{_describe_threshold(failure.metric_threshold)}")
    for spec in result.missing_slices:
        lines.append(f"the slice {_slice_name_of_spec(spec)} has a threshold but no eval images")
    if not lines and result.missing_thresholds:
        lines.append("thresholds were configured but their metrics are missing from the evaluation")
    return lines


def summarize(metadata_path: str) -> RunSummary:
    """Reads the latest run in the metadata store at ``metadata_path``."""
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no metadata store at {metadata_path}: is this a Thaw run's output directory?")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    run = _latest_run_context(store)
    if run is None:
        return RunSummary()
    return from_artifacts(run.name, _outputs_by_type(store, run))


def custom_property(artifact: metadata_store_pb2.Artifact, key: str):
    """A custom property's value, however the orchestrator stored it.

    ML Metadata keeps an int as an int; on Kubeflow an artifact's properties
    travel as KFP metadata, where every number is a double, and TFX's
    entrypoint hands them on as a JSON struct (``{"__value__": 1.0}``), so a
    1 must be read from there too.
    """
    value = artifact.custom_properties[key]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        value = json_format.MessageToDict(value.struct_value).get("__value__")
        return int(value) if isinstance(value, float) and value.is_integer() else value
    return getattr(value, kind) if kind else None


def from_artifacts(run_id: str, outputs: dict[str, list]) -> RunSummary:
    """A run's summary from its output artifacts (MLMD Artifact protos), by type name.

    Shared by ``summarize`` (a local run's metadata store) and the RunReport
    component (its input artifacts, wherever the pipeline ran).
    """
    summary = RunSummary(run_id=run_id)
    # The baseline step's pointer is a Model too (made first); the run's own model is the Trainer's.
    outputs = {**outputs, "Model": [m for m in outputs.get("Model", []) if "found" not in m.custom_properties]}
    summary.artifacts = {type_name: min(found, key=lambda a: a.id).uri
                         for type_name, found in outputs.items() if found}

    for report in outputs.get(IngestionReport.TYPE_NAME, []):
        data = read_json(report.uri, REPORT_FILE)
        if data:
            summary.classes = data["classes"]
            summary.ingested = data["ingested"]
            summary.splits = data["splits"]
            summary.per_class = data["per_class"]
            summary.quarantined = [q.to_json() for q in read_entries(data["quarantined"])]
            summary.sizes = data.get("sizes", {})
            summary.reuse = data.get("reuse", {})
    for fingerprint in outputs.get(DataFingerprint.TYPE_NAME, []):
        summary.fingerprint = read_json(fingerprint.uri, FINGERPRINT_FILE) or {}
    for verdict in outputs.get(DataVerdict.TYPE_NAME, []):
        data = read_json(verdict.uri, VERDICT_FILE)
        if data:
            summary.data_passed = data["passed"]
            summary.problems = data["problems"]
            summary.warnings = data["warnings"]
            summary.data_checks = data["checks"]
    for model_run in outputs.get("ModelRun", []):
        summary.backbone = read_json(model_run.uri, BACKBONE_FILE) or {}
        stages = read_json(model_run.uri, STAGE_RESULTS_FILE)
        if stages:
            summary.stages = [{k: v for k, v in s.items() if k != "history"} for s in stages]
    for evaluation in outputs.get("ModelEvaluation", []):
        summary.metrics, summary.baseline_metrics = _metric_values(evaluation.uri)
        summary.verdict = _verdict(evaluation.uri, summary.metrics, summary.baseline_metrics)
    for blessing in outputs.get("ModelBlessing", []):
        summary.blessed = bool(custom_property(blessing, "blessed"))
    for infra in outputs.get("InfraBlessing", []):
        data = read_json(infra.uri, SERVING_REPORT_FILE)
        if data:
            summary.serving = data
            summary.serving_passed = bool(data["passed"])
    for pushed in outputs.get("PushedModel", []):
        summary.pushed = bool(custom_property(pushed, "pushed"))
        if summary.pushed:
            summary.pushed_to = custom_property(pushed, "pushed_destination")
    return summary

"""The run report: one self-contained HTML page answering "what happened, and is it better?".

Built from a finished run's metadata store and artifacts (so ``thaw report``
can rebuild it any time): the data (counts per class and split, every
quarantined file with its reason code and detail, the data gate's verdict,
image sizes, sample thumbnails), training (curves per stage with the
boundaries marked, trainable parameters and learning rates), evaluation
(candidate against baseline, per-class recall, the confusion matrix, the gate's
verdict), serving validation (latency, bad inputs) and the push. Plots are
matplotlib PNGs and thumbnails are embedded as data URIs: the page fetches
nothing.
"""

from __future__ import annotations

import base64
import html
import io
import os

import matplotlib

matplotlib.use("Agg")  # no display: render to memory
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402
from PIL import Image  # noqa: E402

from components.artifacts import STAGE_RESULTS_FILE, read_json  # noqa: E402
from components.ingest.quarantine import by_code, describe, read_entries  # noqa: E402
from components.model_contract import LABEL_COUNTS_FILE  # noqa: E402
from components.serve.serving_dir import versions  # noqa: E402
from components.train.preprocessing import LABEL_VOCABULARY  # noqa: E402
from components.report.summary import RunSummary, summarize  # noqa: E402

REPORT_FILE = "report.html"
THUMBNAILS_PER_CLASS = 4

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.ok{color:#176c2e;font-weight:bold}.bad{color:#b00020;font-weight:bold}
.thumbs img{margin:2px;border:1px solid #ccc;image-rendering:pixelated}.muted{color:#777}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _png(figure, alt: str = "plot") -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _thumbnails(examples_uri: str, classes: list[str]) -> str:
    """The first few training images of each class, as stored, shrunk to 64 px."""
    wanted = {c: [] for c in classes}
    spec = {"image_bytes": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.string)}
    files = tf.io.gfile.glob(os.path.join(examples_uri, "Split-train", "*.gz"))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.io.parse_single_example(record, spec)
        label = example["label"].numpy().decode()
        if len(wanted.get(label, [None] * THUMBNAILS_PER_CLASS)) < THUMBNAILS_PER_CLASS:
            image = Image.open(io.BytesIO(example["image_bytes"].numpy())).convert("RGB")
            image.thumbnail((64, 64))
            buffer = io.BytesIO()
            image.resize((64, 64 * image.height // max(image.width, 1))).save(buffer, format="PNG")
            wanted[label].append(base64.b64encode(buffer.getvalue()).decode())
        if all(len(v) >= THUMBNAILS_PER_CLASS for v in wanted.values()):
            break
    rows = []
    for label, images in wanted.items():
        tags = "".join(f'<img alt="{_e(label)}" src="data:image/png;base64,{i}">' for i in images)
        rows.append(f"<tr><th>{_e(label)}</th><td class='thumbs'>{tags}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def data_section(s: RunSummary) -> str:
    parts = ["<h2>Data</h2>"]
    splits = sorted(s.splits)
    rows = [[c] + [s.per_class.get(c, {}).get(sp, 0) for sp in splits] + [sum(s.per_class.get(c, {}).values())]
            for c in s.classes]
    parts.append(f"<p>{s.ingested} images in {len(s.classes)} classes; {len(s.quarantined)} quarantined.</p>")
    parts.append(_table(["class"] + splits + ["total"], rows))
    if s.data_passed is not None:
        verdict = "<span class='ok'>passed</span>" if s.data_passed else \
            "<span class='bad'>STOPPED the run before training</span>"
        parts.append(f"<p>Data validation: {verdict}</p>")
    for problem in s.problems:
        parts.append(f"<p class='bad'>{_e(problem)}</p>")
    for warning in s.warnings:
        parts.append(f"<p>warning: {_e(warning)}</p>")
    parts.append("<h3>Quarantined files</h3>")
    if s.quarantined:
        groups = by_code(read_entries(s.quarantined))
        parts.append(_table(["code", "meaning", "files"], [[*describe(code), len(group)]
                                                          for code, group in groups.items()]))
        parts.append(_table(["path", "code", "detail"], [[q.path, describe(q.code)[0], q.detail]
                                                         for group in groups.values() for q in group]))
    else:
        parts.append("<p class='muted'>none</p>")
    histogram = s.sizes.get("longer_side", {})
    if histogram:
        figure, axis = plt.subplots(figsize=(6, 2.5))
        axis.bar(list(histogram), list(histogram.values()), color="#4c72b0")
        axis.tick_params(axis="x", rotation=45)
        axis.set_xlabel("longer side (pixels)")
        axis.set_ylabel("images")
        axis.set_title("Image sizes")
        parts.append(_png(figure))
    if s.artifacts.get("Examples") and s.classes:
        parts.append("<h3>Samples</h3>" + _thumbnails(s.artifacts["Examples"], s.classes))
    return "".join(parts)


def could_not_draw(what: str, reason: str) -> str:
    """A section's plot that is missing, said where it would be: never dropped, never faked."""
    return f"<p class='bad could-not-draw'>{_e(what)}: could not draw: {_e(reason)}</p>"


def training_section(s: RunSummary) -> str:
    if not s.stages and not s.artifacts.get("ModelRun"):
        return ""  # the run stopped before training
    stages = read_json(s.artifacts.get("ModelRun", ""), STAGE_RESULTS_FILE)
    if not stages:
        return ("<h2>Training</h2>" + could_not_draw(
            "Training curves", f"no {STAGE_RESULTS_FILE} in the Trainer's ModelRun artifact "
                               f"({s.artifacts.get('ModelRun', 'none recorded')})"))
    parts = ["<h2>Training</h2>"]
    if s.backbone:
        b = s.backbone
        parts.append(_table(["backbone", "weights from", "image size", "file"],
                            [[b.get("architecture", "?"), b.get("weights", "?"),
                              f"{b.get('image_size')}x{b.get('image_size')}", b.get("path", "")]]))
    parts += [_table(
        ["stage", "what trained", "trainable parameters", "optimizer", "peak learning rate", "epochs",
         "best epoch", "best validation accuracy"],
        [[st["name"], st.get("trainable", ""), st["trainable_params"], st.get("optimizer", ""),
          st["learning_rate"], st["epochs_run"] if not st.get("stopped_early") else f"{st['epochs_run']} (stopped early)",
          st.get("best_epoch", ""), f"{st['best_val_accuracy']:.4f}"] for st in stages])]
    if not any(stage.get("history", {}).get("loss") for stage in stages):
        parts.append(could_not_draw("Training curves", "the stages recorded no epochs' history"))
        return "".join(parts)
    figure, (loss_axis, accuracy_axis, lr_axis) = plt.subplots(1, 3, figsize=(13, 3.2))
    epoch = 0
    for stage in stages:
        history = stage["history"]
        xs = list(range(epoch + 1, epoch + 1 + len(history.get("loss", []))))
        for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
            axis.plot(xs, history.get(key, []), marker=".", label=f"{stage['name']} train")
            axis.plot(xs, history.get(f"val_{key}", []), marker=".", linestyle="--",
                      label=f"{stage['name']} validation")
        lr_axis.plot(xs, history.get("learning_rate", []), marker=".", label=stage["name"])
        for axis in (loss_axis, accuracy_axis, lr_axis):
            if epoch:
                axis.axvline(epoch + 0.5, color="#999", linestyle=":")
        epoch += len(history.get("loss", []))
    lr_axis.set_xlabel("epoch")
    lr_axis.set_title("learning rate at each epoch's start")
    lr_axis.legend(fontsize=7)
    for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_title(f"{key} (dotted lines: stage boundaries)")
        axis.legend(fontsize=7)
    parts.append(_png(figure, "training curves"))
    return "".join(parts)


def class_names(model_uri: str) -> list[str]:
    """The model's classes in the order of its class ids: its label vocabulary, which the
    exported model carries in its assets (the Transform graph's), else its label counts."""
    model_dir = os.path.join(model_uri, "Format-Serving") if model_uri else ""
    vocabulary = os.path.join(model_dir, "assets", LABEL_VOCABULARY)
    if model_dir and tf.io.gfile.exists(vocabulary):
        with tf.io.gfile.GFile(vocabulary) as f:
            names = [line.rstrip("\n") for line in f if line.strip()]
        if names:
            return names
    counts = read_json(model_dir, "assets.extra", LABEL_COUNTS_FILE) if model_dir else None
    return list(counts) if counts else []


def confusion_counts(evaluation_uri: str, names: list[str]) -> list[list[int]]:
    """The candidate's confusion matrix on the overall slice, rows actual, columns predicted.

    Raises ValueError saying what is missing, for the report to say instead of a plot.
    """
    if not names:
        raise ValueError("the model's class names were not found (no label vocabulary in its assets)")
    try:
        plots = list(tfma.load_plots(evaluation_uri))
    except Exception as exc:  # noqa: BLE001 (an evaluation written without plots, or none at all)
        raise ValueError(f"the evaluation at {evaluation_uri or '(none)'} has no plots ({exc})") from None
    for plot in plots:
        if plot.slice_key.single_slice_keys:
            continue
        for kv in plot.plot_keys_and_values:
            at_thresholds = kv.value.multi_class_confusion_matrix_at_thresholds
            if kv.key.model_name == "baseline" or not at_thresholds.matrices:
                continue
            size = len(names)
            matrix = [[0] * size for _ in range(size)]
            for entry in at_thresholds.matrices[0].entries:  # threshold 0: the most probable class
                if not (0 <= entry.actual_class_id < size and 0 <= entry.predicted_class_id < size):
                    largest = max(entry.actual_class_id, entry.predicted_class_id)
                    raise ValueError(f"the evaluation has class id {largest} but the model names {size} classes")
                matrix[entry.actual_class_id][entry.predicted_class_id] = int(entry.num_weighted_examples)
            return matrix
    raise ValueError("the evaluation holds no confusion matrix of the candidate on the overall slice")


def _confusion_matrix(evaluation_uri: str, names: list[str], split: str) -> str:
    title = f"Confusion matrix ({split} split)"
    try:
        matrix = confusion_counts(evaluation_uri, names)
    except ValueError as exc:
        return could_not_draw(title, str(exc))
    size = len(names)
    figure, axis = plt.subplots(figsize=(1 + 0.6 * size, 1 + 0.5 * size))
    axis.imshow(matrix, cmap="Blues")
    darkest = max(max(row) for row in matrix) or 1
    for i in range(size):
        for j in range(size):
            axis.text(j, i, matrix[i][j], ha="center", va="center", fontsize=8,
                      color="white" if matrix[i][j] > darkest / 2 else "black")
    axis.set_xticks(range(size), names, rotation=45, ha="right")
    axis.set_yticks(range(size), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title(title)
    # The numbers beside the picture, so they can be read (and checked) as text.
    table = _table(["actual \\ predicted"] + names, [[name] + row for name, row in zip(names, matrix)])
    return _png(figure, title) + f"<div class='confusion-matrix'>{table}</div>"


def _per_class_recall(evaluation_uri: str) -> list[list]:
    rows = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        keys = metrics.slice_key.single_slice_keys
        if len(keys) != 1 or keys[0].column != "label":
            continue
        name = keys[0].bytes_value.decode()
        for kv in metrics.metric_keys_and_values:
            if kv.key.name == "sparse_categorical_accuracy" and not kv.key.is_diff:
                rows.setdefault(name, {})[kv.key.model_name or "candidate"] = kv.value.double_value.value
    return [[n, f"{v.get('candidate', float('nan')):.4f}",
             f"{v['baseline']:.4f}" if "baseline" in v else "-"] for n, v in sorted(rows.items())]


def evaluation_section(s: RunSummary) -> str:
    if not s.metrics:
        return ""
    names = sorted(set(s.metrics) | set(s.baseline_metrics))
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    validation = s.validation_accuracy()
    parts = ["<h2>Evaluation</h2>",
             f"<p class='accuracies'>{_e(s.gate_split)} accuracy <b>{fmt(s.metrics.get('accuracy'))}</b> "
             f"({_e(s.gate_label())}); validation accuracy "
             f"<b>{fmt(validation) if validation is not None else '-'}</b> (validation split, the schedule's "
             "number: the epochs were chosen on it).</p>",
             _table(["metric", f"candidate ({s.gate_split} split)", "baseline (the served model)"],
                    [[n, fmt(s.metrics.get(n)), fmt(s.baseline_metrics.get(n))] for n in names])]
    evaluation_uri = s.artifacts.get("ModelEvaluation", "")
    parts.append("<h3>Recall per class</h3>" + _table(["class", "candidate", "baseline"],
                                                     _per_class_recall(evaluation_uri)))
    parts.append(_confusion_matrix(evaluation_uri, class_names(s.artifacts.get("Model", "")), s.gate_split))
    if s.blessed:
        parts.append("<p>The gate: <span class='ok'>BLESSED</span>; every threshold was met.</p>")
    elif s.blessed is False:
        parts.append("<p>The gate: <span class='bad'>not blessed</span></p><ul>"
                     + "".join(f"<li>{_e(v)}</li>" for v in s.verdict) + "</ul>")
    return "".join(parts)


def serving_section(s: RunSummary) -> str:
    if s.serving_passed is None:
        return ""
    verdict = "<span class='ok'>passed</span>" if s.serving_passed else "<span class='bad'>FAILED</span>"
    parts = [f"<h2>Serving validation</h2><p>{verdict}</p>"]
    latency = s.serving.get("latency_ms", {})
    parts.append(_table(["batch", "p50 ms", "p99 ms"],
                        [[k.replace("batch_", ""), f"{v['p50']:.1f}", f"{v['p99']:.1f}"] for k, v in latency.items()]))
    parts.append(_table(["bad input", "answer"], [[k, v] for k, v in s.serving.get("bad_inputs", {}).items()]))
    parts.extend(f"<p class='bad'>{_e(p)}</p>" for p in s.serving.get("problems", []))
    return "".join(parts)


def push_section(s: RunSummary) -> str:
    if s.blessed is None and s.serving_passed is None:
        return ""
    if not s.pushed:
        return "<h2>Push</h2><p>Nothing was pushed; the serving directory is unchanged.</p>"
    base = os.path.dirname(s.pushed_to)
    served = versions(base)
    return (f"<h2>Push</h2><p>Pushed version <b>{_e(os.path.basename(s.pushed_to))}</b> to {_e(s.pushed_to)}.</p>"
            f"<p>Versions in {_e(base)}: {_e(', '.join(map(str, served)))}; TF Serving serves the newest, "
            f"{_e(served[-1] if served else '-')}.</p>")


def build(summary: RunSummary) -> str:
    if summary.data_passed is False:
        headline = "<span class='bad'>stopped by the data gate before training</span>"
    elif summary.pushed:
        headline = f"<span class='ok'>a better model was pushed</span>: {_e(summary.pushed_to)}"
    elif summary.blessed is False or summary.serving_passed is False:
        headline = "<span class='bad'>not blessed</span>: the served model is unchanged"
    else:
        headline = "ingestion and data validation"
    body = "".join([data_section(summary), training_section(summary), evaluation_section(summary),
                    serving_section(summary), push_section(summary)])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Thaw run {_e(summary.run_id)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>Thaw run {_e(summary.run_id)}</h1>"
            f"<p>{headline}</p>{body}</body></html>")


def write_report(run_dir: str, output: str | None = None) -> str:
    """Builds the report of the latest run in ``run_dir``; returns its path."""
    summary = summarize(os.path.join(run_dir, "metadata.sqlite"))
    path = output or os.path.join(run_dir, REPORT_FILE)
    page = build(summary)
    with open(path + ".partial", "w", encoding="utf-8") as f:  # a failed build leaves the old report
        f.write(page)
    os.replace(path + ".partial", path)
    return path

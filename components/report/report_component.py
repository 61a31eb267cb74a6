"""RunReport: the run report as a pipeline step, so a Kubeflow run has one too.

Locally ``thaw run`` also writes the same page from the metadata store
(components.report.report.write_report); on Kubeflow this step is where it is made. It
reads only its input artifacts, renders them with components.report.report, and writes
one self-contained HTML file at its output's URI: an artifact of KFP's type
``system.HTML``, which the KFP UI shows on the run's page.

The DAG has two of it: one after the push, with every artifact of the run, and
one for a run the data gate stopped, with the data's artifacts alone.
"""

import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.artifacts import DataVerdict, HtmlReport, IngestionReport

Input = tfx.dsl.components.InputArtifact
Output = tfx.dsl.components.OutputArtifact


@tfx.dsl.components.component
def RunReport(
    ingestion_report: Input[IngestionReport],
    verdict: Input[DataVerdict],
    examples: Input[standard_artifacts.Examples],
    report: Output[HtmlReport],
    model: Input[standard_artifacts.Model] = None,
    model_run: Input[standard_artifacts.ModelRun] = None,
    evaluation: Input[standard_artifacts.ModelEvaluation] = None,
    blessing: Input[standard_artifacts.ModelBlessing] = None,
    infra_blessing: Input[standard_artifacts.InfraBlessing] = None,
    pushed_model: Input[standard_artifacts.PushedModel] = None,
) -> None:
    from components.report.report import build  # noqa: PLC0415  (matplotlib and TFMA only when it runs)
    from components.report.summary import from_artifacts  # noqa: PLC0415

    inputs = [ingestion_report, verdict, examples, model, model_run, evaluation, blessing, infra_blessing,
              pushed_model]
    outputs = {a.type_name: [a.mlmd_artifact] for a in inputs if a is not None}
    # The run's name is the orchestrator's; the ingestion's artifact names this run's data.
    run_id = ingestion_report.uri.rstrip("/").split("/")[-1]
    page = build(from_artifacts(f"(ingestion {run_id})", outputs))
    # Its folder exists only where the orchestrator made it (LocalDagRunner, KFP's launcher on a mounted path).
    tf.io.gfile.makedirs(os.path.dirname(report.uri))
    with tf.io.gfile.GFile(report.uri, "w") as f:
        f.write(page)

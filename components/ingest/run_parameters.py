"""The run's runtime parameters, checked by the configuration's own rules before anything runs.

A run started in the Kubeflow UI may set ``training`` (the Trainer's section:
backbone, head, training, as JSON) and ``data_limits`` (the data gate's
limits). ``thaw run`` checks the same sections of the YAML when it loads it;
these JSON values skip that, so the first task (ImageExampleGen) checks them
here with the same models, before it reads an image: a bad value stops the run
in its first task with the lines ``thaw run`` would print (``training.stages[0]
.optimizer: ...``, ``data.min_images_per_class: ...``), and nothing trains.
"""

from __future__ import annotations

import json

from pydantic import Field

from components.ingest.data_limits import DataLimits
from components.spec import ConfigError, Spec, parse
from components.train.options import TrainerConfig

SOURCE = "the run's runtime parameters (`training`, `data_limits`)"


class _DataSection(Spec):
    """``data_limits`` where the YAML has it, under ``data``, so a problem reads as it does there."""

    data: DataLimits = Field(default_factory=DataLimits)


def check_run_parameters(training_json: str, limits_json: str) -> None:
    """Raises ConfigError listing every bad field of either parameter (an empty one is not set)."""
    problems = []
    for text, model, wrap in ((training_json, TrainerConfig, None), (limits_json, _DataSection, "data")):
        if not text:
            continue
        try:
            parse(model, text if wrap is None else _wrapped(text, wrap), SOURCE)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(SOURCE, problems)


def _wrapped(text: str, key: str):
    try:
        return {key: json.loads(text)}
    except json.JSONDecodeError as exc:
        raise ConfigError(SOURCE, [f"{key}: not valid JSON: {exc}"]) from None

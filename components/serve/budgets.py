"""Serving validation's latency budgets, apart from the validator (which imports TFX).

``pipeline.config``'s ``serving`` section is these fields and its own; the
ServingValidator reads them back from its ``budgets_json`` exec property.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from components.spec import Hint, Spec


class LatencyBudgets(Spec):
    """p99 latency budgets for one image and for a batch, measured on the candidate before a push."""

    p99_ms_batch_1: Annotated[float, Hint("milliseconds")] = Field(1000.0, gt=0, description=(
        "The p99 latency budget for one image, in milliseconds."))
    p99_ms_batch_n: Annotated[float, Hint("milliseconds")] = Field(10000.0, gt=0, description=(
        "The p99 latency budget for a batch of batch_size images, in milliseconds."))
    batch_size: Annotated[int, Hint("batch 1 is measured anyway")] = Field(32, ge=2, description=(
        "The larger batch measured."))

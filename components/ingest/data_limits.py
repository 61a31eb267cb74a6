"""When the data stops a run before training: the DataGate's limits.

Apart from the gate itself (which imports TFX), so the configuration can use
them without loading TensorFlow: ``pipeline.config``'s ``data`` section is
these fields and its own, side by side in the YAML.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from components.spec import Hint, Spec


class DataLimits(Spec):
    """Crossing any of these stops the run before training (exit code 3)."""

    max_bad_fraction: float = Field(0.05, ge=0, le=1, description=(
        "The run stops when more of the files than this share are quarantined."))
    min_images_per_class: int = Field(10, ge=1, description="... or a class has fewer images than this.")
    max_class_imbalance: Annotated[float, Hint("largest / smallest class")] = Field(10.0, ge=1, description=(
        "... or the largest class has more than this many times the images of the smallest."))
    max_label_drift: float = Field(0.25, gt=0, le=1, description=(
        "... or a class's share of the training data moved by more than this since the last blessed "
        "model's training data."))

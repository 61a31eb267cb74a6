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
    # Why 40 and 2: a class's images fall into the splits by a hash of their
    # content, so at 15% a class of n has a binomial count of validation (and of
    # test) images. Fewer than 2 of a class in a held-out split measure nothing
    # (one image's recall is 0 or 1). A class of 40 ends with fewer than 2 in
    # validation or test about 2% of the time; at 30, 9%; at 20, 35%.
    min_images_per_class: int = Field(40, ge=1, description=(
        "... or a class has fewer images than this (40: the smallest class that its hash-assigned share of "
        "the validation and the test split (15% each) fills with at least min_images_per_split images 98 "
        "times in 100)."))
    min_images_per_split: int = Field(2, ge=1, description=(
        "... or a class has fewer images than this in any split (train, validation, test): a class the "
        "held-out splits barely hold is neither tuned for nor graded."))
    max_class_imbalance: Annotated[float, Hint("largest / smallest class")] = Field(10.0, ge=1, description=(
        "... or the largest class has more than this many times the images of the smallest."))
    max_label_drift: float = Field(0.25, gt=0, le=1, description=(
        "... or a class's share of the training data moved by more than this since the served "
        "model's training data."))

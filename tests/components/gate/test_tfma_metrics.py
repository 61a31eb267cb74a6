"""MacroRecall: a large class done well cannot hide a small class done badly."""

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from components.gate.tfma_metrics import MacroRecall


def compute(labels, predicted):
    (computation,) = MacroRecall().computations(model_names=[""], output_names=[""])
    combiner = computation.combiner
    accumulators = []
    for half in (slice(0, len(labels) // 2), slice(len(labels) // 2, None)):  # two workers, then merged
        accumulator = combiner.create_accumulator()
        for label, cls in zip(labels[half], predicted[half]):
            probabilities = np.full(3, 0.1)
            probabilities[cls] = 0.8
            inputs = metric_types.StandardMetricInputs(
                labels=np.array([label]), predictions=probabilities, example_weights=np.array([1.0]))
            accumulator = combiner.add_input(accumulator, inputs)
        accumulators.append(accumulator)
    return combiner.extract_output(combiner.merge_accumulators(accumulators))[computation.keys[0]]


def test_macro_recall_weighs_every_class_the_same():
    labels = [0] * 8 + [1] * 2
    predicted = [0] * 8 + [0] * 2  # every 1 predicted as 0: accuracy 0.8
    assert compute(labels, predicted) == pytest.approx(0.5)


def test_macro_recall_of_a_perfect_model_is_one():
    labels = [0, 1, 2, 2, 1, 0]
    assert compute(labels, labels) == pytest.approx(1.0)

"""TFMA metrics Thaw gates on that TFMA does not ship in a usable form.

MacroRecall is the mean over classes of each class's recall (the share of its
examples predicted as it), so a model cannot pass the gate by doing well on
large classes while failing a small one. TFMA's own macro averaging needs the
class ids when the pipeline is compiled; Thaw's classes are only known once
Transform has read the data, so this metric counts them as it goes.
"""

from typing import Any, Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2

MACRO_RECALL_NAME = "macro_recall"


class MacroRecall(metric_types.Metric):
    """Mean per-class recall of a single-label multi-class model (sparse labels)."""

    def __init__(self, name: str = MACRO_RECALL_NAME):
        super().__init__(_macro_recall, name=name)


def _macro_recall(name: str = MACRO_RECALL_NAME, eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_names: Optional[List[str]] = None, output_names: Optional[List[str]] = None,
                  example_weighted: bool = False) -> metric_types.MetricComputations:
    """One computation per model (the candidate, and the baseline when there is one)."""
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted)
            computations.append(metric_types.MetricComputation(
                keys=[key], preprocessors=None, combiner=_MacroRecallCombiner(key, eval_config)))
    return computations


class _MacroRecallCombiner(beam.CombineFn):
    """Accumulates {class id: [predicted right, examples]}."""

    def __init__(self, key: metric_types.MetricKey, eval_config: Optional[config_pb2.EvalConfig]):
        self._key = key
        self._eval_config = eval_config

    def create_accumulator(self) -> Dict[int, list]:
        return {}

    def add_input(self, accumulator: Dict[int, list], element: metric_types.StandardMetricInputs):
        for label, prediction, _ in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=self._key.model_name,
                output_name=self._key.output_name, flatten=False, squeeze=False):
            label, prediction = np.asarray(label).ravel(), np.asarray(prediction).ravel()
            true_class = int(np.argmax(label)) if label.size == prediction.size else int(label[0])
            counts = accumulator.setdefault(true_class, [0, 0])
            counts[0] += int(int(np.argmax(prediction)) == true_class)
            counts[1] += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Dict[int, list]]) -> Dict[int, list]:
        merged: Dict[int, list] = {}
        for accumulator in accumulators:
            for cls, (hits, total) in accumulator.items():
                counts = merged.setdefault(cls, [0, 0])
                counts[0] += hits
                counts[1] += total
        return merged

    def extract_output(self, accumulator: Dict[int, list]) -> Dict[metric_types.MetricKey, Any]:
        recalls = [hits / total for hits, total in accumulator.values() if total]
        return {self._key: float(np.mean(recalls)) if recalls else float("nan")}

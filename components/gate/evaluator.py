"""Evaluator: TFX's, reading its baseline from ServedModel and recording what it blesses.

The stock Evaluator takes the baseline as a Model artifact (TFX's Resolver
gave it the blessed model itself). Ours gets ServedModel's pointer
(components.gate.baseline): before TFMA runs, the pointer becomes the model's URI,
or, when nothing is served yet, the baseline is dropped and the floors
alone decide, as on a first run. After a blessing, the blessing records the
model it blessed (ServedModel matches served versions of old stores by it).
"""

from tfx import v1 as tfx
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils, standard_component_specs

from components.gate.baseline import baseline_uri, record_blessing

BASELINE = standard_component_specs.BASELINE_MODEL_KEY


class Executor(tfx_evaluator.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        input_dict = dict(input_dict)
        if input_dict.get(BASELINE):
            pointer = artifact_utils.get_single_instance(input_dict[BASELINE])
            uri = baseline_uri(pointer)
            if uri is None:
                del input_dict[BASELINE]
            else:
                pointer.uri = uri
        super().Do(input_dict, output_dict, exec_properties)
        blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
        if blessing.get_int_custom_property("blessed") == 1:
            model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
            record_blessing(blessing.uri, model.uri)


class Evaluator(tfx.components.Evaluator):
    """TFX's Evaluator with the executor above; the same inputs, outputs and ID ("Evaluator")."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

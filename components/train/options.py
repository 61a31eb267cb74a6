"""What the Trainer is told: the backbone, the new head, how training runs and its stages.

These are the configuration's ``backbone``, ``head`` and ``training``
sections, written once, beside the code that reads them: ``pipeline.config``
puts them into the whole configuration, and the Trainer reads them back from
its ``custom_config`` as a ``TrainerConfig``. The descriptions are what an
editor shows for each field (``thaw config --schema``).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from components.spec import Hint, Spec, Text, refuse


@dataclasses.dataclass(frozen=True)
class Trainable:
    """A stage's ``trainable`` setting, read: which kind, and its count, share or layer."""

    kind: Literal["none", "all", "auto", "top", "top%", "from"]
    layers: int = 0          # top:N
    percent: float = 0.0     # top:P%
    layer: str = ""          # from:LAYER


def parse_trainable(text: str) -> Trainable:
    """The one reader of the ``trainable`` language, for the configuration's check and the schedule alike."""
    if text in ("none", "all", "auto"):
        return Trainable(text)
    kind, _, arg = text.partition(":")
    if kind == "top" and arg.endswith("%"):
        try:
            percent = float(arg[:-1])
        except ValueError:
            percent = 0.0
        if 0 < percent <= 100:
            return Trainable("top%", percent=percent)
        raise ValueError(f"top:P% needs a percentage in (0, 100], got '{text}'")
    if kind == "top":
        if arg.isdigit() and int(arg) > 0:
            return Trainable("top", layers=int(arg))
        raise ValueError(f"top:N needs a number of layers >= 1, got '{text}'")
    if kind == "from":
        if arg:
            return Trainable("from", layer=arg)
        raise ValueError("from:LAYER needs a layer name, e.g. from:block5_conv1")
    raise ValueError(f"use none, all, top:N (layers), top:P% (of the layers), from:LAYER or auto; got '{text}'")


class BackboneConfig(Spec):
    """The pretrained network whose features the new classifier reuses."""

    architecture: Text = Field("", description=(
        "A keras.applications architecture by name (MobileNetV2, EfficientNetB0, ResNet50, ...); "
        "empty: path is a whole saved model or a TF Hub module."))
    path: Text = Field(description=(
        "With an architecture: its weights, a .h5 (or .weights.h5) file, local or gs://, 'imagenet' for "
        "Keras's own download, or '' for random weights. Without: a whole Keras model (.keras, .h5, a "
        "SavedModel directory) or a TF Hub module (a SavedModel directory, or an https:// handle)."))
    cut_layer: Text = Field("", description=(
        "The layer whose output is the feature map; the layers after it (the old classifier) are dropped. "
        "Empty: the last layer with a 4-D output."))
    image_size: Annotated[int, Hint("pixels")] = Field(224, ge=8, le=1024, description=(
        "Images are resized to this many pixels on each side before the backbone. 224 by default: the size "
        "the default backbone, EfficientNet-Lite0, was trained at on ImageNet's photos."))
    input_scaling: Literal["auto", "none", "unit", "tf", "torch", "caffe"] = Field("auto", description=(
        "The input scaling the backbone was trained with, applied inside the model so callers always send "
        "RGB pixels in [0, 255]: none (the model scales itself), unit ([0, 1]), tf ([-1, 1]), torch "
        "(ImageNet mean/std), caffe (BGR, ImageNet mean). auto: the architecture's own, unit for a TF Hub "
        "module, none for a saved Keras model."))
    trust_code: bool = Field(False, description=(
        "A saved model with Lambda layers runs their Python code as it loads: refused unless this is true. "
        "Set it only for files you made or trust."))

    @field_validator("architecture")
    @classmethod
    def _a_keras_application(cls, name: str) -> str:
        if name:
            import tf_keras.applications as applications  # noqa: PLC0415  (only to list the names)
            if not callable(getattr(applications, name, None)) or name[0].islower():
                names = sorted(n for n in dir(applications) if n[0].isupper())
                raise ValueError(f"'{name}' is not a keras.applications model; known: {', '.join(names)}")
        return name

    @model_validator(mode="after")
    def _a_source(self) -> BackboneConfig:
        if not self.path and not self.architecture:
            refuse((("path",), "name a .keras/.h5 file, a SavedModel directory or a TF Hub module, "
                               "or set backbone.architecture"))
        return self


class HeadConfig(Spec):
    """The new classifier on top of the backbone's features."""

    pooling: Literal["avg", "max", "flatten"] = Field("avg", description="How a 4-D feature map becomes a vector.")
    dense_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, description=(
        "Hidden layers before the output, e.g. [256]."))
    activation: Literal["relu", "gelu", "swish", "tanh", "elu"] = Field("relu", description="Of the hidden layers.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before each dense layer and the output.")


class AugmentConfig(Spec):
    """Random changes to training images (never to evaluation or serving ones)."""

    flip: Literal["none", "horizontal", "vertical", "both"] = Field("none", description="Random flips.")
    crop: float = Field(0.0, ge=0, lt=1, description=(
        "Crop up to this share of each side, then resize back; 0 = off."))
    brightness: float = Field(0.0, ge=0, lt=1, description="Shift brightness by up to this much of the range; 0 = off.")
    contrast: float = Field(0.0, ge=0, lt=1, description="Scale contrast by up to 1 +/- this; 0 = off.")


class StageConfig(Spec):
    """One stage of the unfreezing schedule."""

    name: Annotated[Text, Hint("give the stage a name, e.g. 'head'")] = Field(min_length=1, description=(
        "The stage's name, unique in the schedule (the logs and the report name stages by it)."))
    epochs: int = Field(1, ge=1, description="Passes over the training data (or steps_per_epoch batches each).")
    trainable: Text = Field("none", description=(
        "What of the backbone trains: none (the head alone), all, top:N (its top N layers), top:P% (that "
        "share of its layers), from:LAYER (that layer and everything above it), or auto: unfreeze one "
        "block at the start, then the next block down each time the monitored metric stalls for "
        "`patience` epochs, up to auto_max_blocks."))
    learning_rate: float = Field(1e-3, gt=0, lt=1, description=(
        "The peak learning rate: reached after warmup_epochs, then held or decayed (decay)."))
    warmup_epochs: float = Field(0.0, ge=0, description=(
        "The learning rate rises linearly over this many epochs (at most the stage's epochs)."))
    decay: Literal["constant", "cosine"] = Field("cosine", description=(
        "After the warmup: constant, or cosine down to 0 at the stage's end."))
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="sgd runs with momentum 0.9.")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="Decoupled weight decay; 0 = off.")
    layer_lr_decay: Annotated[float, Hint("1 = off")] = Field(1.0, gt=0, le=1, description=(
        "Each backbone block learns at this factor of the rate of what is above it (e.g. 0.7: the top block "
        "at 0.7 of the head's rate, the next at 0.49, ...): earlier layers move less. 1 = off."))
    stem_lr_factor: Annotated[float, Hint("1 = off")] = Field(1.0, gt=0, le=1, description=(
        "The lowest backbone block (the stem) learns at this factor of the stage's rate, the head at the full "
        "rate, and the blocks between at factors spread evenly on a log scale (discriminative learning rates: "
        "0.01 is fastai's slice(lr/100, lr)). Unlike layer_lr_decay, it does not depend on how many blocks the "
        "backbone has. 1 = off; set it or layer_lr_decay, not both."))
    monitor: Literal["val_accuracy", "val_loss"] = Field("val_loss", description=(
        "What early stopping, the best epoch and auto watch. val_loss by default: on a small validation "
        "split accuracy moves in coarse steps and sits at its ceiling, where no epoch counts as better."))
    patience: Annotated[int, Hint("0 = no early stopping")] = Field(0, ge=0, validate_default=True, description=(
        "Stop the stage when `monitor` has not improved for this many epochs; 0 = never. trainable auto "
        "unfreezes the next block instead, while it may."))
    restore_best: bool = Field(True, description=(
        "End the stage with its best epoch's weights. A later stage's starting weights count as its epoch "
        "0: if none of its epochs beats them, it ends with them."))
    auto_max_blocks: int = Field(2, ge=1, description="trainable auto unfreezes at most this many blocks.")

    # Rules across fields sit on the later field, so they are reported with
    # the stage's other problems, at that field's path (patience's default
    # too: trainable auto with no patience given is refused).
    @field_validator("trainable")
    @classmethod
    def _a_trainable_setting(cls, text: str) -> str:
        parse_trainable(text)
        return text

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_within_the_stage(cls, warmup: float, info: ValidationInfo) -> float:
        epochs = info.data.get("epochs")
        if epochs is not None and warmup > epochs:
            raise ValueError(f"must be in [0, epochs={epochs}], got {warmup:g}")
        return warmup

    @field_validator("stem_lr_factor")
    @classmethod
    def _one_spread_of_rates(cls, factor: float, info: ValidationInfo) -> float:
        if factor != 1.0 and info.data.get("layer_lr_decay", 1.0) != 1.0:
            raise ValueError("set stem_lr_factor or layer_lr_decay, not both (each spreads the rates over the "
                             "blocks)")
        return factor

    @field_validator("patience")
    @classmethod
    def _auto_needs_patience(cls, patience: int, info: ValidationInfo) -> int:
        if info.data.get("trainable") == "auto" and patience < 1:
            raise ValueError("trainable auto unfreezes the next block after `patience` epochs without "
                             "improvement, so it needs patience >= 1")
        return patience


def default_stages() -> list[StageConfig]:
    """The schedule for the default backbone (EfficientNet-Lite0, ImageNet weights) and a user's photos.

    The digits demo carries its own (demo.digits.DEMO_STAGES, in its thaw.yaml).
    """
    return [
        # The new head alone, on the frozen backbone's features, at a constant rate.
        StageConfig(name="head", epochs=10, trainable="none", learning_rate=3e-3, decay="constant"),
        # Then the whole backbone, at rates from a hundredth of the stage's at the stem to the full rate at
        # the top (the lower a block, the less it moves), warming up over an epoch (the new head's gradients
        # are large at first) and decaying on a cosine, ending with the best epoch's weights by val_loss, or
        # with the head's if no epoch beat them. Chosen on validation accuracy alone (issue 22; README,
        # "Transfer on real photos"): among five fine-tuning stages on the solar cells (30 and 100 per class)
        # and LFW's faces (30), seeds 0-2, it tied for the best score with the whole backbone at 3e-4, and won
        # on validation loss by the rule written down before the runs. The stage it replaces (trainable auto
        # at 1e-3, up to 2 blocks, patience 2) never beat the head's weights at 100 per class.
        StageConfig(name="fine_tune", epochs=10, trainable="all", learning_rate=1e-3, warmup_epochs=1,
                    stem_lr_factor=0.01),
    ]


class TrainingConfig(Spec):
    """The staged fine-tuning schedule and how it runs."""

    batch_size: int = Field(32, ge=1, description="Per accelerator: with N GPUs the global batch is N times this.")
    steps_per_epoch: Annotated[int, Hint("0 = one pass over the data")] = Field(0, ge=0, description=(
        "Training steps (batches) per epoch; 0: one pass over the training split. Set it to count stages "
        "in steps, e.g. for a very large data set."))
    seed: int = Field(42, description="Seeds shuffling, augmentation and the head's initial weights.")
    mixed_precision: Literal["auto", "on", "off"] = Field("auto", description=(
        "float16 compute (float32 weights and output) on GPUs: auto = on when training on GPUs; on forces "
        "it, off never."))
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    stages: Annotated[list[StageConfig], Hint("needs at least one stage (e.g. the head alone)")] = Field(
        default_factory=default_stages, min_length=1, description=(
            "Run in order; each starts from the weights the one before ended with, and the model is "
            "recompiled at each."))

    @model_validator(mode="after")
    def _unique_stage_names(self) -> TrainingConfig:
        names = [stage.name for stage in self.stages]
        repeated = [(("stages", i, "name"), f"'{name}' is used by more than one stage")
                    for i, name in enumerate(names) if names.count(name) > 1]
        if repeated:
            refuse(*repeated)
        return self


class TrainerConfig(Spec):
    """What the Trainer's custom_config carries (the ``training`` runtime parameter)."""

    backbone: BackboneConfig
    head: HeadConfig = Field(default_factory=HeadConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    max_pixels: int = Field(ge=1, description=(
        "The served model refuses an image whose header claims more pixels (data.max_pixels)."))

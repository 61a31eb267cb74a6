"""Thaw's one configuration object, loaded from YAML and validated field by field.

Every knob of the pipeline lives here, typed, with a default that runs the
bundled demo. A bad value is reported with its dotted path and the fix, e.g.
``thaw.yaml: training.stages[1].learning_rate: must be > 0, got -0.1``, and all
problems are reported at once rather than one per run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "build" / "demo"
REAL_DEMO_DIR = REPO_ROOT / "build" / "demo-real"   # thaw demo --real
# Beam runs on one machine: the FnApiRunner, named outright (see beam_pipeline_args).
BEAM_RUNNER = "--runner=FnApiRunner"


class ConfigError(ValueError):
    """A configuration that cannot run; the message lists every bad field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: invalid configuration:\n{lines}")


@dataclass
class DataConfig:
    """Where the images are and how they are split."""

    # A folder of class-named subfolders of images, or a manifest: a .csv with
    # a uri,label header or a .jsonl of {"uri": ..., "label": ...} lines.
    root: str = str(DEMO_DIR / "data")
    # Split name -> fraction of images; assigned by a hash of each image's
    # content, so adding images never moves the ones already there.
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "eval": 0.2})
    # The curated data contract that ImportSchemaGen reads.
    schema: str = str(REPO_ROOT / "schemas" / "image_classification" / "schema.pbtxt")
    # Images over this many pixels are quarantined, judged from the header
    # before decoding, so a decompression bomb never allocates.
    max_pixels: int = 50_000_000
    # Images with a side shorter than this are quarantined as too small.
    min_side: int = 8
    # Files larger than this are quarantined unread (the size is checked
    # before reading; special files such as FIFOs and devices are never read).
    max_file_bytes: int = 64 * 1024 * 1024
    # Other folders or bucket prefixes (gs://bucket/images/) that a manifest's
    # uris, or symlinks under the data folder, may point into. By default only
    # the data root (a manifest's own folder) is read; anything outside it is
    # quarantined unread.
    allowed_roots: list[str] = field(default_factory=list)
    # The run stops before training when more of the files than this are
    # quarantined, or a class has fewer images than min_images_per_class, or
    # the largest class is more than max_class_imbalance times the smallest.
    max_bad_fraction: float = 0.05
    min_images_per_class: int = 10
    max_class_imbalance: float = 10.0
    # ... or when a class's share of the training data moved by more than
    # this since the last blessed model's training data.
    max_label_drift: float = 0.25

    def gate_limits(self) -> dict[str, float]:
        """What DataGate judges the data by."""
        return {name: getattr(self, name) for name in (
            "max_bad_fraction", "min_images_per_class", "max_class_imbalance", "max_label_drift")}

    def check(self, problems: list[str], at: str) -> None:
        if self.max_pixels < 1:
            problems.append(f"{at}.max_pixels: must be >= 1, got {self.max_pixels}")
        if self.min_side < 1:
            problems.append(f"{at}.min_side: must be >= 1, got {self.min_side}")
        if self.max_file_bytes < 1:
            problems.append(f"{at}.max_file_bytes: must be >= 1, got {self.max_file_bytes}")
        for i, root in enumerate(self.allowed_roots):
            if not root or not ("://" in root or os.path.isabs(root)):
                problems.append(f"{at}.allowed_roots[{i}]: give an absolute folder or a bucket prefix "
                                f"(gs://bucket/images/), got '{root}'")
        if not 0 <= self.max_bad_fraction <= 1:
            problems.append(f"{at}.max_bad_fraction: must be in [0, 1], got {self.max_bad_fraction}")
        if self.min_images_per_class < 1:
            problems.append(f"{at}.min_images_per_class: must be >= 1, got {self.min_images_per_class}")
        if self.max_class_imbalance < 1:
            problems.append(f"{at}.max_class_imbalance: must be >= 1 (largest / smallest class), got {self.max_class_imbalance}")
        if not 0 < self.max_label_drift <= 1:
            problems.append(f"{at}.max_label_drift: must be in (0, 1], got {self.max_label_drift}")
        if not self.splits:
            problems.append(f"{at}.splits: needs at least 'train' and 'eval'")
        for name in ("train", "eval"):
            if name not in self.splits:
                problems.append(f"{at}.splits: needs a '{name}' split, got {sorted(self.splits)}")
        for name, fraction in self.splits.items():
            if not 0 < fraction <= 1:
                problems.append(f"{at}.splits.{name}: must be in (0, 1], got {fraction}")
        total = sum(self.splits.values())
        if self.splits and abs(total - 1) > 1e-6:
            problems.append(f"{at}.splits: fractions must add up to 1, got {total:g}")


BACKBONE_SCALINGS = ("auto", "none", "unit", "tf", "torch", "caffe")
TRAINABLE_HELP = "use none, all, top:N (layers), top:P% (of the layers), from:LAYER or auto"


@dataclass
class BackboneConfig:
    """The pretrained network whose features the new classifier reuses."""

    # A keras.applications architecture by name (MobileNetV2, EfficientNetB0,
    # ResNet50, ...); empty: path is a whole saved model or a TF Hub module.
    architecture: str = ""
    # With an architecture: its weights, a .h5 (or .weights.h5) file, local or
    # gs://, "imagenet" for Keras's own download, or "" for random weights.
    # Without: a whole Keras model (.keras, .h5, a SavedModel directory) or a
    # TF Hub module (a SavedModel directory, or an https:// handle).
    path: str = str(DEMO_DIR / "backbone.keras")
    # The layer whose output is the feature map; the layers after it (the old
    # classifier) are dropped. Empty: the last layer with a 4-D output.
    cut_layer: str = ""
    # Images are resized to this many pixels on each side before the backbone.
    image_size: int = 32
    # The input scaling the backbone was trained with, applied inside the
    # model so callers always send RGB pixels in [0, 255]: none (the model
    # scales itself, as the demo's does), unit ([0, 1]), tf ([-1, 1]), torch
    # (ImageNet mean/std), caffe (BGR, ImageNet mean). auto: the architecture's
    # own, unit for a TF Hub module, none for a saved Keras model.
    input_scaling: str = "auto"
    # A saved model with Lambda layers runs their Python code as it loads:
    # refused unless this is true. Set it only for files you made or trust.
    trust_code: bool = False

    def check(self, problems: list[str], at: str) -> None:
        if not self.path and not self.architecture:
            problems.append(f"{at}.path: name a .keras/.h5 file, a SavedModel directory or a TF Hub "
                            "module, or set backbone.architecture")
        if self.architecture:
            import tf_keras.applications as applications  # noqa: PLC0415  (only to list the names)
            if not callable(getattr(applications, self.architecture, None)) or self.architecture[0].islower():
                names = sorted(n for n in dir(applications) if n[0].isupper())
                problems.append(f"{at}.architecture: '{self.architecture}' is not a keras.applications "
                                f"model; known: {', '.join(names)}")
        if not 8 <= self.image_size <= 1024:
            problems.append(f"{at}.image_size: must be between 8 and 1024 pixels, got {self.image_size}")
        if self.input_scaling not in BACKBONE_SCALINGS:
            problems.append(f"{at}.input_scaling: use one of {', '.join(BACKBONE_SCALINGS)}, got '{self.input_scaling}'")


@dataclass
class HeadConfig:
    """The new classifier on top of the backbone's features."""

    pooling: str = "avg"                 # avg, max or flatten (for a 4-D feature map)
    dense_units: list[int] = field(default_factory=list)  # hidden layers before the output, e.g. [256]
    activation: str = "relu"             # of the hidden layers
    dropout: float = 0.2                 # before each dense layer and the output

    def check(self, problems: list[str], at: str) -> None:
        if self.pooling not in ("avg", "max", "flatten"):
            problems.append(f"{at}.pooling: use avg, max or flatten, got '{self.pooling}'")
        for i, units in enumerate(self.dense_units):
            if units < 1:
                problems.append(f"{at}.dense_units[{i}]: must be >= 1, got {units}")
        if self.activation not in ("relu", "gelu", "swish", "tanh", "elu"):
            problems.append(f"{at}.activation: use relu, gelu, swish, tanh or elu, got '{self.activation}'")
        if not 0 <= self.dropout < 1:
            problems.append(f"{at}.dropout: must be in [0, 1), got {self.dropout}")


def check_trainable(spec: str) -> str | None:
    """None if ``spec`` is a valid stage.trainable value, else what is wrong with it."""
    kind, _, arg = spec.partition(":")
    if spec in ("none", "all", "auto"):
        return None
    if kind == "top" and arg.endswith("%"):
        try:
            if 0 < float(arg[:-1]) <= 100:
                return None
        except ValueError:
            pass
        return f"top:P% needs a percentage in (0, 100], got '{spec}'"
    if kind == "top":
        return None if arg.isdigit() and int(arg) > 0 else f"top:N needs a number of layers >= 1, got '{spec}'"
    if kind == "from":
        return None if arg else "from:LAYER needs a layer name, e.g. from:block5_conv1"
    return f"{TRAINABLE_HELP}; got '{spec}'"


@dataclass
class StageConfig:
    """One stage of the unfreezing schedule."""

    name: str = ""
    epochs: int = 1
    # What of the backbone trains: none (the head alone), all, top:N (its top
    # N layers), top:P% (that share of its layers), from:LAYER (that layer and
    # everything above it), or auto: unfreeze one block at the start, then the
    # next block down each time the monitored metric stalls for `patience`
    # epochs, up to auto_max_blocks.
    trainable: str = "none"
    learning_rate: float = 1e-3
    # The learning rate rises linearly over warmup_epochs, then follows
    # `decay` (constant, or cosine down to 0 at the stage's end).
    warmup_epochs: float = 0.0
    decay: str = "cosine"
    optimizer: str = "adam"              # adam, adamw, sgd (momentum 0.9) or rmsprop
    weight_decay: float = 0.0            # decoupled weight decay; 0 = off
    # Each backbone block learns at this factor of the rate of what is above
    # it (e.g. 0.7: the top block at 0.7 of the head's rate, the next at
    # 0.49, ...): earlier layers move less. 1 = off.
    layer_lr_decay: float = 1.0
    # Early stopping: stop the stage when `monitor` has not improved for
    # `patience` epochs (0 = never), and end the stage with its best weights
    # (restore_best). A later stage's starting weights count as its epoch 0:
    # if none of its epochs beats them, it ends with them.
    # val_loss by default: on a small validation split accuracy moves in
    # coarse steps and sits at its ceiling, where no epoch counts as better,
    # so the best epoch would be the first to reach it and `auto` would
    # unfreeze and stop on a stall that is only the ceiling (bench.transfer --real).
    monitor: str = "val_loss"
    patience: int = 0
    restore_best: bool = True
    auto_max_blocks: int = 2             # trainable: auto unfreezes at most this many blocks

    def check(self, problems: list[str], at: str) -> None:
        if self.epochs < 1:
            problems.append(f"{at}.epochs: must be >= 1, got {self.epochs}")
        problem = check_trainable(self.trainable)
        if problem:
            problems.append(f"{at}.trainable: {problem}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"{at}.learning_rate: must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            problems.append(f"{at}.warmup_epochs: must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.decay not in ("constant", "cosine"):
            problems.append(f"{at}.decay: use constant or cosine, got '{self.decay}'")
        if self.optimizer not in ("adam", "adamw", "sgd", "rmsprop"):
            problems.append(f"{at}.optimizer: use adam, adamw, sgd or rmsprop, got '{self.optimizer}'")
        if not 0 <= self.weight_decay < 1:
            problems.append(f"{at}.weight_decay: must be in [0, 1), got {self.weight_decay}")
        if not 0 < self.layer_lr_decay <= 1:
            problems.append(f"{at}.layer_lr_decay: must be in (0, 1] (1 = off), got {self.layer_lr_decay}")
        if self.monitor not in ("val_accuracy", "val_loss"):
            problems.append(f"{at}.monitor: use val_accuracy or val_loss, got '{self.monitor}'")
        if self.patience < 0:
            problems.append(f"{at}.patience: must be >= 0 (0 = no early stopping), got {self.patience}")
        if self.trainable == "auto" and self.patience < 1:
            problems.append(f"{at}.patience: trainable auto unfreezes the next block after `patience` "
                            "epochs without improvement, so it needs patience >= 1")
        if self.auto_max_blocks < 1:
            problems.append(f"{at}.auto_max_blocks: must be >= 1, got {self.auto_max_blocks}")


def _default_stages() -> list[StageConfig]:
    return [
        # The new head alone, on the frozen backbone's features, at a constant rate.
        StageConfig(name="head", epochs=10, trainable="none", learning_rate=3e-3, decay="constant"),
        # Then the backbone from the top down, a block at a time as val_loss
        # stalls, at a lower rate that warms up (the new head's gradients are
        # large at first) and decays on a cosine, ending with the best epoch's
        # weights, or with the head's if no epoch beat them on validation.
        # (3e-4 and up to 4 blocks did better on the solar cells, but much
        # worse on the digits demo: see the README's Benchmarks.)
        StageConfig(name="fine_tune", epochs=10, trainable="auto", learning_rate=1e-3,
                    warmup_epochs=1, patience=2, auto_max_blocks=2),
    ]


@dataclass
class AugmentConfig:
    """Random changes to training images (never to evaluation or serving ones)."""

    flip: str = "none"                   # none, horizontal, vertical or both
    crop: float = 0.0                    # crop up to this share of each side, then resize back; 0 = off
    brightness: float = 0.0              # shift by up to this much of the range; 0 = off
    contrast: float = 0.0                # scale contrast by up to 1 +/- this; 0 = off

    def check(self, problems: list[str], at: str) -> None:
        if self.flip not in ("none", "horizontal", "vertical", "both"):
            problems.append(f"{at}.flip: use none, horizontal, vertical or both, got '{self.flip}'")
        for name in ("crop", "brightness", "contrast"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{at}.{name}: must be in [0, 1), got {getattr(self, name)}")


@dataclass
class TrainingConfig:
    """The staged fine-tuning schedule and how it runs."""

    # Per accelerator: with N GPUs the global batch is N times this.
    batch_size: int = 32
    # Training steps (batches) per epoch; 0: one pass over the training split.
    # Set it to count stages in steps, e.g. for a very large data set.
    steps_per_epoch: int = 0
    seed: int = 42
    # float16 compute (float32 weights and output) on GPUs: auto = on when
    # training on GPUs; on forces it, off never.
    mixed_precision: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stages: list[StageConfig] = field(default_factory=_default_stages)

    def check(self, problems: list[str], at: str) -> None:
        if self.batch_size < 1:
            problems.append(f"{at}.batch_size: must be >= 1, got {self.batch_size}")
        if self.steps_per_epoch < 0:
            problems.append(f"{at}.steps_per_epoch: must be >= 0 (0 = one pass over the data), got {self.steps_per_epoch}")
        if self.mixed_precision not in ("auto", "on", "off"):
            problems.append(f"{at}.mixed_precision: use auto, on or off, got '{self.mixed_precision}'")
        self.augment.check(problems, f"{at}.augment")
        if not self.stages:
            problems.append(f"{at}.stages: needs at least one stage (e.g. the head alone)")
        names = [s.name for s in self.stages]
        for i, stage in enumerate(self.stages):
            if not stage.name:
                problems.append(f"{at}.stages[{i}].name: give the stage a name, e.g. 'head'")
            elif names.count(stage.name) > 1:
                problems.append(f"{at}.stages[{i}].name: '{stage.name}' is used by more than one stage")
            stage.check(problems, f"{at}.stages[{i}]")


@dataclass
class GateConfig:
    """When a candidate model is good enough to push (the Evaluator's gate)."""

    # Absolute floor: the candidate's accuracy on the eval split.
    min_accuracy: float = 0.9
    # Against the last blessed model: how much accuracy may drop (0: must not
    # be worse). Ignored on the first run, when there is no baseline.
    max_accuracy_drop: float = 0.0
    # Optional floors on recall (the share of a class's images predicted as
    # it), each checked on the eval split; 0 and {} turn them off.
    min_macro_recall: float = 0.0          # the mean of the classes' recalls
    min_class_recall: float = 0.0          # every class's recall
    class_recall_floors: dict[str, float] = field(default_factory=dict)  # by class name

    def check(self, problems: list[str], at: str) -> None:
        for name in ("min_macro_recall", "min_class_recall"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{at}.{name}: must be in [0, 1], got {getattr(self, name)}")
        for name, floor in self.class_recall_floors.items():
            if not 0 < floor <= 1:
                problems.append(f"{at}.class_recall_floors.{name}: must be in (0, 1], got {floor}")
        if not 0 <= self.min_accuracy <= 1:
            problems.append(f"{at}.min_accuracy: must be in [0, 1], got {self.min_accuracy}")
        if not 0 <= self.max_accuracy_drop <= 1:
            problems.append(f"{at}.max_accuracy_drop: must be in [0, 1], got {self.max_accuracy_drop}")
        if self.min_accuracy == 0 and self.max_accuracy_drop >= 1:
            # TFMA would bless anything (and with no threshold at all it writes
            # no blessing: tfx issue 5148), so a gate that checks nothing is refused.
            problems.append(f"{at}: min_accuracy 0 with max_accuracy_drop 1 lets every model through; "
                            "set a floor or a maximum drop")


@dataclass
class ServingConfig:
    """Serving validation's budgets, and how many pushed versions to keep."""

    # Versions kept in the serving directory for rollback.
    keep_versions: int = 5
    # p99 latency budgets, in milliseconds, for one image and for a batch.
    p99_ms_batch_1: float = 1000.0
    p99_ms_batch_n: float = 10000.0
    batch_size: int = 32
    # A model that has not answered everything by then is treated as hung.
    timeout_s: int = 600
    # The TensorFlow inside the TF Serving image (tensorflow/serving:X.Y.Z runs
    # TensorFlow X.Y.Z; keep it equal to the tag in k8s/). Serving validation
    # also loads every candidate in that runtime. Empty: not checked.
    tf_version: str = "2.19.1"

    def budgets(self) -> dict[str, float]:
        return {"p99_ms_batch_1": self.p99_ms_batch_1, "p99_ms_batch_n": self.p99_ms_batch_n,
                "batch_size": self.batch_size}

    def check(self, problems: list[str], at: str) -> None:
        if self.keep_versions < 1:
            problems.append(f"{at}.keep_versions: must be >= 1 (the version being served), got {self.keep_versions}")
        for name in ("p99_ms_batch_1", "p99_ms_batch_n"):
            if getattr(self, name) <= 0:
                problems.append(f"{at}.{name}: must be > 0 milliseconds, got {getattr(self, name)}")
        if self.batch_size < 2:
            problems.append(f"{at}.batch_size: must be >= 2 (batch 1 is measured anyway), got {self.batch_size}")
        if self.timeout_s < 10:
            problems.append(f"{at}.timeout_s: must be >= 10 seconds, got {self.timeout_s}")
        if self.tf_version and not re.fullmatch(r"\d+\.\d+\.\d+", self.tf_version):
            problems.append(f"{at}.tf_version: must be a TensorFlow release like 2.19.1 (the tag of the "
                            f"tensorflow/serving image), or empty to skip the check; got {self.tf_version!r}")


@dataclass
class KubeflowConfig:
    """How the compiled pipeline runs on Kubeflow Pipelines (thaw compile)."""

    # The image every component runs: built from this repository's Dockerfile.
    image: str = "thaw:latest"
    # The Trainer's resources; trainer_gpus 0 trains on the CPU.
    trainer_gpus: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    trainer_cpu: float = 4.0
    trainer_memory: str = "16G"
    # How often Kubeflow retries a failed Trainer (a preempted node); it
    # resumes from its last epoch's checkpoint. 0: never.
    trainer_retries: int = 3
    # Where the Trainer's pod may run: GPU node pools are usually labelled and tainted.
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])

    def check(self, problems: list[str], at: str) -> None:
        if not self.image:
            problems.append(f"{at}.image: name the pipeline image (built from the Dockerfile)")
        if self.trainer_gpus < 0:
            problems.append(f"{at}.trainer_gpus: must be >= 0, got {self.trainer_gpus}")
        if not 0 <= self.trainer_retries <= 10:
            problems.append(f"{at}.trainer_retries: must be in [0, 10], got {self.trainer_retries}")
        if self.trainer_cpu <= 0:
            problems.append(f"{at}.trainer_cpu: must be > 0, got {self.trainer_cpu}")
        if not self.trainer_memory[:-1].replace(".", "").isdigit() or self.trainer_memory[-1] not in "KMGT":
            problems.append(f"{at}.trainer_memory: use a number and K, M, G or T, e.g. 16G; got '{self.trainer_memory}'")
        for i, toleration in enumerate(self.tolerations):
            unknown = set(toleration) - {"key", "operator", "value", "effect", "tolerationSeconds"}
            if unknown:
                problems.append(f"{at}.tolerations[{i}]: unknown keys {sorted(unknown)}")


@dataclass
class ThawConfig:
    """The whole pipeline's configuration."""

    pipeline_name: str = "thaw"
    # Everything a run writes: artifacts, the metadata store, the serving dir.
    output_dir: str = "thaw-output"
    # Where TF Serving polls for versions; empty: <output_dir>/serving.
    serving_dir: str = ""
    # Apache Beam options for the Beam-based components (ingestion,
    # statistics, Transform, Evaluator). Locally, the DirectRunner's threads
    # beat its processes: image decoding, hashing and compression release the
    # GIL, and threads need no worker start-up (bench/ingestion.py measures it).
    # For data that outgrows one machine, name a Flink, Spark or Dataflow runner.
    # With no --runner here, the run names Beam's FnApiRunner (beam_args): Beam's
    # default DirectRunner first tries its Prism runner and downloads Prism's
    # binary from GitHub in every Beam step, a failed download when offline.
    beam_pipeline_args: list[str] = field(
        default_factory=lambda: [BEAM_RUNNER, "--direct_running_mode=multi_threading", "--direct_num_workers=0"]
    )
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)

    def check(self, problems: list[str], at: str) -> None:
        if not self.pipeline_name.replace("-", "").replace("_", "").isalnum():
            problems.append(f"{at}pipeline_name: use letters, digits, '-' and '_', got '{self.pipeline_name}'")
        if not self.output_dir:
            problems.append(f"{at}output_dir: name a directory for the run's outputs")

    # Paths every runner agrees on, derived from output_dir.
    def beam_args(self) -> list[str]:
        """beam_pipeline_args, with Beam's FnApiRunner named when they name no runner."""
        args = list(self.beam_pipeline_args)
        if any(a == "--runner" or a.startswith("--runner=") for a in args):
            return args
        return [BEAM_RUNNER] + args

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_path(self) -> str:
        return self.serving_dir or os.path.join(self.output_dir, "serving")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields holding paths: relative values are resolved against the directory of
# the YAML file they come from, so a config works from any working directory.
_PATH_FIELDS = {("output_dir",), ("serving_dir",), ("data", "root"), ("data", "schema"), ("backbone", "path")}


def _convert(value: Any, hint: Any, at: str, problems: list[str]) -> Any:
    """Converts a YAML value to the annotated type, recording a problem if it can't."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            problems.append(f"{at}: expected a mapping of fields, got {type(value).__name__}")
            return hint()
        return _build(hint, value, at, problems)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(f"{at}: expected a list, got {type(value).__name__}")
            return []
        return [_convert(v, item, f"{at}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        _, val_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.append(f"{at}: expected a mapping, got {type(value).__name__}")
            return {}
        return {str(k): _convert(v, val_hint, f"{at}.{k}", problems) for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is bool and isinstance(value, bool):
        return value
    problems.append(f"{at}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return None


def _build(cls: type, data: dict[str, Any], at: str, problems: list[str]):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{at}.{key}" if at else str(key)
            problems.append(f"{where}: unknown field; known fields are {', '.join(sorted(known))}")
    kwargs = {}
    for name in known:
        if name in data:
            where = f"{at}.{name}" if at else name
            kwargs[name] = _convert(data[name], hints[name], where, problems)
    return cls(**{k: v for k, v in kwargs.items() if v is not None})


def _validate(config: ThawConfig, source: str) -> ThawConfig:
    problems: list[str] = []
    config.check(problems, "")
    for section in ("data", "backbone", "head", "training", "gate", "serving", "kubeflow"):
        getattr(config, section).check(problems, section)
    if problems:
        raise ConfigError(source, problems)
    return config


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for path in _PATH_FIELDS:
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), str) and node[path[-1]]:
            value = os.path.expanduser(node[path[-1]])
            if "://" not in value and value != "imagenet":  # Keras's own download, no path
                value = str((base / value).resolve())
            node[path[-1]] = value


def from_dict(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None) -> ThawConfig:
    """Builds and validates a config from plain data (a parsed YAML document)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the top level must be a mapping of fields, got {type(data).__name__}"])
    if base_dir is not None:
        _resolve_paths(data, base_dir)
    problems: list[str] = []
    config = _build(ThawConfig, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return _validate(config, source)


def load(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> ThawConfig:
    """Loads the YAML file at ``path`` (None: the defaults), then applies overrides.

    Overrides are dotted keys, e.g. ``{"data.root": "/images"}``, as the CLI's
    flags give them; their paths are resolved against the working directory.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
        if not isinstance(data, dict):
            raise ConfigError(source, [f"the top level must be a mapping of fields, got {type(data).__name__}"])
        _resolve_paths(data, Path(path).resolve().parent)
    for dotted, value in (overrides or {}).items():
        keys = dotted.split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    _resolve_paths(data, Path.cwd())
    config = from_dict(data, source)
    if "://" not in config.output_dir:  # the default is relative to where thaw runs
        config.output_dir = os.path.abspath(config.output_dir)
    return config

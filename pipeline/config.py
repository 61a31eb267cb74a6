"""Thaw's one configuration: pydantic models, loaded from YAML, checked all at once.

Each section is declared once, in the room that reads it: the Trainer's
``backbone``, ``head`` and ``training`` in components.train.options, the data
gate's limits in components.ingest.data_limits, the latency budgets in
components.serve.budgets. This module adds the sections only the pipeline
reads and puts the whole together. The defaults run the bundled demo.

A bad value is reported with its dotted path and the fix, e.g. ``thaw.yaml:
training.stages[1].learning_rate: must be in (0, 1), got -0.1``, every problem
at once. Relative paths are resolved before validation (a YAML file's against
its folder, the CLI's against the working directory), and a valid
configuration is frozen: nothing changes it afterwards. Long because the
sections only the pipeline reads (Beam's runner, the gate, serving, Kubeflow)
and the rules across them are declared here, beside the whole.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, field_validator, model_validator

from components.ingest.data_limits import DataLimits
from components.serve.budgets import LatencyBudgets
from components.spec import ConfigError, Hint, Spec, Text, parse, refuse
from components.train.options import BackboneConfig, HeadConfig, TrainingConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def _build_dir() -> Path:
    """build/ in the checkout; in an installed tree no one may write (the image, run by an arbitrary user
    or on a read-only root), the temp dir's thaw-build/ instead."""
    build = REPO_ROOT / "build"
    if os.access(build if build.exists() else REPO_ROOT, os.W_OK):
        return build
    return Path(tempfile.gettempdir()) / "thaw-build"


DEMO_DIR = _build_dir() / "demo"
REAL_DEMO_DIR = _build_dir() / "demo-real"   # thaw demo --real
# train: what the model learns from; validation: what the schedule decides on;
# test: held out, read only by the Evaluator's gate and the report. 70/15/15:
# with the data gate's 40 images per class at the least, a class expects 6
# validation and 6 test images (see data_limits.py for why 40).
SPLITS = ("train", "validation", "test")
DEFAULT_SPLITS = {"train": 0.7, "validation": 0.15, "test": 0.15}
# Beam runs on one machine: the FnApiRunner, named outright (see beam_pipeline_args).
BEAM_RUNNER = "--runner=FnApiRunner"
# Beam on a Dask cluster (beam.runner: dask): Beam's DaskRunner as pipeline/dask_runner.py repairs it.
DASK_RUNNER = "pipeline.dask_runner.DaskRunner"
BEAM_DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"   # Beam 2.77's own: loses data
# A Dask scheduler's address as distributed.Client takes it: tcp:// or tls://, a host and a port.
_DASK_ADDRESS = re.compile(r"(tcp|tls)://[^\s/:]+:\d{1,5}")


def _absolute_or_bucket(root: str) -> str:
    """An allowed root is never resolved: which folder a relative one meant is a guess."""
    if not root or not ("://" in root or os.path.isabs(root)):
        raise ValueError(f"give an absolute folder or a bucket prefix (gs://bucket/images/), got '{root}'")
    return root


class DataConfig(DataLimits):
    """Where the images are, how they are split and which files are quarantined; and when the data stops a run."""

    root: Text = Field(str(DEMO_DIR / "data"), description=(
        "A folder of class-named subfolders of images, or a manifest: a .csv with a uri,label header or a "
        ".jsonl of {\"uri\": ..., \"label\": ...} lines."))
    splits: dict[Text, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: dict(DEFAULT_SPLITS), description=(
            "Split name -> fraction of images; assigned by a hash of each image's content, so adding images "
            "never moves the ones already there. Needs train (what the model learns from), validation "
            "(what the training schedule decides on: early stopping, the best epoch, when to unfreeze) and "
            "test (held out: only the gate, the Evaluator, and the report read it)."))
    # ``schema`` in the YAML: pydantic's models have a schema() of their own.
    schema_file: Text = Field(str(REPO_ROOT / "schemas" / "image_classification" / "schema.pbtxt"),
                              alias="schema", description="The curated data contract that ImportSchemaGen reads.")
    max_pixels: int = Field(50_000_000, ge=1, description=(
        "Images over this many pixels are quarantined, judged from the header before decoding, so a "
        "decompression bomb never allocates; the served model refuses them too."))
    min_side: int = Field(8, ge=1, description="Images with a side shorter than this are quarantined as too small.")
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1, description=(
        "Files larger than this are quarantined unread (the size is checked before reading; special files "
        "such as FIFOs and devices are never read)."))
    allowed_roots: list[Annotated[Text, AfterValidator(_absolute_or_bucket)]] = Field(
        default_factory=list, description=(
            "Other folders or bucket prefixes (gs://bucket/images/) that a manifest's uris, or symlinks under "
            "the data folder, may point into. By default only the data root (a manifest's own folder) is "
            "read; anything outside it is quarantined unread."))

    rehash: bool = Field(False, description=(
        "Hash every file again to fingerprint the data, and ingest every file again. By default a file "
        "whose path, size, modification and change time match the last run's record keeps its recorded "
        "hash, and its tf.Example is copied from the last ingestion's examples instead of being read, "
        "checked and encoded again; set this when files may change without their times changing (thaw run "
        "--rehash does it for one run)."))

    @field_validator("splits")
    @classmethod
    def _three_splits_adding_up(cls, splits: dict[str, float]) -> dict[str, float]:
        if "eval" in splits and not {"validation", "test"} & set(splits):
            # A configuration written before the held-out test split.
            refuse(((), "the 'eval' split is now two: 'validation' (the schedule's early stopping and best "
                        "epoch) and 'test' (held out for the gate); write e.g. "
                        "{train: 0.7, validation: 0.15, test: 0.15}"))
        wrong = [((), f"needs a '{name}' split, got {sorted(splits)}")
                 for name in SPLITS if name not in splits]
        total = sum(splits.values())
        if splits and abs(total - 1) > 1e-6:
            wrong.append(((), f"fractions must add up to 1, got {total:g}"))
        if wrong:
            refuse(*wrong)
        return splits

    def model_settings(self) -> dict:
        """What of this section shapes the model, and so goes into the data fingerprint."""
        return self.model_dump(include={"splits", "max_pixels", "min_side", "max_file_bytes", "allowed_roots",
                                        "schema_file"})

    def gate_limits(self) -> dict[str, float]:
        """What DataGate judges the data by."""
        return self.model_dump(include=set(DataLimits.model_fields))


def default_backbone_path() -> str:
    """EfficientNet-Lite0 with ImageNet weights: $THAW_BACKBONE_DIR's, else the converted one in the cache."""
    from demo.pretrained import default_backbone_path as lite0

    return lite0()


class Backbone(BackboneConfig):
    """The pretrained network whose features the new classifier reuses.

    By default EfficientNet-Lite0 with ImageNet weights (demo.pretrained: converted once on first use, or read
    from $THAW_BACKBONE_DIR where a machine or image carries it) at 224x224, its own size; the digits demo and
    the real-photo demo name theirs in their own thaw.yaml.
    """

    path: Text = Field(default_factory=default_backbone_path, description=(
        BackboneConfig.model_fields["path"].description + " Default: EfficientNet-Lite0 with ImageNet weights, "
        "converted once on first use (bin/thaw backbone), or from $THAW_BACKBONE_DIR when set."))

    def is_default(self) -> bool:
        """No backbone named: the ImageNet EfficientNet-Lite0 that `thaw backbone` converts."""
        return not self.architecture and self.path == default_backbone_path()


class GateConfig(Spec):
    """When a candidate model is good enough to push (the Evaluator's gate)."""

    min_accuracy: float = Field(0.9, ge=0, le=1, description=(
        "Absolute floor: the candidate's accuracy on the test split (held out: nothing in training saw it)."))
    max_accuracy_drop: float = Field(0.0, ge=0, le=1, description=(
        "Against the model being served: how much accuracy (on the test split) may drop (0: must not be "
        "worse). Ignored on the first run, when nothing is served yet."))
    min_macro_recall: float = Field(0.0, ge=0, le=1, description=(
        "Floor on the mean of the classes' recalls (the share of a class's images predicted as it); 0 = off."))
    min_class_recall: float = Field(0.0, ge=0, le=1, description="Floor on every class's recall; 0 = off.")
    class_recall_floors: dict[Text, Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=dict, description=(
        "Floors on named classes' recall, e.g. {five: 0.95}."))

    @model_validator(mode="after")
    def _checks_something(self) -> GateConfig:
        if self.min_accuracy == 0 and self.max_accuracy_drop >= 1:
            # TFMA would bless anything (and with no threshold at all it writes
            # no blessing: tfx issue 5148), so a gate that checks nothing is refused.
            refuse(((), "min_accuracy 0 with max_accuracy_drop 1 lets every model through; "
                        "set a floor or a maximum drop"))
        return self


class ServingConfig(LatencyBudgets):
    """Serving validation's budgets and timeout, the served TensorFlow, and how many pushed versions to keep."""

    keep_versions: Annotated[int, Hint("the version being served")] = Field(5, ge=1, description=(
        "Versions kept in the serving directory for rollback."))
    timeout_s: Annotated[int, Hint("seconds")] = Field(600, ge=10, description=(
        "A model that has not answered everything by then is treated as hung."))
    tf_version: Annotated[Text, Hint("must be a TensorFlow release like 2.19.1 (the tag of the tensorflow/serving "
                                     "image), or empty to skip the check")] = Field(
        "2.19.1", pattern=r"^(\d+\.\d+\.\d+)?$", description=(
            "The TensorFlow inside the TF Serving image (tensorflow/serving:X.Y.Z runs TensorFlow X.Y.Z; keep "
            "it equal to the tag in k8s/). Serving validation also loads every candidate in that runtime. "
            "Empty: not checked."))

    def budgets(self) -> dict[str, float]:
        return self.model_dump(include=set(LatencyBudgets.model_fields))


_MEMORY = re.compile(r"(\d+(?:\.\d*)?)([KMGT])")
_GIGABYTES = {"K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}


def memory_gigabytes(text: str) -> float:
    """``16G`` -> 16.0: the one reader of Kubernetes-style memory sizes in the configuration."""
    match = _MEMORY.fullmatch(text)
    if not match:
        raise ValueError(f"use a number and K, M, G or T, e.g. 16G; got '{text}'")
    return float(match[1]) * _GIGABYTES[match[2]]


class Toleration(Spec):
    """A Kubernetes toleration for the Trainer's pod."""

    key: Text | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Text | None = None
    effect: Text | None = None
    tolerationSeconds: int | None = None  # noqa: N815  (Kubernetes' own name)


class KubeflowConfig(Spec):
    """How the compiled pipeline runs on Kubeflow Pipelines (thaw compile)."""

    image: Annotated[Text, Hint("name the pipeline image (built from the Dockerfile)")] = Field(
        "thaw:latest", min_length=1, description=(
            "The image every component runs: built from this repository's Dockerfile."))
    trainer_image: Text = Field("", description=(
        "The Trainer's image, when it differs: the GPU variant (docker build --build-arg GPU=true, 4.4 GB of "
        "CUDA and cuDNN more), so that only the GPU node pulls it. Empty: the image above."))
    trainer_gpus: int = Field(1, ge=0, description="GPUs for the Trainer; 0 trains on the CPU.")
    gpu_resource: Text = Field("nvidia.com/gpu", description="The Kubernetes resource name of a GPU.")
    trainer_cpu: float = Field(4.0, gt=0, description="CPUs for the Trainer.")
    trainer_memory: Text = Field("16G", description="Memory for the Trainer: a number and K, M, G or T.")
    trainer_retries: int = Field(3, ge=0, le=10, description=(
        "How often Kubeflow retries a failed Trainer (a preempted node); it resumes from its last epoch's "
        "checkpoint. 0: never."))
    node_selector: dict[Text, Text] = Field(default_factory=dict, description=(
        "Where the Trainer's pod may run, e.g. {cloud.google.com/gke-accelerator: nvidia-l4}."))
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="The Trainer's tolerations (with GPUs): GPU node pools are usually tainted.")

    @field_validator("trainer_memory")
    @classmethod
    def _a_memory_size(cls, text: str) -> str:
        memory_gigabytes(text)
        return text


def _a_scheduler_address(address: str) -> str:
    if address.startswith(("http://", "https://")):
        raise ValueError(f"'{address}' is a web address (the dashboard's, usually port 8787); the scheduler "
                         "listens on tcp://HOST:8786")
    if address and not _DASK_ADDRESS.fullmatch(address):
        raise ValueError(f"give the Dask scheduler's address as tcp://HOST:PORT (or tls://), e.g. "
                         f"tcp://dask-scheduler:8786; got '{address}'")
    return address


class BeamConfig(Spec):
    """Which Beam runner runs ingestion, statistics, Transform and the Evaluator.

    ``fnapi``: Beam's FnApiRunner in this process (beam_pipeline_args tune it). ``dask``: Beam's DaskRunner
    on the Dask cluster whose scheduler is at ``dask_address``: a distributed.LocalCluster on this machine, or a
    multi-machine cluster (dask-kubernetes) beside Kubeflow. See the README's runner table for which steps
    it runs.
    """

    runner: Literal["fnapi", "dask"] = Field("fnapi", description=(
        "fnapi: in this process; dask: on the Dask cluster at dask_address (Beam's DaskRunner)."))
    dask_address: Annotated[Text, AfterValidator(_a_scheduler_address)] = Field("", description=(
        "The Dask scheduler, tcp://HOST:PORT (dask's default port is 8786), for runner: dask. Every Beam "
        "step connects to it as a client; its workers need Thaw's image or environment."))

    @model_validator(mode="after")
    def _address_with_dask(self) -> BeamConfig:
        if self.runner == "dask" and not self.dask_address:
            refuse((("dask_address",), "runner dask needs the scheduler's address, e.g. tcp://dask-scheduler:8786 "
                                       "(`dask scheduler` prints it); without one every Beam step would start "
                                       "a throwaway cluster of its own"))
        if self.runner != "dask" and self.dask_address:
            refuse((("runner",), f"dask_address is set but runner is {self.runner}: set runner: dask to use it, "
                                 "or remove dask_address"))
        return self


def _runner_arg(args: list[str]) -> str | None:
    """The runner beam_pipeline_args name (``--runner=X`` or ``--runner X``), or None."""
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner":
            return args[i + 1] if i + 1 < len(args) else ""
    return None


class ThawConfig(Spec):
    """The whole pipeline's configuration."""

    pipeline_name: Text = Field("thaw", description="The pipeline's name in ML Metadata and Kubeflow.")
    output_dir: Annotated[Text, Hint("name a directory for the run's outputs")] = Field(
        "thaw-output", min_length=1, description=(
            "Everything a run writes: artifacts (pipeline/), the metadata store, serving/ unless serving_dir is set."))
    serving_dir: Text = Field("", description="Where TF Serving polls for versions; empty: <output_dir>/serving.")
    beam_pipeline_args: list[Text] = Field(
        default_factory=lambda: ["--direct_running_mode=multi_threading", "--direct_num_workers=0"],
        description=(
            "Apache Beam options for ingestion, statistics, Transform and the Evaluator. Locally the "
            "DirectRunner's threads beat its processes (bench/ingestion.py); for data that outgrows one "
            "machine, name a Flink, Spark or Dataflow runner. With no --runner, Beam's FnApiRunner is named: "
            "the default DirectRunner would first download its Prism runner from GitHub in every Beam step. "
            "For a Dask cluster, set beam.runner: dask and beam.dask_address instead of a --runner here."))
    beam: BeamConfig = Field(default_factory=BeamConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: Backbone = Field(default_factory=Backbone)
    head: HeadConfig = Field(default_factory=HeadConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    kubeflow: KubeflowConfig = Field(default_factory=KubeflowConfig)

    @field_validator("pipeline_name")
    @classmethod
    def _a_name(cls, name: str) -> str:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"use letters, digits, '-' and '_', got '{name}'")
        return name

    @model_validator(mode="after")
    def _one_runner(self) -> ThawConfig:
        runner = _runner_arg(self.beam_pipeline_args)
        if runner is None:
            return self
        if self.beam.runner == "dask":
            refuse((("beam_pipeline_args",), f"names --runner={runner} while beam.runner is dask; name the "
                                             "runner in one place: drop --runner, or beam.runner"))
        if runner == BEAM_DASK_RUNNER:
            refuse((("beam_pipeline_args",), "Beam 2.77's own DaskRunner runs only a pipeline's last branch and "
                                             "loses what sinks write (ingestion ends with no examples and no "
                                             "error; README, Beam on Dask): set beam.runner: dask and "
                                             f"beam.dask_address, which name Thaw's repaired {DASK_RUNNER}"))
        if runner in ("DaskRunner", "dask"):
            refuse((("beam_pipeline_args",), f"Beam 2.77 knows no runner named '{runner}': set beam.runner: dask "
                                             "and beam.dask_address: tcp://HOST:8786 (or write "
                                             f"--runner={DASK_RUNNER})"))
        if runner.endswith("DaskRunner") and not any(
                a.startswith(("--dask_client_address", "--dask_scheduler_file")) for a in self.beam_pipeline_args):
            refuse((("beam_pipeline_args",), "the DaskRunner without --dask_client_address=tcp://HOST:8786 starts "
                                             "a throwaway local cluster in every Beam step; name the scheduler "
                                             "(or set beam.runner: dask and beam.dask_address)"))
        return self

    def beam_args(self) -> list[str]:
        """beam_pipeline_args, with the runner beam names (the FnApiRunner unless they name one)."""
        args = list(self.beam_pipeline_args)
        if self.beam.runner == "dask":
            return [f"--runner={DASK_RUNNER}", f"--dask_client_address={self.beam.dask_address}"] + args
        if _runner_arg(args) is not None:
            return args
        return [BEAM_RUNNER] + args

    # Paths every runner agrees on, derived from output_dir.

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_path(self) -> str:
        return self.serving_dir or os.path.join(self.output_dir, "serving")

    def fingerprint_settings(self) -> dict:
        """What of this configuration goes into the data fingerprint (components.ingest.fingerprint), beside
        the ``training`` and ``data_limits`` runtime parameters: what decides which model is trained (the
        ingestion settings) and whether it may be served (the gate's thresholds, serving's budgets)."""
        return {"data": self.data.model_settings(), "gate": self.gate.model_dump(mode="json"),
                "serving": self.serving.model_dump(mode="json", include={"tf_version", *self.serving.budgets()})}


# Fields holding paths: relative values are resolved against the directory of
# the YAML file they come from, so a config works from any working directory.
_PATH_FIELDS = {("output_dir",), ("serving_dir",), ("data", "root"), ("data", "schema"), ("backbone", "path")}


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
    # The default output_dir is relative to where thaw runs, as the CLI's --output is.
    data.setdefault("output_dir", ThawConfig.model_fields["output_dir"].default)
    _resolve_paths(data, Path.cwd())
    return parse(ThawConfig, data, source)

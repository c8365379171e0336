"""`soundflow detect`, `soundflow evaluate-detections` and `soundflow serve-detect`: the detection commands."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_detect_commands(sub) -> None:
    """The three detection sub-commands, their options generated from DetectParams."""
    from flows.options import add_param_options
    from flows.params import DetectParams

    det = sub.add_parser(
        "detect",
        help="what happened when in long recordings: window scores, per-class thresholds, events, Raven/Audacity/"
        "CSV tables (resumable)",
    )
    det.add_argument("paths", nargs="+", help="recordings, or folders of them")
    add_param_options(det, DetectParams, skip=("paths",))
    det.add_argument("--json", action="store_true", help="end with the result as JSON")

    ev = sub.add_parser(
        "evaluate-detections",
        help="segment-based F1 and error rate (1 s) and event-based F1 (200-ms onset collar), as DCASE computes them",
    )
    ev.add_argument("detections", help="detections.csv of soundflow detect (file,start_s,end_s,label,score)")
    ev.add_argument("reference", help="CSV file,onset,offset,label; Audacity label files or Raven tables (or a folder)")
    ev.add_argument("--resolution-s", type=float, default=1.0, help="segment length for segment-based metrics")
    ev.add_argument("--collar-s", type=float, default=0.2, help="onset collar for event-based metrics")
    ev.add_argument("--log-mlflow", action="store_true", help="log the figures as a run of experiment soundflow-detect")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")

    srv = sub.add_parser(
        "serve-detect",
        help="analyse the recordings added to a folder on a cron schedule (a Prefect deployment; needs a server)",
    )
    srv.add_argument("--watch", required=True, help="folder of recordings to analyse as they arrive")
    srv.add_argument("--cron", default="0 * * * *", help="cron schedule [default: hourly]")
    srv.add_argument("--name", default="detect-new-recordings")
    add_param_options(srv, DetectParams, skip=("paths",))


def run_detect_command(args: argparse.Namespace) -> int:
    from flows.options import overrides_from
    from flows.params import DetectParams
    from tasks.errors import SoundflowError

    try:
        if args.command == "evaluate-detections":
            return _evaluate(args)
        given = overrides_from(args, DetectParams, skip=("paths",))
        if args.command == "serve-detect":
            from flows.serve import serve_detect

            serve_detect(DetectParams(paths=[args.watch], **given), cron=args.cron, name=args.name)
            return 0
        from flows.detect import detect

        result = detect(DetectParams(paths=args.paths, **given))
    except SoundflowError as exc:
        print(f"soundflow {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result), indent=2, default=str))
    else:
        print("\n" + "\n".join(result.lines))
    return 1 if result.n_failed and result.n_failed == result.n_files else 0


def _evaluate(args: argparse.Namespace) -> int:
    from tasks.data.annotations import read_events_csv, read_reference
    from tasks.tracking.detect_runs import evaluate_detections

    figures = evaluate_detections(
        read_events_csv(args.detections),
        read_reference(args.reference),
        resolution_s=args.resolution_s,
        collar_s=args.collar_s,
        log_to_mlflow=args.log_mlflow,
        sources={"detections": args.detections, "reference": args.reference},
    )
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        seg, ev = figures["segment"], figures["event"]
        print(
            f"segment-based ({args.resolution_s:g} s): F1 {seg['f1']:.3f}  precision {seg['precision']:.3f}  "
            f"recall {seg['recall']:.3f}  error rate {seg['error_rate']:.3f}\n"
            f"event-based (onset collar {args.collar_s:g} s): F1 {ev['f1']:.3f}  precision {ev['precision']:.3f}  "
            f"recall {ev['recall']:.3f}  error rate {ev['error_rate']:.3f}"
        )
    return 0

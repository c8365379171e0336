"""`soundflow` command line: run the case study, predict with the champion, serve on a schedule."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows.options import add_param_options, overrides_from


def _load_args_file(args) -> dict[str, Any]:
    if getattr(args, "params_file", None):
        with open(args.params_file) as fh:
            return json.load(fh)
    return {}


def inspect_dataset(params, *, audit: bool = False) -> str:
    """Ingest (or reuse) the dataset as a run would, and return its summary (and audit) as markdown."""
    from tasks import config
    from tasks.data.ingest import build, dataset_info
    from tasks.data.inspect import summarize, summary_markdown
    from tasks.data.manifest import read_manifest, read_rejected
    from tasks.data.sources import resolve_source

    root = resolve_source(params.source, raw_dir=config.stage_dir("raw"))
    data = build(
        root,
        dataset=params.dataset,
        group_pattern=params.group_pattern,
        sr=params.sample_rate,
        window_s=params.window_s,
        hop_s=params.hop_s,
        min_duration_s=params.min_duration_s,
        out_dir=config.stage_dir("interim"),
        n_jobs=params.n_jobs,
        label_column=params.label_column,
        min_label_overlap=params.min_label_overlap,
        background_ratio=params.background_ratio,
        seed=params.seed,
    )
    summary = summarize(read_manifest(data.manifest), read_rejected(data.rejected), dataset_info(data))
    text = summary_markdown(summary)
    if audit:
        from tasks.data.audit import summary_markdown as audit_markdown
        from tasks.features.representations import features_file
        from tasks.tracking.audit import run_audit

        engineered = features_file(
            Path(data.clips),
            "engineered",
            params.sample_rate,
            {},
            config.stage_dir("features"),
            n_jobs=params.n_jobs,
        )
        text += "\n" + audit_markdown(run_audit(data, str(engineered), seed=params.seed))
    return text


def add_preset_options(parser: argparse.ArgumentParser) -> None:
    """--preset, --params-file, --print-params and one option per parameter (shared by run and serve)."""
    from flows.params import PRESETS

    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="smoke: the quickest (tests/CI); quick: pretrained embeddings and classical models, minutes; default: "
        "every family (docs/benchmarks.md has its time); book: the full book reproduction (hours) "
        "[default: the params file's preset, else default]",
    )
    parser.add_argument("--params-file", help="JSON file of parameter overrides (applied before the options)")
    parser.add_argument("--print-params", action="store_true", help="print the resolved parameters and exit")
    add_param_options(parser)


def resolved_params(args: argparse.Namespace):
    """The preset named by --preset (or by the params file), then the params file, then the options."""
    from flows.params import preset

    given = {**_load_args_file(args), **overrides_from(args)}
    name = args.preset or given.get("preset") or "default"
    given.pop("preset", None)
    return preset(name, **given)


def main(argv: list[str] | None = None) -> int:
    # First, before anything imports prefect: Prefect reads its settings once, at import.
    from tasks.runtime import quiet_defaults

    quiet_defaults()
    from flows.params import CaseStudyParams

    parser = argparse.ArgumentParser(prog="soundflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the case study flow (ingest, features, augment, k-fold CV, ensembles, report)",
    )
    add_preset_options(run)
    run.add_argument("--json", action="store_true", help="end with the result as JSON instead of the summary table")

    pred = sub.add_parser("predict", help="classify audio files with the registered champion model")
    pred.add_argument("files", nargs="+", help="audio files (wav, ogg, flac, mp3; any rate and length)")
    pred.add_argument(
        "--model",
        default=None,
        help="registered model name, e.g. soundflow-esc10 (default: the "
        "soundflow model whose champion was registered last)",
    )
    pred.add_argument("--alias", default="champion")

    insp = sub.add_parser(
        "inspect",
        help="what the pipeline would use of a dataset (classes, folds, groups, durations, "
        "rejected files), without training",
    )
    insp.add_argument("source", help="dataset folder, CSV manifest or .zip")
    for name in (
        "dataset",
        "group_pattern",
        "window_s",
        "hop_s",
        "min_duration_s",
        "sample_rate",
        "label_column",
        "min_label_overlap",
        "background_ratio",
        "seed",
    ):
        field = CaseStudyParams.model_fields[name]
        insp.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=field.description)
    insp.add_argument(
        "--audit",
        action="store_true",
        help="also run the leakage audit (duplicates, group hints, what a leaky split costs a fast model)",
    )

    serve = sub.add_parser(
        "serve", help="serve the case study as a scheduled Prefect deployment (needs a Prefect server)"
    )
    serve.add_argument("--cron", default="0 2 * * *", help="cron schedule [default: nightly 02:00]")
    serve.add_argument("--name", default="case-study-nightly")
    add_preset_options(serve)

    from flows.detect_cli import add_detect_commands, run_detect_command

    add_detect_commands(sub)

    runs = sub.add_parser("runs", help="list MLflow runs left RUNNING by a process that died (--clean: close them)")
    runs.add_argument("--clean", action="store_true", help="set those runs to KILLED, with a tag saying why")

    args = parser.parse_args(argv)
    if args.command in ("run", "serve") and args.print_params:
        print(resolved_params(args).model_dump_json(indent=2))
        return 0
    if args.command == "run":
        from tasks.runtime import start_prefect_api

        api_ready = start_prefect_api()  # beside the imports below
        params = resolved_params(args)
        from flows.case_study import case_study
        from tasks.errors import SoundflowError

        api_ready()
        try:
            result = case_study(params)
        except SoundflowError as exc:  # bad input: the message says what and how to fix it (Prefect logged the rest)
            print(f"\nsoundflow run: {exc}", file=sys.stderr)
            return 2
        if args.json:
            from tasks.tracking.run_summary import summary_json

            print(json.dumps(summary_json(result), indent=2, default=str))
        else:
            from tasks.tracking.run_summary import summary_text

            print("\n" + summary_text(result))
        return 0
    if args.command == "inspect":
        from flows.params import CaseStudyParams as Params
        from tasks.errors import SoundflowError

        params = Params(
            source=args.source,
            **{k: v for k, v in vars(args).items() if k in Params.model_fields and k != "source" and v is not None},
        )
        try:
            print(inspect_dataset(params, audit=args.audit), end="")
        except SoundflowError as exc:
            print(f"soundflow inspect: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "predict":
        from flows.predict import predict
        from tasks.errors import SoundflowError

        try:
            rows = predict(files=args.files, model_name=args.model, alias=args.alias)
        except SoundflowError as exc:
            print(f"soundflow predict: {exc}", file=sys.stderr)
            return 2
        failed = [r for r in rows if r.get("error")]
        return 1 if failed and len(failed) == len(rows) else 0
    if args.command == "runs":
        from tasks.tracking import ghosts
        from tasks.tracking import runs as tracking

        if args.clean:
            closed = ghosts.close_ghosts(tracking.client())
            for run_id, why in closed:
                print(f"{run_id}  KILLED: {why}")
            print(f"closed {len(closed)} run(s) left RUNNING by a process that died")
        else:
            found = ghosts.ghost_runs(tracking.client())
            for run, why in found:
                print(f"{run.info.run_id}  {run.info.run_name}: {why}")
            print(
                f"{len(found)} run(s) left RUNNING by a process that died"
                + (" (soundflow runs --clean closes them)" if found else "")
            )
        return 0
    if args.command in ("detect", "evaluate-detections", "serve-detect"):
        return run_detect_command(args)
    if args.command == "serve":
        from flows.serve import serve_case_study

        params = resolved_params(args)
        serve_case_study(params, cron=args.cron, name=args.name)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

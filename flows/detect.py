"""Detect: a registered model over long recordings, what happened when, in the tables review tools read. Composition
only: the work is in tasks/detection/ (pure) and tasks/tracking/detect_runs.py (the model, MLflow)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.params import DetectParams
from flows.runners import task_runner
from tasks import config
from tasks.detection import journal
from tasks.detection.analysis import detect_events, write_tables
from tasks.detection.recordings import Planned, list_recordings, plan
from tasks.evaluation.progress import WorkProgress
from tasks.records import DetectModel, DetectSummary, Scored
from tasks.tracking.detect_runs import (
    model_key,
    read_levels,
    read_scores,
    report_analysis,
    resolve_model,
    score_task,
)


def out_dir(params: DetectParams, model: DetectModel) -> Path:
    """Where an analysis writes: --out, else data/detections/<model> (so the next run resumes there)."""
    return Path(params.out) if params.out else config.stage_dir("detections") / model.name


@flow(name="score-recordings")
def score_recordings(todo: list[Planned], model: DetectModel, hop_s: float, out: str) -> list[Scored]:
    """Every recording not yet done, scored in the flow's task runner; each finished one goes into the journal at
    once (an interrupted run resumes after it), with a progress line: files, audio hours, real-time factor, time
    left."""
    log = get_run_logger()
    if not todo:
        return []
    from tasks.data.audio import probe

    progress = WorkProgress([1.0 + _duration_s(probe, t.file) for t in todo], unit="recordings")  # + start-up
    artifact = cast(UUID, create_progress_artifact(0.0, key="detect", description=f"scoring {len(todo)} recordings"))
    futures = [
        score_task.submit(t.file, t.sha256, model, hop_s, str(Path(out) / "scores"), Path(t.file).name) for t in todo
    ]
    index = {f.task_run_id: i for i, f in enumerate(futures)}
    done: list[Scored] = []
    started = time.monotonic()
    for future in as_completed(futures):
        i = index[future.task_run_id]
        entry = replace(future.result(), size=todo[i].size, mtime_ns=todo[i].mtime_ns)
        journal.append(Path(out) / journal.JOURNAL_FILE, entry)
        done.append(entry)
        line = progress.finish(i)
        audio_h = sum(e.duration_s for e in done) / 3600
        rtf = audio_h * 3600 / max(time.monotonic() - started, 1e-9)
        log.info("detect: %s; %.2f h of audio, %.0fx real time%s", line, audio_h, rtf, _error(entry))
        update_progress_artifact(artifact, 100 * progress.fraction, description=f"detect: {line}")
    return done


def _duration_s(probe, file: str) -> float:
    """A recording's length from its header (its share of the work), 0 if unreadable (the task says why)."""
    try:
        return float(probe(file)["duration_s"])
    except Exception:  # noqa: BLE001 (any unreadable file: scoring it reports the error)
        return 0.0


def _error(entry: Scored) -> str:
    return f" ({entry.file}: {entry.error})" if entry.status != "ok" else ""


@flow(name="detect", validate_parameters=True)
def detect(params: DetectParams) -> DetectSummary:
    """Recordings -> window scores (resumable, in parallel) -> events under per-class thresholds -> detections.csv,
    a Raven selection table and an Audacity label file per recording -> one MLflow run and a summary."""
    log, started = get_run_logger(), time.monotonic()
    files = list_recordings(params.paths, recursive=params.recursive)
    model = resolve_model(params.model, params.alias)
    hop_s = params.hop_s or model.default_hop_s()
    out = out_dir(params, model)
    key = model_key(model, hop_s)
    planned = plan(files, journal.read(out / journal.JOURNAL_FILE), key)
    finished = [replace(p.finished, file=p.file) for p in planned if p.finished]
    log.info(
        "detect: %s v%s on %d recordings (%d already done), %g-s windows every %g s -> %s",
        model.name, model.version, len(files), len(finished), model.window_s, hop_s, out,
    )  # fmt: skip
    thresholds = _thresholds(model, params, log)
    runner = task_runner(params.runner, n_jobs=params.n_jobs, dask_address=params.dask_address)
    with config.workers_share_prefect_api():
        scored = score_recordings.with_options(task_runner=runner)(
            [p for p in planned if not p.finished], model, hop_s, str(out)
        )
    entries = finished + scored
    events = detect_events(
        read_scores(entries),
        thresholds,
        levels=read_levels(entries),
        ignore=(*model.background, *params.background_classes),
        merge_gap_s=params.merge_gap_s,
        score=params.event_score,
        min_snr_db=params.min_snr_db,
    )
    ok = [e.file for e in entries if e.status == "ok"]
    detections, tables = write_tables(events, ok, out, roots=params.paths, high_freq_hz=model.sample_rate / 2)
    return report_analysis(
        params.experiment,
        model=model,
        params=params.model_dump(exclude={"paths"}),
        thresholds=thresholds,
        entries=entries,
        n_scored=len(scored),
        events=events,
        detections=detections,
        tables=tables,
        out_dir=str(out),
        started=started,
    )


def _thresholds(model: DetectModel, params: DetectParams, log) -> dict[str, float]:
    """--min-score for every class, else the model's calibrated thresholds (said plainly: they hold on data like
    its training data), else 0.5 with a warning (a model registered before calibration)."""
    classes = [c for c in model.class_names if c not in model.background]
    if params.min_score is not None:
        return {c: params.min_score for c in classes}
    if model.thresholds:
        log.info(
            "detect: per-class thresholds calibrated on the model's out-of-fold scores for precision %s; they hold "
            "on recordings like its training data (check a sample, or pass --min-score)",
            model.target_precision,
        )
        return {c: float(model.thresholds.get(c, 0.5)) for c in classes}
    log.warning("detect: %s v%s has no calibrated thresholds (registered before they existed): 0.5 for every class, "
                "or pass --min-score", model.name, model.version)  # fmt: skip
    return {c: 0.5 for c in classes}

"""Detection with a registered model: the model's facts (classes, window, calibrated thresholds), one recording's
window scores as a task, and the analysis as one MLflow run."""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.cache import atomic_path, digest, save_npy
from tasks.config import tracking_uri
from tasks.detection.activity import frame_levels
from tasks.detection.analysis import summary_lines
from tasks.errors import SoundflowError
from tasks.logs import run_logger
from tasks.records import DetectModel, DetectSummary, Scored
from tasks.runtime import limit_threads
from tasks.tracking import runs as tracking
from tasks.tracking.registry import ALIAS, default_model_name, is_background


def resolve_model(name: str | None, alias: str = ALIAS) -> DetectModel:
    """The version behind models:/<name>@<alias> (default: the champion registered last) and its config."""
    from tasks.tracking.pyfunc import load_model

    name = name or default_model_name()
    try:
        mv = tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise SoundflowError(
            f"no models:/{name}@{alias} in {tracking_uri()}: {exc.message.splitlines()[0]}. Train and register one "
            "first (`make run PRESET=quick`), or pass --model/--alias of an existing registered model."
        ) from exc
    uri = f"models:/{name}/{mv.version}"
    cfg = load_model(uri).unwrap_python_model().config
    names = tuple(cfg["class_names"])
    background = tuple(cfg.get("background_classes") or [c for c in names if is_background(c)])
    return DetectModel(
        name=name,
        version=str(mv.version),
        uri=uri,
        class_names=names,
        window_s=float(cfg.get("window_s") or cfg.get("duration_s")),
        sample_rate=int(cfg["sample_rate"]),
        thresholds={str(k): float(v) for k, v in (cfg.get("thresholds") or {}).items()},
        target_precision=cfg.get("target_precision"),
        background=background,
    )


_LOADED: dict[str, object] = {}  # one loaded model per worker process


def model_key(model: DetectModel, hop_s: float) -> str:
    """What a recording's window scores depend on: the model version and the hop."""
    return digest(model.name, model.version, round(float(hop_s), 6), length=12)


def _model(uri: str):
    if uri not in _LOADED:
        from tasks.tracking.pyfunc import load_model

        _LOADED[uri] = load_model(uri).unwrap_python_model()
    return _LOADED[uri]


def score_recording(file: str, sha256: str, model: DetectModel, *, hop_s: float, scores_dir: str) -> Scored:
    """One recording's window scores written to <scores_dir>/<content>-<model key>.parquet; a recording that
    cannot be read gives an error entry (the analysis goes on with the others)."""
    from tasks.tracking.timeline import score_windows

    key, t0 = model_key(model, hop_s), time.perf_counter()
    try:
        scores = score_windows(_model(model.uri), file, hop_s=hop_s)
    except (SoundflowError, OSError, ValueError) as exc:
        return Scored(
            file, sha256, key, "error", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0
        )
    path = Path(scores_dir) / f"{sha256[:16]}-{key}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(levels_path(path), frame_levels(file))  # first: the scores file marks a finished analysis
    with atomic_path(path) as tmp:
        scores.to_parquet(tmp, index=False)
    return Scored(
        file,
        sha256,
        key,
        "ok",
        duration_s=float(scores["end_s"].max()) if len(scores) else 0.0,
        n_windows=len(scores),
        scores=str(path),
        seconds=time.perf_counter() - t0,
    )


@task(cache_policy=NO_CACHE, task_run_name="score {name}")
def score_task(file: str, sha256: str, model: DetectModel, hop_s: float, scores_dir: str, name: str = "") -> Scored:
    """score_recording in a worker (one thread for BLAS and TensorFlow: the workers share the cores)."""
    limit_threads(1)
    return score_recording(file, sha256, model, hop_s=hop_s, scores_dir=scores_dir)


def levels_path(scores: str | os.PathLike) -> Path:
    """Where a recording's frame levels (tasks/detection/activity.py) lie beside its window scores."""
    return Path(scores).with_suffix(".levels.npy")


def read_levels(entries: Sequence[Scored]) -> dict[str, np.ndarray]:
    """Each analysed recording's frame levels, by the file as given this time."""
    return {
        e.file: np.load(levels_path(e.scores)) for e in entries if e.status == "ok" and levels_path(e.scores).is_file()
    }


def read_scores(entries: Sequence[Scored]) -> pd.DataFrame:
    """The window scores of the recordings analysed, in their order, `file` as each was given this time."""
    frames = [pd.read_parquet(e.scores).assign(file=e.file) for e in entries if e.status == "ok"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report_analysis(
    experiment: str,
    *,
    model: DetectModel,
    params: dict,
    thresholds: dict[str, float],
    entries: Sequence[Scored],
    n_scored: int,
    events: pd.DataFrame,
    detections: Path,
    tables: Sequence[Path],
    out_dir: str,
    started: float,
) -> DetectSummary:
    """The analysis as one MLflow run (model name, version and URI, thresholds, files, hours, detections per class,
    the real-time factor; detections.csv and the thresholds as artifacts), its summary in the log and as a
    Prefect artifact (detections per class, busiest recordings, where the tables are, what failed)."""
    seconds = time.monotonic() - started
    ok = [e for e in entries if e.status == "ok"]
    hours = sum(e.duration_s for e in ok) / 3600
    tags = {"soundflow.kind": "detect", "soundflow.model": f"{model.name}/{model.version}"}
    run_params = {**params, "model_name": model.name, "model_version": model.version, "model_uri": model.uri}
    with tracking.run(tracking.ensure_experiment(experiment), name="detect", params=run_params, tags=tags) as run_id:
        tracking.log_params(run_id, {"thresholds": thresholds})
        metrics = {
            "n_files": len(entries),
            "n_failed": len(entries) - len(ok),
            "n_scored": n_scored,  # analysed by this run (the others were in the journal)
            "audio_hours": hours,
            "n_detections": len(events),
            "seconds": seconds,
            "real_time_factor": hours * 3600 / seconds if seconds > 0 else 0.0,
        }
        for label, n in events["label"].value_counts().items() if len(events) else []:
            metrics[f"detections_{_metric_name(str(label))}"] = int(n)
        tracking.log_metrics(run_id, metrics)
        tracking.log_file(run_id, detections, "detections")
        tracking.log_file(run_id, _zipped(tables, out_dir), "detections")  # the Raven and Audacity tables
        tracking.log_text(run_id, json.dumps(thresholds, indent=1, ensure_ascii=False), "thresholds.json")
        failed = [e for e in entries if e.status != "ok"]
        if failed:
            tracking.log_frame(
                run_id, pd.DataFrame([(e.file, e.error) for e in failed], columns=["file", "error"]), "failed.csv"
            )
        tracking.client().set_tag(run_id, "soundflow.detect_out", os.path.abspath(out_dir))
    lines = [*summary_lines(events, n_files=len(entries), hours=hours), f"tables: {out_dir}"]
    if failed:
        lines.append(f"{len(failed)} recording(s) failed: " + "; ".join(f"{e.file}: {e.error}" for e in failed[:5]))
    log = run_logger(__name__)
    for line in lines:
        log.info("detect: %s", line)
    create_markdown_artifact(markdown="\n\n".join(lines), key="detect-summary", description="soundflow detect")
    return DetectSummary(
        out=out_dir,
        detections=str(detections),
        model_uri=model.uri,
        n_files=len(entries),
        n_scored=n_scored,
        n_skipped=len(entries) - n_scored,
        n_failed=len(failed),
        n_detections=len(events),
        audio_hours=hours,
        seconds=seconds,
        run_id=run_id,
        lines=tuple(lines),
    )


def _zipped(tables: Sequence[Path], out_dir: str) -> Path:
    """The per-recording tables in one archive (tables.zip in the output folder), paths relative to it."""
    path = Path(out_dir) / "tables.zip"
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for table in tables:
            archive.write(table, Path(table).relative_to(out_dir).as_posix())
    return path


def _metric_name(label: str) -> str:
    """An MLflow metric name for a class (letters, digits, _ - . / and spaces are allowed)."""
    return "".join(ch if ch.isalnum() or ch in "_-. /" else "_" for ch in label)


def evaluate_detections(
    detections: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    resolution_s: float = 1.0,
    collar_s: float = 0.2,
    log_to_mlflow: bool = False,
    sources: dict[str, str] | None = None,
    experiment: str = "soundflow-detect",
) -> dict:
    """Segment-based metrics at resolution_s and event-based metrics with an onset collar (DCASE's definitions,
    tasks/detection/metrics.py) of detections against a reference; an MLflow run of them when asked. Recordings
    are matched by file name (detections name a path as given, tables the recording beside them)."""
    from tasks.detection.metrics import event_metrics, segment_metrics

    est, ref = detections.copy(), reference.copy()
    if "kind" in ref.columns:  # a reviewed table as the reference: its confirmed events only
        ref = ref[ref["kind"] == "event"]
    est["file"], ref["file"] = est["file"].map(_stem), ref["file"].map(_stem)
    est = est[est["file"].isin(set(ref["file"]))] if len(ref) else est
    segment = segment_metrics(ref, est, resolution_s=resolution_s)
    event = event_metrics(ref, est, t_collar_s=collar_s)
    figures: dict = {"segment": segment, "event": event, "n_reference": len(ref), "n_detections": len(est)}
    if log_to_mlflow:
        exp = tracking.ensure_experiment(experiment)
        tags = {"soundflow.kind": "evaluate-detections"}
        with tracking.run(exp, name="evaluate-detections", params=sources or {}, tags=tags) as run_id:
            tracking.log_metrics(
                run_id,
                {
                    f"{kind}_{k}": float(v)
                    for kind, values in (("segment", segment), ("event", event))
                    for k, v in values.items()
                    if isinstance(v, (int, float))
                },
            )
            tracking.log_text(run_id, json.dumps(figures, indent=1, default=str), "detection_metrics.json")
        figures["run_id"] = run_id
    return figures


def _stem(file: str) -> str:
    """A recording's name without folder and audio extension (how tables and detections name it differs)."""
    from tasks.data.layouts.base import AUDIO_EXTENSIONS

    path = Path(str(file))
    return path.stem if path.suffix.lower() in AUDIO_EXTENSIONS else path.name

"""One nested MLflow run per configuration, logged in one place once its folds have finished."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import save_json, save_npy
from tasks.data.manifest import class_names, pooling, read_manifest
from tasks.data.split import load_splits
from tasks.errors import SoundflowError
from tasks.evaluation.metrics import confusion_figure, confusion_frame, cv_summary, scalar_metrics
from tasks.evaluation.train import assemble, config_dir
from tasks.features.pretrained import license_tags
from tasks.records import Config, ConfigResult, CVInputs, FoldResult
from tasks.tracking import runs as tracking


@task(cache_policy=NO_CACHE, task_run_name="log {config.name}")
def log_configuration_task(
    config: Config, inputs: CVInputs, folds: list[FoldResult], experiment_id: str, parent_id: str, results_dir: str
) -> ConfigResult:
    """Assemble the folds' out-of-fold probabilities, score them per recording and log the nested run.

    A fold that failed (its FoldResult carries the error) makes the run FAILED (with the error as a tag) and raises
    SoundflowError, so the flow can go on with the others."""
    log = get_run_logger()
    manifest = read_manifest(inputs.manifest)
    names, y = class_names(manifest), manifest["class_id"].to_numpy()
    owner, weights = pooling(manifest)
    splits = load_splits(inputs.splits)
    out = config_dir(config, inputs, results_dir)
    tags = {"soundflow.kind": "model", "soundflow.config": config.name, **license_tags([config.features])}
    with tracking.run(
        experiment_id, name=config.name, params=config.params(), parent_id=parent_id, tags=tags
    ) as run_id:
        failed = [f for f in folds if f.error]
        if failed:
            raise SoundflowError(f"{config.name}: fold {failed[0].fold + 1} failed: {failed[0].error}")
        ordered = sorted(folds, key=lambda f: f.fold)
        proba, cv, histories = assemble([f.path for f in ordered], len(y), len(names), y)
        if all(f.reused for f in ordered):
            tracking.client().set_tag(run_id, "soundflow.reused", "true")
        # where the folds ran (worker process ids): the flow's own process never trains
        tracking.client().set_tag(run_id, "soundflow.fold_pids", ",".join(str(f.pid) for f in ordered))
        summary = cv_summary(y, proba, splits, names, owner=owner, weights=weights)
        _log_result(run_id, summary, cv, names, config.name)
        for k, history in enumerate(histories):
            if history:
                tracking.log_history(run_id, history, fold=k)
        if histories and histories[0]:
            _log_keras_fold(run_id, out, histories[0])
        save_npy(out / "proba.npy", proba)
        save_json(out / "summary.json", cv)
        if any(histories):
            save_json(out / "history.json", histories)
        log.info("%s: %.1f%% +- %.1f", config.name, 100 * summary["cv_accuracy_mean"], 100 * summary["cv_accuracy_sem"])
    return ConfigResult(
        config=config,
        run_id=run_id,
        proba=str(out / "proba.npy"),
        cv_accuracy_mean=summary["cv_accuracy_mean"],
        cv_accuracy_sem=summary["cv_accuracy_sem"],
        macro_f1_mean=summary["macro_f1_mean"],
        fit_seconds=float(np.sum(cv["fit_seconds"])),
        history=str(out / "history.json") if any(histories) else None,
    )


def _log_result(run_id: str, summary: dict, cv: dict, names: list[str], title: str) -> None:
    tracking.log_series(run_id, "fold_accuracy", summary["fold_accuracy"])
    tracking.log_series(run_id, "fold_macro_f1", summary["fold_macro_f1"])
    metrics = scalar_metrics(summary)
    metrics["fit_seconds"] = float(np.sum(cv["fit_seconds"]))
    metrics["predict_seconds"] = float(np.sum(cv["predict_seconds"]))
    if cv.get("aug_test_accuracy") is not None:
        metrics["aug_test_accuracy"] = cv["aug_test_accuracy"]
    tracking.log_metrics(run_id, metrics)
    tracking.log_figure(run_id, confusion_figure(summary["confusion"], names, title=title), "confusion_matrix.png")
    tracking.log_frame(run_id, confusion_frame(summary["confusion"], names), "confusion_matrix.csv")
    tracking.log_text(run_id, summary["report"], "classification_report.txt")


def _log_keras_fold(run_id: str, out: Path, history: dict) -> None:
    """Learning curves and the fold-0 network saved by fit_fold (its input: the estimator's scaled model input)."""
    from tasks.models.keras_model import KerasClassifier, learning_curve_figure

    tracking.log_figure(run_id, learning_curve_figure(history), "learning_curve.png")
    if not (out / "fold0.keras").exists():
        return
    est = KerasClassifier.load(out / "fold0.keras")
    tracking.log_keras_model(run_id, est.model_, est.network_input(np.load(out / "fold0_example.npy")))

"""One nested MLflow run per configuration, logged in one place once its folds have finished."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import cached_folder, save_json, save_npy
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
    SoundflowError, so the flow can go on with the others. The artifacts (confusion matrix, report, learning curve,
    fold-0 network) are rendered once into the configuration's results folder: a run whose folds were all reused
    logs that folder again, in one call and without TensorFlow."""
    log = get_run_logger()
    manifest = read_manifest(inputs.manifest)
    names, y = class_names(manifest), manifest["class_id"].to_numpy()
    owner, weights = pooling(manifest)
    splits = load_splits(inputs.splits)
    out = config_dir(config, inputs, results_dir)
    ordered = sorted(folds, key=lambda f: f.fold)
    reused = bool(ordered) and all(f.reused for f in ordered)
    tags = {
        "soundflow.kind": "model",
        "soundflow.config": config.name,
        # where the folds ran (worker process ids): the flow's own process never trains
        "soundflow.fold_pids": ",".join(str(f.pid) for f in ordered),
        **({"soundflow.reused": "true"} if reused else {}),
        **license_tags([config.features]),
    }
    with tracking.run(
        experiment_id, name=config.name, params=config.params(), parent_id=parent_id, tags=tags
    ) as run_id:
        failed = [f for f in ordered if f.error]
        if failed:
            raise SoundflowError(f"{config.name}: fold {failed[0].fold + 1} failed: {failed[0].error}")
        proba, cv, histories = assemble([f.path for f in ordered], len(y), len(names), y)
        summary = cv_summary(y, proba, splits, names, owner=owner, weights=weights)
        series = {"fold_accuracy": summary["fold_accuracy"], "fold_macro_f1": summary["fold_macro_f1"]}
        for k, history in enumerate(histories):
            series.update(tracking.history_series(history or {}, fold=k))
        tracking.log_batch(run_id, _metrics(summary, cv), series)
        folder = out / "artifacts"
        if not reused:  # a fold was fitted again: what an earlier run rendered may be stale
            shutil.rmtree(folder, ignore_errors=True)
        first = histories[0] if histories else None
        tracking.log_folder(run_id, cached_folder(folder, partial(_render, summary, names, config.name, out, first)))
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


def _metrics(summary: dict, cv: dict) -> dict[str, float]:
    metrics = scalar_metrics(summary)
    metrics["fit_seconds"] = float(np.sum(cv["fit_seconds"]))
    metrics["predict_seconds"] = float(np.sum(cv["predict_seconds"]))
    if cv.get("aug_test_accuracy") is not None:
        metrics["aug_test_accuracy"] = cv["aug_test_accuracy"]
    return metrics


def save_confusion(summary: dict, names: list[str], title: str, folder: Path) -> None:
    """A result's confusion matrix (PNG, CSV) and classification report, as files in `folder`."""
    tracking.save_figure(confusion_figure(summary["confusion"], names, title=title), folder / "confusion_matrix.png")
    confusion_frame(summary["confusion"], names).to_csv(folder / "confusion_matrix.csv", index=False)
    (folder / "classification_report.txt").write_text(summary["report"], encoding="utf-8")


def _render(summary: dict, names: list[str], title: str, out: Path, history: dict | None, folder: Path) -> None:
    """The run's artifact files: confusion matrix (PNG, CSV), classification report; for a network, the learning
    curves and the fold-0 network saved by fit_fold in MLflow's Keras flavor (its input: the estimator's scaled
    model input)."""
    save_confusion(summary, names, title, folder)
    if not history:
        return
    from tasks.models.keras_model import KerasClassifier, learning_curve_figure

    tracking.save_figure(learning_curve_figure(history), folder / "learning_curve.png")
    if (out / "fold0.keras").exists():
        est = KerasClassifier.load(out / "fold0.keras")
        (folder / "model_fold0").mkdir()
        tracking.save_keras_model(
            est.model_, est.network_input(np.load(out / "fold0_example.npy")), folder / "model_fold0"
        )

"""One model x representation under k-fold CV: fit, score, and log a nested MLflow run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import tracking
from tasks.cache import digest, save_json, save_npy
from tasks.evaluate import cross_validate
from tasks.evaluation.progress import Throttle, eta_text
from tasks.ingest import read_manifest
from tasks.metrics import confusion_figure, confusion_frame, cv_summary, scalar_metrics
from tasks.models import catalog
from tasks.split import load_splits


def run_name(model: str, features: str, augmented: bool, repeat: int | None = None) -> str:
    """The name a configuration carries everywhere (MLflow run, tables, ensembles)."""
    name = f"{model}/{features}{'+aug' if augmented else ''}"
    return f"{name}#{repeat}" if repeat is not None else name


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Class names in class-id order, from the manifest."""
    pairs = manifest[["class_id", "class_name"]].drop_duplicates().sort_values("class_id")
    return pairs["class_name"].tolist()


def _load(path: str | None):
    return None if path is None else np.load(path, mmap_mode="r")


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


# Per-epoch progress lines of deep models: at most one every this many seconds (and the end of fold 1).
EPOCH_LINE_EVERY_S = 20.0


def _epoch_progress(model: str, fn):
    """Per-epoch progress while a deep model trains (nothing for the others: they never import Keras)."""
    import contextlib

    if catalog.info(model).family not in ("mlp", "cnn1d", "cnn2d") or model.endswith("_sklearn"):
        return contextlib.nullcontext()
    from tasks.models.keras_model import epoch_hook

    return epoch_hook(fn)


def _log_keras_fold(run_id: str, est, X_example: np.ndarray) -> None:
    """Learning curves and the fold-0 network (Keras flavor; its input is the estimator's scaled model input)."""
    from tasks.models.keras_model import learning_curve_figure

    tracking.log_figure(run_id, learning_curve_figure(est.history_), "learning_curve.png")
    x = est._scale(est._as_model_input(np.asarray(X_example, dtype=np.float32)))
    if est.random_crop_frames and est.predict_crops:
        x = est._crops(x, 1)[0]                     # the network sees one crop at a time
    tracking.log_keras_model(run_id, est.model_, x)


@task(cache_policy=NO_CACHE, task_run_name="train {spec[name]}")
def train_task(spec: dict, inputs: dict, experiment_id: str, parent_id: str, results_dir: str) -> dict:
    """Cross-validate one configuration; reuse a finished result from disk if its inputs are unchanged.

    spec: name, model, features, augmented, seed, hyper, n_jobs, score_aug_test.
    inputs: manifest, splits, features {kind: path}, aug_features {kind: path}."""
    log = get_run_logger()
    manifest = read_manifest(inputs["manifest"])
    names = class_names(manifest)
    y = manifest["class_id"].to_numpy()
    groups = manifest["source_id"].astype(str).to_numpy()
    splits = load_splits(inputs["splits"])
    feat = spec["features"]
    aug_path = inputs["aug_features"].get(feat) if spec["augmented"] else None
    key = digest(spec, Path(inputs["features"][feat]).name, Path(aug_path).name if aug_path else None,
                 Path(inputs["splits"]).read_text())
    out = Path(results_dir) / f"{spec['name'].replace('/', '_')}-{key}"
    params = {"model": spec["model"], "features": feat, "augmented": spec["augmented"], "seed": spec["seed"],
              "family": catalog.info(spec["model"]).family, "hyper": spec.get("hyper") or {}}
    if spec.get("augmentation"):
        params["augmentation"] = spec["augmentation"]
    with tracking.run(experiment_id, name=spec["name"], params=params, parent_id=parent_id,
                      tags={"soundflow.kind": "model", "soundflow.config": spec["name"]}) as run_id:
        if (out / "summary.json").exists() and (out / "proba.npy").exists():
            log.info("%s: reusing the finished result in %s", spec["name"], out)
            proba = np.load(out / "proba.npy")
            cv = json.loads((out / "summary.json").read_text())
            tracking.client().set_tag(run_id, "soundflow.reused", "true")
        else:
            X, X_aug = _load(inputs["features"][feat]), _load(aug_path)
            factory = catalog.make(spec["model"], seed=spec["seed"], n_jobs=spec.get("n_jobs", 1), hyper=spec.get("hyper"))
            t0 = time.perf_counter()
            n_folds, state = len(splits), {"fold": 0}
            histories: list[dict] = []
            throttle = Throttle(EPOCH_LINE_EVERY_S)

            def on_epoch(epoch: int, epochs: int, logs: dict) -> None:
                if throttle(force=epoch == epochs and state["fold"] == 0):
                    done = (state["fold"] + epoch / epochs) / n_folds
                    log.info("%s: fold %d/%d epoch %d/%d loss %.3f (%s for this configuration)", spec["name"],
                             state["fold"] + 1, n_folds, epoch, epochs, logs.get("loss", float("nan")),
                             eta_text(done, time.perf_counter() - t0))

            def on_fold(k: int, info: dict) -> None:
                state["fold"] = k + 1
                log.info("%s: fold %d/%d accuracy %.3f (fit %.1fs; %s for this configuration)", spec["name"], k + 1,
                         n_folds, info["accuracy"], info["fit_seconds"], eta_text((k + 1) / n_folds, time.perf_counter() - t0))
                throttle(force=True)
                est = info["estimator"]
                if hasattr(est, "history_"):
                    histories.append(est.history_)
                    tracking.log_history(run_id, est.history_, fold=k)
                    if k == 0:
                        _log_keras_fold(run_id, est, np.asarray(X[splits[0][1][:2]]))

            log.info("%s: training on %d folds", spec["name"], n_folds)
            with _epoch_progress(spec["model"], on_epoch):
                res = cross_validate(factory, np.asarray(X), y, splits, groups=groups, n_classes=len(names),
                                     X_aug=None if X_aug is None else np.asarray(X_aug),
                                     score_aug_test=spec.get("score_aug_test", False), on_fold=on_fold)
            proba = res["proba"]
            cv = {"fit_seconds": res["fit_seconds"], "predict_seconds": res["predict_seconds"],
                  "wall_seconds": time.perf_counter() - t0, "aug_test_accuracy": None}
            if res["aug_proba"] is not None:
                tested = ~np.isnan(res["aug_proba"][..., 0])
                hits = res["aug_proba"].argmax(-1) == y[:, None]
                cv["aug_test_accuracy"] = float(hits[tested].mean())
            if histories:
                save_json(out / "history.json", histories)
            save_npy(out / "proba.npy", proba)
            save_json(out / "summary.json", cv)
        summary = cv_summary(y, proba, splits, names)
        _log_result(run_id, summary, cv, names, spec["name"])
        log.info("%s: %.1f%% +- %.1f", spec["name"], 100 * summary["cv_accuracy_mean"], 100 * summary["cv_accuracy_sem"])
    return {"name": spec["name"], "model": spec["model"], "features": feat, "augmented": spec["augmented"],
            "family": params["family"], "run_id": run_id, "proba": str(out / "proba.npy"),
            "cv_accuracy_mean": summary["cv_accuracy_mean"], "cv_accuracy_sem": summary["cv_accuracy_sem"],
            "macro_f1_mean": summary["macro_f1_mean"], "fit_seconds": float(np.sum(cv["fit_seconds"])),
            "history": str(out / "history.json") if (out / "history.json").exists() else None}


_FAMILY_COST = {"cnn2d": 0, "cnn1d": 1, "mlp": 2, "classical": 3}


def longest_first(specs: list[dict]) -> list[dict]:
    """Specs in the order a worker pool finishes soonest: the expensive families (and augmented runs) first."""
    return sorted(specs, key=lambda s: (_FAMILY_COST.get(catalog.info(s["model"]).family, 9), not s["augmented"]))


def init_worker(n_workers: int) -> None:
    """Process-pool initializer: split the cores between the workers before TensorFlow starts.

    Measured here: two one-thread Keras trainings side by side finish 1.25x sooner than the same two
    in turn on two threads each (bench/train.py, 205 s vs 256 s per pair of folds)."""
    import os

    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # TensorFlow's native log lines (see tasks/runtime.py)


def plan(models: list[str], features: list[str], augmented: list[str], *, seed: int, repeats: dict[str, int],
         hyper: dict[str, dict], n_jobs: int = 1, score_aug_test: bool = False, augmentation: dict | None = None) -> list[dict]:
    """Every configuration to cross-validate: models x accepted features, plus the augmented variants asked for.

    A model entry "name/features" trains that model on those features only (e.g. "mlp_sklearn/engineered").
    """
    specs = []
    for entry in models:
        model, only = catalog.model_entry(entry)
        meta = catalog.info(model)
        feats = [only] if only else [f for f in features if f in meta.features] or list(meta.features[:1])
        for feat in feats:
            variants = [False]
            if model in augmented or f"{model}/{feat}" in augmented:
                variants = [True] if meta.family in ("cnn2d",) else [False, True]
            for aug in variants:
                n_rep = repeats.get(model, 1)
                for r in range(n_rep):
                    specs.append({"name": run_name(model, feat, aug, r if n_rep > 1 else None), "model": model,
                                  "features": feat, "augmented": aug, "seed": seed + r, "hyper": hyper.get(model, {}),
                                  "n_jobs": n_jobs, "score_aug_test": score_aug_test and aug,
                                  "augmentation": augmentation if aug else None})
    return specs

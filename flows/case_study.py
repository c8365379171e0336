"""The ESC-10 case study as one Prefect flow: it only composes the tasks in tasks/."""
from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner

from flows.params import CaseStudyParams
from tasks import config
from tasks.augment import augment_task
from tasks.ensemble_cv import ensemble_task
from tasks.evaluation.progress import WorkProgress, estimated_cost
from tasks.features import features_task
from tasks.ghosts import close_ghosts_task
from tasks.html_report import html_report_task
from tasks.ingest import fetch_dataset, ingest
from tasks.registry import best_single, model_name, register_task
from tasks.report import report_task, spectrogram_examples_task
from tasks.split import split_task, subset_task
from tasks.run_summary import run_description
from tasks.tracking import end_run, fail_runs_of_flow_run, open_parent_run, run_url, set_description
from tasks.train import init_worker, longest_first, plan, train_task


def _mark_mlflow_failed(flow, flow_run, state) -> None:
    """Failure/crash hook: no MLflow run of this flow run is left RUNNING."""
    fail_runs_of_flow_run(str(flow_run.id))


def protocol_text(split: str, k: int) -> str:
    """The evaluation protocol in words."""
    return {"official": "cross-validation on the official folds", "group_kfold": f"{k}-fold CV grouped by source",
            "book_holdout": "the book's 8-per-class hold-out"}[split]


# Model trainings run in two worker processes (one per core, TensorFlow pinned to one thread each):
# Keras keeps global state per process, and BLAS/TF threads don't add up across Python threads.
WORKERS = 2


@flow(name="case-study", task_runner=ProcessPoolTaskRunner(max_workers=WORKERS, initializer=init_worker,
                                                            initargs=(WORKERS,)),
      validate_parameters=True,
      on_failure=[_mark_mlflow_failed], on_crashed=[_mark_mlflow_failed], on_cancellation=[_mark_mlflow_failed])
def case_study(params: CaseStudyParams = CaseStudyParams()) -> dict:
    """Ingest -> split -> features (+ augmented training copies) -> k-fold CV per model -> ensembles -> report."""
    log = get_run_logger()
    started = time.monotonic()
    data_dir = str(config.data_dir())
    root = fetch_dataset(params.source, data_dir)
    data = ingest(root, params.dataset, params.sample_rate, params.duration_s, data_dir, params.n_jobs)
    if params.clips_per_class_fold:
        data = subset_task(data, params.clips_per_class_fold, str(config.stage_dir("interim")))
    experiment = params.experiment or f"soundflow-{params.dataset}"
    close_ghosts_task()      # runs a killed process left RUNNING: KILLED, with the reason
    exp_id, parent_id = open_parent_run(experiment, params.model_dump(), data["manifest"], data["digest"])
    splits = split_task(data["manifest"], params.split, params.k, params.seed,
                        str(config.stage_dir("interim") / f"splits-{data['digest']}-{params.split}-{params.k}-{params.seed}.json"))

    specs = plan(params.models, params.features, params.augmented, seed=params.seed, repeats=params.repeats,
                 hyper=params.hyper, n_jobs=1, score_aug_test=params.score_augmented_test,
                 augmentation=params.augmentation.model_dump())
    kinds = sorted({s["features"] for s in specs})
    aug_kinds = sorted({s["features"] for s in specs if s["augmented"]})
    opts = params.feature_opts
    feats = {k: features_task(data["clips"], k, params.sample_rate, opts.get(k, {}), data_dir) for k in kinds}
    aug_feats = {}
    if aug_kinds:
        aug_clips = augment_task(data["clips"], data["manifest"], params.sample_rate, params.augmentation.model_dump(),
                                 params.seed, data_dir, params.n_jobs)
        aug_feats = {k: features_task(aug_clips, k, params.sample_rate, opts.get(k, {}), data_dir) for k in aug_kinds}
    inputs = {"manifest": data["manifest"], "splits": splits, "features": feats, "aug_features": aug_feats,
              "feature_opts": opts}

    log.info("cross-validating %d configurations on %d clips", len(specs), data["n_clips"])
    results_dir = str(config.stage_dir("results"))
    ordered = longest_first(specs)
    progress = WorkProgress([estimated_cost(s) for s in ordered])
    artifact = create_progress_artifact(0.0, key="cross-validation",
                                        description=f"cross-validation of {len(ordered)} configurations")
    with config.workers_share_prefect_api():
        futures = [train_task.submit(spec, inputs, exp_id, parent_id, results_dir) for spec in ordered]
        index = {f.task_run_id: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            future.result()                                   # a failed training fails the flow here
            line = progress.finish(index[future.task_run_id])
            log.info("cross-validation: %s", line)
            update_progress_artifact(artifact, 100 * progress.fraction, description=f"cross-validation: {line}")
        results = [f.result() for f in futures]

    if params.ensembles and len(results) > 1:
        results += ensemble_task(results, data["manifest"], splits, params.ensembles, n_members=params.ensemble_members,
                                 method=params.optimizer, seed=params.seed, experiment_id=exp_id, parent_id=parent_id,
                                 results_dir=results_dir)
    spectrogram_examples_task(data["clips"], data["manifest"], params.sample_rate, parent_id)
    report_task(results, parent_id, str(config.stage_dir("reports")))
    champion = None
    if params.register_champion:
        champion = register_task(best_single(results), inputs, params.model_dump(), exp_id, parent_id)
    if champion:
        champion = {**champion, "configuration": best_single(results)["name"]}
    best = max(results, key=lambda r: r["cv_accuracy_mean"])
    summary = {"parent_run_id": parent_id, "experiment_id": exp_id, "best": best["name"],
               "best_accuracy": best["cv_accuracy_mean"],
               "champion": champion, "results": {r["name"]: round(r["cv_accuracy_mean"], 4) for r in results},
               "results_table": [{k: r[k] for k in ("name", "family", "cv_accuracy_mean", "cv_accuracy_sem")}
                                 for r in results],
               "dataset": params.dataset, "source": str(root), "preset": params.preset, "n_clips": data["n_clips"],
               "protocol": protocol_text(params.split, params.k), "seconds": time.monotonic() - started,
               "tracking_uri": config.tracking_uri(), "run_url": run_url(parent_id),
               "registered_model": model_name(params.dataset)}
    set_description(parent_id, run_description(summary))
    summary["report"] = html_report_task(results, data, splits, summary, parent_id, str(config.stage_dir("reports")))
    end_run(parent_id, "FINISHED")
    return summary

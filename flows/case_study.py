"""The case study (ESC-10 by default, any dataset layout) as one Prefect flow: it only composes the tasks in tasks/."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import CaseStudyParams
from flows.runners import task_runner
from tasks import config
from tasks.augment.copies import augment_task
from tasks.data.ingest import ingest
from tasks.data.sources import fetch_dataset
from tasks.data.split import n_folds, split_task, subset_task
from tasks.errors import SoundflowError
from tasks.evaluation.ensemble_cv import ensemble_task
from tasks.evaluation.train import fold_outcome, fold_task, longest_first, plan
from tasks.features.representations import features_task
from tasks.tracking.audit import audit_task
from tasks.tracking.cv_runs import log_configuration_task
from tasks.tracking.registry import best_result, register_task
from tasks.tracking.report import dataset_summary_task, report_task, spectrogram_examples_task
from tasks.tracking.runs import end_run, fail_runs_of_flow_run, open_parent_run


def _mark_mlflow_failed(flow, flow_run, state) -> None:
    """Failure/crash hook: no MLflow run of this flow run is left RUNNING."""
    fail_runs_of_flow_run(str(flow_run.id))


@flow(name="cross-validation")
def cross_validation(specs: list[dict], inputs: dict, n_folds: int, experiment_id: str, parent_id: str,
                     results_dir: str) -> tuple[list[dict], list[str]]:
    """Every (configuration, fold) is one task on this flow's runner; a configuration is logged once its folds are
    done. Returns the results and the configurations that failed (their runs FAILED, the others go on)."""
    futures = {(s["name"], k): fold_task.submit(s, inputs, k, results_dir) for s in specs for k in range(n_folds)}
    results, failed = [], []
    for spec in specs:
        folds = [fold_outcome(futures[(spec["name"], k)], spec, k) for k in range(n_folds)]
        try:
            results.append(log_configuration_task(spec, inputs, folds, experiment_id, parent_id, results_dir))
        except SoundflowError as exc:
            failed.append(str(exc))
    return results, failed


@flow(name="case-study", validate_parameters=True,
      on_failure=[_mark_mlflow_failed], on_crashed=[_mark_mlflow_failed], on_cancellation=[_mark_mlflow_failed])
def case_study(params: CaseStudyParams = CaseStudyParams()) -> dict:  # noqa: B008 (Prefect shows the default)
    """Ingest -> split -> features (+ augmented training copies) -> k-fold CV per model -> ensembles -> report."""
    log = get_run_logger()
    data_dir = str(config.data_dir())
    root = fetch_dataset(params.source, data_dir)
    data = ingest(root, params.dataset, params.sample_rate, params.window_s, params.hop_s, params.min_duration_s,
                  params.group_pattern, data_dir, params.n_jobs)
    if params.clips_per_class_fold:
        data = subset_task(data, params.clips_per_class_fold, str(config.stage_dir("interim")))
    experiment = params.experiment or f"soundflow-{data['name']}"
    exp_id, parent_id = open_parent_run(experiment, params.model_dump(), data)
    n_classes = dataset_summary_task(data, parent_id)
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
    if params.audit:
        engineered = feats.get("engineered") or features_task(data["clips"], "engineered", params.sample_rate,
                                                              opts.get("engineered", {}), data_dir)
        audit_task(data, engineered, params.sample_rate, params.seed, parent_id, str(config.stage_dir("reports")))
    inputs = {"manifest": data["manifest"], "splits": splits, "features": feats, "aug_features": aug_feats,
              "feature_opts": opts}

    log.info("cross-validating %d configurations on %d clips (%s runner)", len(specs), data["n_clips"], params.runner)
    results_dir = str(config.stage_dir("results"))
    runner = task_runner(params.runner, n_jobs=params.n_jobs, dask_address=params.dask_address)
    with config.workers_share_prefect_api():
        results, failed = cross_validation.with_options(task_runner=runner)(
            longest_first(specs), inputs, n_folds(splits), exp_id, parent_id, results_dir)

    if params.ensembles and len(results) > 1:
        results += ensemble_task(results, data["manifest"], splits, params.ensembles, n_members=params.ensemble_members,
                                 method=params.optimizer, seed=params.seed, experiment_id=exp_id, parent_id=parent_id,
                                 results_dir=results_dir)
    spectrogram_examples_task(data["clips"], data["manifest"], params.sample_rate, parent_id)
    report_task(results, parent_id, str(config.stage_dir("reports")), n_classes)
    champion = None
    if params.register_champion:
        champion = register_task(best_result(results), inputs, {**params.model_dump(), "dataset_name": data["name"]},
                                 exp_id, parent_id)
    if failed:
        raise SoundflowError(f"{len(failed)} configuration(s) failed (their MLflow runs are FAILED, the others "
                             f"finished): {'; '.join(failed)}")
    end_run(parent_id, "FINISHED")
    best = max(results, key=lambda r: r["cv_accuracy_mean"])
    return {"parent_run_id": parent_id, "experiment_id": exp_id, "best": best["name"],
            "best_accuracy": best["cv_accuracy_mean"],
            "champion": champion, "results": {r["name"]: round(r["cv_accuracy_mean"], 4) for r in results}}

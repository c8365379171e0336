"""The case study (ESC-10 by default, any dataset layout) as one Prefect flow: it only composes the tasks in tasks/."""

from __future__ import annotations

import time
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.params import CaseStudyParams
from flows.runners import task_runner
from tasks import config
from tasks.data.ingest import ingest
from tasks.data.sources import fetch_dataset
from tasks.data.split import n_folds, protocol, split_task, subset_task
from tasks.errors import SoundflowError
from tasks.evaluation.inputs import cv_inputs
from tasks.evaluation.progress import WorkProgress, estimated_cost
from tasks.evaluation.train import fold_outcome, fold_task, plan_task, reused_folds_task
from tasks.features.pretrained import license_tags
from tasks.records import Config, ConfigResult, CVInputs, FoldResult, Result, RunSummary
from tasks.tracking.audit import audit_task
from tasks.tracking.cv_runs import log_configuration_task
from tasks.tracking.ensemble_runs import ensemble_task
from tasks.tracking.ghosts import close_ghosts_task
from tasks.tracking.registry import best_result, model_name, register_task
from tasks.tracking.report import dataset_summary_task, report_task, spectrogram_examples_task
from tasks.tracking.run_summary import finish_task
from tasks.tracking.runs import fail_runs_of_flow_run, open_parent_run, run_url, tag_run, tag_split


def _mark_mlflow_failed(flow, flow_run, state) -> None:
    """Failure/crash hook: no MLflow run of this flow run is left RUNNING."""
    fail_runs_of_flow_run(str(flow_run.id))


@flow(name="cross-validation")
def cross_validation(
    configs: list[Config], inputs: CVInputs, experiment_id: str, parent_id: str, results_dir: str
) -> tuple[list[ConfigResult], list[str]]:
    """Every (configuration, fold) is one task on this flow's runner; a configuration is logged as soon as its folds
    are done. Returns the results (in plan order) and the configurations that failed (their runs FAILED)."""
    log = get_run_logger()
    k = n_folds(inputs.splits)
    units = [(c, fold) for c in configs for fold in range(k)]
    progress = WorkProgress([estimated_cost(c) / k for c, _ in units], unit="folds")
    artifact = cast(  # a UUID in a sync flow (the coroutine is for async callers)
        UUID,
        create_progress_artifact(
            0.0, key="cross-validation", description=f"cross-validation of {len(configs)} configurations x {k} folds"
        ),
    )
    reused = reused_folds_task(configs, inputs, k, results_dir)
    todo = [i for i, (c, fold) in enumerate(units) if (c.name, fold) not in reused]
    futures = [fold_task.submit(units[i][0], inputs, units[i][1], results_dir) for i in todo]
    index = {f.task_run_id: i for f, i in zip(futures, todo)}
    folds: dict[str, dict[int, FoldResult]] = {c.name: {} for c in configs}
    results, failed = [], []

    def finished(i: int, outcome: FoldResult) -> None:
        c, fold = units[i]
        folds[c.name][fold] = outcome
        if len(folds[c.name]) == k:
            try:
                results.append(
                    log_configuration_task(
                        c, inputs, list(folds[c.name].values()), experiment_id, parent_id, results_dir
                    )
                )
            except SoundflowError as exc:
                failed.append(str(exc))

    for i, (c, fold) in enumerate(units):
        if (c.name, fold) in reused:
            progress.finish(i)
            finished(i, reused[(c.name, fold)])
    if reused:
        update_progress_artifact(
            artifact, 100 * progress.fraction, description=f"cross-validation: {len(reused)} folds reused"
        )
    for future in as_completed(futures):
        i = index[future.task_run_id]
        line = progress.finish(i)
        log.info("cross-validation: %s", line)
        update_progress_artifact(artifact, 100 * progress.fraction, description=f"cross-validation: {line}")
        finished(i, fold_outcome(future, *units[i]))
    order = {c.name: i for i, c in enumerate(configs)}
    return sorted(results, key=lambda r: order[r.name]), failed


@flow(
    name="case-study",
    validate_parameters=True,
    on_failure=[_mark_mlflow_failed],
    on_crashed=[_mark_mlflow_failed],
    on_cancellation=[_mark_mlflow_failed],
)
def case_study(params: CaseStudyParams = CaseStudyParams()) -> RunSummary:  # noqa: B008 (Prefect shows the default)
    """Ingest -> split -> features (+ augmented training copies) -> k-fold CV per model -> ensembles -> report."""
    started, p = time.monotonic(), params
    data_dir = str(config.data_dir())
    interim, results_dir, reports = (str(config.stage_dir(s)) for s in ("interim", "results", "reports"))
    root = fetch_dataset(p.source, data_dir)
    data = ingest(
        root,
        dataset=p.dataset,
        sr=p.sample_rate,
        window_s=p.window_s,
        hop_s=p.hop_s,
        min_duration_s=p.min_duration_s,
        group_pattern=p.group_pattern,
        data_dir=data_dir,
        n_jobs=p.n_jobs,
        label_column=p.label_column,
        min_label_overlap=p.min_label_overlap,
        background_ratio=p.background_ratio,
        seed=p.seed,
    )
    if p.clips_per_class_fold:
        data = subset_task(data, p.clips_per_class_fold, interim)
    close_ghosts_task()  # runs a killed process left RUNNING: KILLED, with the reason
    exp_id, parent_id = open_parent_run(p.experiment or model_name(data.name), p.model_dump(), data)
    n_classes = dataset_summary_task(data, parent_id)
    splits = split_task(data, p.split, p.k, p.seed, interim)
    tag_split(parent_id, splits)

    configs = plan_task(
        p.models,
        p.features,
        p.augmented,
        seed=p.seed,
        repeats=p.repeats,
        hyper=p.hyper,
        score_aug_test=p.score_augmented_test,
        augmentation=p.augmentation,
    )
    tag_run(parent_id, license_tags(c.features for c in configs))
    inputs = cv_inputs(
        data,
        configs,
        splits,
        feature_opts=p.feature_opts,
        augmentation=p.augmentation,
        seed=p.seed,
        data_dir=data_dir,
        n_jobs=p.n_jobs,
        reuse=p.reuse_results,
        also=["engineered"] if p.audit else [],
    )
    audit = audit_task(data, inputs.features["engineered"], p.seed, parent_id, reports) if p.audit else None

    runner = task_runner(p.runner, n_jobs=p.n_jobs, dask_address=p.dask_address)
    with config.workers_share_prefect_api():
        singles, failed = cross_validation.with_options(task_runner=runner)(
            configs, inputs, exp_id, parent_id, results_dir
        )
    if not singles:  # nothing to ensemble, report or register: the run fails with each configuration's reason
        raise SoundflowError(f"every configuration failed: {'; '.join(failed)}")
    results: list[Result] = list(singles)
    if p.ensembles and len(singles) > 1:
        results += ensemble_task(
            singles,
            inputs,
            p.ensembles,
            n_members=p.ensemble_members,
            pools=p.ensemble_pools,
            method=p.optimizer,
            seed=p.seed,
            experiment_id=exp_id,
            parent_id=parent_id,
            results_dir=results_dir,
        )
    spectrogram_examples_task(data.clips, data.manifest, data.sample_rate, parent_id)
    report_task(results, parent_id, reports, n_classes)
    champion = None
    if p.register_champion:
        champion = register_task(
            best_result(results),
            inputs,
            data,
            n_jobs=p.n_jobs,
            experiment_id=exp_id,
            parent_id=parent_id,
            target_precision=p.target_precision,
            background_classes=p.background_classes,
        )
    summary = RunSummary(
        dataset=data.name,
        source=str(root),
        preset=p.preset,
        n_clips=data.n_clips,
        n_recordings=data.n_recordings,
        protocol=protocol(splits),
        results=tuple(results),
        experiment_id=exp_id,
        parent_run_id=parent_id,
        tracking_uri=config.tracking_uri(),
        run_url=run_url(parent_id),
        registered_model=model_name(data.name),
        champion=champion,
        failed=tuple(failed),
        audit=audit,
    )
    return finish_task(summary, data, splits, reports, started=started)

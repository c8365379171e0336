"""The case study (ESC-10 by default, any dataset layout) as one Prefect flow: it only composes the tasks in tasks/."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.params import CaseStudyParams
from flows.runners import task_runner
from tasks import config
from tasks.augment.copies import augment_task
from tasks.data.ingest import ingest
from tasks.data.sources import fetch_dataset
from tasks.data.split import n_folds, split_scheme, split_task, subset_task
from tasks.errors import SoundflowError
from tasks.evaluation.progress import WorkProgress, estimated_cost
from tasks.evaluation.train import drop_unavailable, fold_outcome, fold_task, longest_first, plan
from tasks.features.pretrained import license_tags
from tasks.features.representations import features_task, rate_of
from tasks.tracking.audit import audit_task
from tasks.tracking.cv_runs import log_configuration_task
from tasks.tracking.ensemble_runs import ensemble_task
from tasks.tracking.ghosts import close_ghosts_task
from tasks.tracking.html_report import html_report_task
from tasks.tracking.registry import best_result, model_name, register_task
from tasks.tracking.report import dataset_summary_task, report_task, spectrogram_examples_task
from tasks.tracking.run_summary import run_description
from tasks.tracking.runs import end_run, fail_runs_of_flow_run, open_parent_run, run_url, set_description, tag_run


def _mark_mlflow_failed(flow, flow_run, state) -> None:
    """Failure/crash hook: no MLflow run of this flow run is left RUNNING."""
    fail_runs_of_flow_run(str(flow_run.id))


@flow(name="cross-validation")
def cross_validation(
    specs: list[dict], inputs: dict, n_folds: int, experiment_id: str, parent_id: str, results_dir: str
) -> tuple[list[dict], list[str]]:
    """Every (configuration, fold) is one task on this flow's runner; a configuration is logged as soon as its folds
    are done. Returns the results (in plan order) and the configurations that failed (their runs FAILED)."""
    log = get_run_logger()
    units = [(spec, k) for spec in specs for k in range(n_folds)]
    progress = WorkProgress([estimated_cost(spec) / n_folds for spec, _ in units], unit="folds")
    artifact = create_progress_artifact(
        0.0, key="cross-validation", description=f"cross-validation of {len(specs)} configurations x {n_folds} folds"
    )
    futures = [fold_task.submit(spec, inputs, k, results_dir) for spec, k in units]
    index = {f.task_run_id: i for i, f in enumerate(futures)}
    folds: dict[str, dict[int, dict]] = {spec["name"]: {} for spec in specs}
    results, failed = [], []
    for future in as_completed(futures):
        i = index[future.task_run_id]
        spec, k = units[i]
        folds[spec["name"]][k] = fold_outcome(future, spec, k)
        line = progress.finish(i)
        log.info("cross-validation: %s", line)
        update_progress_artifact(artifact, 100 * progress.fraction, description=f"cross-validation: {line}")
        if len(folds[spec["name"]]) == n_folds:
            outcome = [folds[spec["name"]][j] for j in range(n_folds)]
            try:
                results.append(log_configuration_task(spec, inputs, outcome, experiment_id, parent_id, results_dir))
            except SoundflowError as exc:
                failed.append(str(exc))
    order = {spec["name"]: i for i, spec in enumerate(specs)}
    return sorted(results, key=lambda r: order[r["name"]]), failed


def protocol_text(split: str, k: int, data: dict, note: str = "") -> str:
    """The evaluation protocol in words (auto: the dataset's own folds if it has them), with why it is not the
    one asked for."""
    if split == "auto":
        split = "official" if data.get("has_folds") else "group_kfold"
    text = {
        "official": "cross-validation on the dataset's own folds",
        "group_kfold": f"{k}-fold CV grouped by group (StratifiedGroupKFold)",
        "book_holdout": "the book's 8-per-class hold-out",
    }[split]
    return f"{text} ({note})" if note else text


@flow(
    name="case-study",
    validate_parameters=True,
    on_failure=[_mark_mlflow_failed],
    on_crashed=[_mark_mlflow_failed],
    on_cancellation=[_mark_mlflow_failed],
)
def case_study(params: CaseStudyParams = CaseStudyParams()) -> dict:  # noqa: B008 (Prefect shows the default)
    """Ingest -> split -> features (+ augmented training copies) -> k-fold CV per model -> ensembles -> report."""
    log = get_run_logger()
    started = time.monotonic()
    data_dir = str(config.data_dir())
    root = fetch_dataset(params.source, data_dir)
    data = ingest(
        root,
        params.dataset,
        params.sample_rate,
        params.window_s,
        params.hop_s,
        params.min_duration_s,
        params.group_pattern,
        data_dir,
        params.n_jobs,
    )
    if params.clips_per_class_fold:
        data = subset_task(data, params.clips_per_class_fold, str(config.stage_dir("interim")))
    experiment = params.experiment or f"soundflow-{data['name']}"
    close_ghosts_task()  # runs a killed process left RUNNING: KILLED, with the reason
    exp_id, parent_id = open_parent_run(experiment, params.model_dump(), data)
    n_classes = dataset_summary_task(data, parent_id)
    splits = split_task(
        data["manifest"],
        params.split,
        params.k,
        params.seed,
        str(config.stage_dir("interim") / f"splits-{data['digest']}-{params.split}-{params.k}-{params.seed}.json"),
    )
    scheme, split_note = split_scheme(splits)
    tag_run(parent_id, {"soundflow.split": scheme, **({"soundflow.split_fallback": split_note} if split_note else {})})

    specs = plan(
        params.models,
        params.features,
        params.augmented,
        seed=params.seed,
        repeats=params.repeats,
        hyper=params.hyper,
        n_jobs=1,
        score_aug_test=params.score_augmented_test,
        augmentation=params.augmentation.model_dump(),
    )
    specs, notes = drop_unavailable(specs)
    for note in notes:
        log.warning("%s", note)
    tag_run(parent_id, license_tags(s["features"] for s in specs))
    kinds = sorted({s["features"] for s in specs})
    aug_kinds = sorted({s["features"] for s in specs if s["augmented"]})
    opts = params.feature_opts
    feats = {
        k: features_task(data["clips"], k, params.sample_rate, opts.get(k, {}), data_dir, data["manifest"])
        for k in kinds
    }
    aug_feats = {}
    if aug_kinds:
        aug_clips = augment_task(
            data["clips"],
            data["manifest"],
            params.sample_rate,
            params.augmentation.model_dump(),
            params.seed,
            data_dir,
            params.n_jobs,
        )
        # copies exist only as clips: a representation with its own rate is computed from them at the pipeline's
        aug_feats = {k: features_task(aug_clips, k, params.sample_rate, opts.get(k, {}), data_dir) for k in aug_kinds}
    audit = None
    if params.audit:
        engineered = feats.get("engineered") or features_task(
            data["clips"], "engineered", params.sample_rate, opts.get("engineered", {}), data_dir
        )
        audit = audit_task(
            data, engineered, params.sample_rate, params.seed, parent_id, str(config.stage_dir("reports"))
        )
    inputs = {
        "manifest": data["manifest"],
        "splits": splits,
        "features": feats,
        "aug_features": aug_feats,
        "feature_opts": opts,
        "feature_rates": {k: rate_of(k, params.sample_rate) for k in kinds},
        "reuse": params.reuse_results,
    }

    log.info("cross-validating %d configurations on %d clips (%s runner)", len(specs), data["n_clips"], params.runner)
    results_dir = str(config.stage_dir("results"))
    runner = task_runner(params.runner, n_jobs=params.n_jobs, dask_address=params.dask_address)
    with config.workers_share_prefect_api():
        results, failed = cross_validation.with_options(task_runner=runner)(
            longest_first(specs), inputs, n_folds(splits), exp_id, parent_id, results_dir
        )

    if params.ensembles and len(results) > 1:
        results += ensemble_task(
            results,
            data["manifest"],
            splits,
            params.ensembles,
            n_members=params.ensemble_members,
            pools=params.ensemble_pools,
            method=params.optimizer,
            seed=params.seed,
            experiment_id=exp_id,
            parent_id=parent_id,
            results_dir=results_dir,
        )
    spectrogram_examples_task(data["clips"], data["manifest"], params.sample_rate, parent_id)
    report_task(results, parent_id, str(config.stage_dir("reports")), n_classes)
    best = best_result(results)  # on a tie the single model: the summary names what the champion would be
    champion = None
    if params.register_champion:
        champion = register_task(
            best,
            inputs,
            {**params.model_dump(), "window_s": data["window_s"], "hop_s": data["hop_s"], "dataset_name": data["name"]},
            exp_id,
            parent_id,
        )
        champion = {"configuration": best["name"], **champion}
    summary = {
        "parent_run_id": parent_id,
        "experiment_id": exp_id,
        "best": best["name"],
        "best_accuracy": best["cv_accuracy_mean"],
        "champion": champion,
        "results": {r["name"]: round(r["cv_accuracy_mean"], 4) for r in results},
        "results_table": [
            {k: r[k] for k in ("name", "family", "cv_accuracy_mean", "cv_accuracy_sem")} for r in results
        ],
        "dataset": data["name"],
        "source": str(root),
        "preset": params.preset,
        "n_clips": data["n_clips"],
        "n_recordings": data["n_recordings"],
        "protocol": protocol_text(scheme, params.k, data, split_note),
        "seconds": time.monotonic() - started,
        "tracking_uri": config.tracking_uri(),
        "run_url": run_url(parent_id),
        "registered_model": model_name(data["name"]),
        "failed": failed,
        "audit": audit,
    }
    set_description(parent_id, run_description(summary))
    summary["report"] = html_report_task(results, data, splits, summary, parent_id, str(config.stage_dir("reports")))
    if failed:
        raise SoundflowError(
            f"{len(failed)} configuration(s) failed (their MLflow runs are FAILED, the others "
            f"finished): {'; '.join(failed)}"
        )
    end_run(parent_id, "FINISHED")
    return summary

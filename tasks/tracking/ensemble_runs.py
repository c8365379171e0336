"""The case study's ensembles as nested MLflow runs: evaluation cross-validates them, this module logs them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import save_npy
from tasks.data.manifest import class_names, read_manifest
from tasks.evaluation.ensemble_cv import EnsembleOutcome, evaluate_ensembles
from tasks.evaluation.metrics import confusion_figure, confusion_frame
from tasks.features.pretrained import license_tags
from tasks.records import ConfigResult, CVInputs, EnsembleResult
from tasks.tracking import runs as tracking


@task(cache_policy=NO_CACHE)
def ensemble_task(
    results: list[ConfigResult],
    inputs: CVInputs,
    combiners: list[str],
    *,
    n_members: int,
    method: str,
    seed: int,
    experiment_id: str,
    parent_id: str,
    results_dir: str,
    pools: dict[str, list[str]] | None = None,
) -> list[EnsembleResult]:
    """Mixed-family ensembles over every configuration ("ensemble:<combiner>"), over each named pool of
    configurations ("<pool>:<combiner>"), and of each model's repeated trainings; each a nested MLflow run."""
    log = get_run_logger()
    outcomes = evaluate_ensembles(
        results,
        inputs.manifest,
        inputs.splits,
        combiners,
        n_members=n_members,
        method=method,
        seed=seed,
        pools=pools,
        log=log,
    )
    names = class_names(read_manifest(inputs.manifest))
    by_name = {r.name: r for r in results}
    view = {r.name: r.features for r in results}
    out = []
    for o in outcomes:
        run_id = log_ensemble(o, names, view, experiment_id=experiment_id, parent_id=parent_id)
        path = str(save_npy(Path(results_dir) / f"ensemble-{o.group}-{o.combiner}-{parent_id[:8]}.npy", o.proba))
        log.info(
            "%s: %.1f%% +- %.1f (members %s)",
            o.name,
            100 * o.summary["cv_accuracy_mean"],
            100 * o.summary["cv_accuracy_sem"],
            ", ".join(o.members),
        )
        out.append(
            EnsembleResult(
                group=o.group,
                combiner=o.combiner,
                optimizer=method,
                seed=seed,
                members=tuple(o.members),
                final_members=tuple(by_name[m] for m in o.final),
                run_id=run_id,
                proba=path,
                cv_accuracy_mean=o.summary["cv_accuracy_mean"],
                cv_accuracy_sem=o.summary["cv_accuracy_sem"],
                macro_f1_mean=o.summary["macro_f1_mean"],
            )
        )
    return out


def log_ensemble(o: EnsembleOutcome, names: list[str], view: dict, *, experiment_id: str, parent_id: str) -> str:
    """One ensemble's nested run: parameters, metrics, fold curve, members, licence tags, confusion matrix."""
    with tracking.run(
        experiment_id, name=o.name, params=o.params, parent_id=parent_id, tags={"soundflow.kind": "ensemble"}
    ) as run_id:
        tracking.log_metrics(run_id, o.metrics)
        tracking.log_series(run_id, "fold_accuracy", o.summary["fold_accuracy"])
        tracking.log_text(run_id, pd.DataFrame(o.per_fold).to_json(orient="records", indent=1), "members.json")
        tracking.log_params(run_id, {"members": o.members, "final_members": o.final})
        tracking.tag_run(run_id, license_tags(view[m] for m in {*o.members, *o.final}))
        tracking.log_figure(
            run_id, confusion_figure(o.summary["confusion"], names, title=o.name), "confusion_matrix.png"
        )
        tracking.log_frame(run_id, confusion_frame(o.summary["confusion"], names), "confusion_matrix.csv")
        tracking.log_text(run_id, o.summary["report"], "classification_report.txt")
    return run_id

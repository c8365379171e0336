"""The case study's ensembles as nested MLflow runs: evaluation cross-validates them, this module logs them."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import cached_folder, digest, save_npy
from tasks.data.manifest import class_names, read_manifest
from tasks.evaluation.ensemble_cv import EnsembleOutcome, evaluate_ensembles
from tasks.features.pretrained import license_tags
from tasks.records import ConfigResult, CVInputs, EnsembleResult
from tasks.tracking import runs as tracking
from tasks.tracking.cv_runs import save_confusion


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
        run_id = log_ensemble(o, names, view, experiment_id=experiment_id, parent_id=parent_id, results_dir=results_dir)
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


def log_ensemble(
    o: EnsembleOutcome, names: list[str], view: dict, *, experiment_id: str, parent_id: str, results_dir: str
) -> str:
    """One ensemble's nested run: parameters, metrics, fold curve, members, licence tags, confusion matrix (its
    files rendered once per content under <results>/ensemble-artifacts, so a warm run only logs them)."""
    members = pd.DataFrame(o.per_fold).to_json(orient="records", indent=1)
    params = {**o.params, "members": o.members, "final_members": o.final}
    tags = {"soundflow.kind": "ensemble", **license_tags(view[m] for m in {*o.members, *o.final})}
    key = digest(o.name, names, o.summary["confusion"].tolist(), o.summary["report"], members)
    with tracking.run(experiment_id, name=o.name, params=params, parent_id=parent_id, tags=tags) as run_id:
        tracking.log_batch(run_id, o.metrics, {"fold_accuracy": o.summary["fold_accuracy"]})
        folder = Path(results_dir) / "ensemble-artifacts" / key
        tracking.log_folder(run_id, cached_folder(folder, partial(_render, o.summary, names, o.name, members)))
    return run_id


def _render(summary: dict, names: list[str], title: str, members: str, folder: Path) -> None:
    save_confusion(summary, names, title, folder)
    (folder / "members.json").write_text(members, encoding="utf-8")

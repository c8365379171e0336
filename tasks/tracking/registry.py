"""The champion: refit the best configuration (one model, or an ensemble's members and its combiner) on every clip,
log it as one pyfunc, register it, and move the `champion` alias only when it beats the current champion on the
same folds."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import digest
from tasks.config import tracking_uri
from tasks.data.manifest import class_names, read_manifest
from tasks.detection.thresholds import calibrate, pr_figure
from tasks.errors import SoundflowError
from tasks.evaluation.refit import fit_combiner, members_of, refit_members
from tasks.features.pretrained import license_tags
from tasks.features.representations import resolved_opts
from tasks.logs import run_logger
from tasks.records import ConfigResult, CVInputs, Dataset, EnsembleResult, Registration, Result
from tasks.tracking import runs as tracking
from tasks.tracking.pyfunc import log_ensemble_model

ALIAS = "champion"
# Class names that mean "none of the classes": a model trained with one never reports it when detecting.
BACKGROUND_NAMES = ("background", "noise", "silence", "other", "none", "negative")
TAG_ACCURACY = "cv_accuracy_mean"
TAG_CONFIG = "configuration"
TAG_FOLDS = "folds_digest"
TAG_CALIBRATION = "calibration"  # what its detection thresholds were calibrated for


def model_name(dataset: str) -> str:
    """The registered model of a dataset (its name from ingestion: esc10, urbansound8k, a folder's name)."""
    return f"soundflow-{dataset}"


def default_model_name() -> str:
    """The registered soundflow model whose champion was registered last (a user's most recent dataset)."""
    client = tracking.client()
    best, newest = None, -1
    for rm in client.search_registered_models("name LIKE 'soundflow-%'"):
        champion = current_champion(rm.name, client=client)
        if champion is not None and int(champion.creation_timestamp or 0) > newest:
            best, newest = rm.name, int(champion.creation_timestamp or 0)
    if best is None:
        raise SoundflowError(
            f"no registered soundflow model with a @{ALIAS} in {tracking_uri()}: run the case study "
            "with --register-champion first, or pass --model"
        )
    return best


def folds_digest(manifest_path: str, splits_path: str) -> str:
    """What a CV accuracy was measured on: the segments (recording, start, content, label) and the fold indices."""
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    cols = [c for c in ("recording_id", "start_s", "content_hash", "class_id") if c in manifest.columns]
    with open(splits_path) as fh:
        splits = json.load(fh)
    return digest(manifest[cols].to_numpy().tolist(), splits)


def current_champion(name: str, *, client=None):
    """The ModelVersion holding the champion alias, or None (other errors, e.g. a server down, propagate)."""
    client = client or tracking.client()
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as exc:
        # no such model: RESOURCE_DOES_NOT_EXIST; model without the alias: INVALID_PARAMETER_VALUE
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and "not found" in exc.message:
            return None
        raise


def decide(new_accuracy: float, new_folds: str, champion) -> tuple[bool, str]:
    """(move the alias?, why) for a candidate against the current champion's tags."""
    if champion is None:
        return True, "no champion yet"
    old_folds = champion.tags.get(TAG_FOLDS)
    try:
        old = float(champion.tags[TAG_ACCURACY])
    except (KeyError, ValueError):
        return True, f"champion v{champion.version} has no {TAG_ACCURACY} tag, so it cannot be compared"
    if old_folds != new_folds:
        return True, (
            f"folds differ (champion v{champion.version} on {old_folds}, candidate on {new_folds}): "
            f"accuracies {old:.4f} vs {new_accuracy:.4f} are not comparable, the newer model wins"
        )
    if _rounded(new_accuracy) > _rounded(old):  # fold scores summed in another order are a tie, not a win
        return True, f"candidate {new_accuracy:.4f} beats champion v{champion.version} {old:.4f} on the same folds"
    return False, f"candidate {new_accuracy:.4f} does not beat champion v{champion.version} {old:.4f} on the same folds"


def register_champion(
    run_id: str, model_uri: str, *, name: str, cv_accuracy: float, folds_digest: str, configuration: str = ""
) -> dict:
    """Register a new version; move `champion` to it only if it wins (see decide); log the comparison on the run."""
    client = tracking.client()
    try:
        client.create_registered_model(name, description="soundflow champion per dataset; alias @champion")
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    champion = current_champion(name, client=client)
    tags = {TAG_ACCURACY: f"{cv_accuracy:.6f}", TAG_CONFIG: configuration, TAG_FOLDS: folds_digest}
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    move, reason = decide(cv_accuracy, folds_digest, champion)
    if move:
        client.set_registered_model_alias(name, ALIAS, mv.version)
    client.set_model_version_tag(name, mv.version, "champion_decision", reason)
    result = {
        "name": name,
        "version": str(mv.version),
        "alias_moved": move,
        "reason": reason,
        "previous_version": str(champion.version) if champion else None,
        "previous_cv_accuracy": float(champion.tags[TAG_ACCURACY])
        if champion and TAG_ACCURACY in champion.tags
        else None,
        "cv_accuracy": cv_accuracy,
        "folds_digest": folds_digest,
        "configuration": configuration,
        "uri": f"models:/{name}@{ALIAS}" if move else f"models:/{name}/{mv.version}",
    }
    for key, value in {
        "champion.registered_version": mv.version,
        "champion.alias_moved": str(move).lower(),
        "champion.reason": reason,
        "champion.previous_version": result["previous_version"] or "",
    }.items():
        client.set_tag(run_id, key, str(value)[:5000])
    tracking.log_text(run_id, json.dumps(result, indent=2, default=str), "champion_comparison.json")
    return result


def best_single(results: list[Result]) -> ConfigResult:
    """The best configuration that is one model."""
    singles = [r for r in results if isinstance(r, ConfigResult)]
    if not singles:
        raise ValueError("no single-model result to register (only ensembles)")
    return max(singles, key=_accuracy)


def _accuracy(result: Result) -> float:
    return _rounded(result.cv_accuracy_mean)


def _rounded(accuracy: float) -> float:
    """An accuracy to compare: rounded, so that equal fold scores summed in another order (float noise) tie."""
    return round(float(accuracy), 9)


def best_result(results: list[Result]) -> Result:
    """The best CV result, single model or ensemble; on a tie the one listed first (single models precede ensembles:
    an ensemble is the champion only if it scores higher, not when it equals its best member)."""
    if not results:
        raise ValueError("no CV result to register")
    return max(results, key=_accuracy)


def configuration_of(best: Result) -> str:
    """What the champion is, as its `configuration` tag: the result's name, plus an ensemble's members."""
    if not isinstance(best, EnsembleResult):
        return best.name
    return f"{best.name} = {' + '.join(m.name for m in members_of(best))}"


def is_background(name: str) -> bool:
    """A class that means "none of the classes" (background, noise, silence, other): never reported by detect."""
    return name.strip().lower() in BACKGROUND_NAMES


def calibrate_thresholds(
    run_id: str, best: Result, y: np.ndarray, names: list[str], *, target_precision: float, ignore: Sequence[str]
) -> dict[str, float]:
    """Per class, the lowest threshold whose precision on the result's out-of-fold window scores (never scores of
    a model on its own training data) reaches target_precision, with the recall it leaves; logged as
    thresholds.csv and thresholds_pr.png. These hold on recordings like the training data."""
    proba = np.load(best.proba)
    scored = ~np.isnan(proba).any(axis=1)
    table = calibrate(proba[scored], y[scored], names, target_precision=target_precision, ignore=ignore)
    tracking.log_frame(run_id, table, "thresholds.csv")
    tracking.log_figure(run_id, pr_figure(proba[scored], y[scored], names, table), "thresholds_pr.png")
    tracking.log_metrics(run_id, {"thresholds_reached": float(table["reached"].mean()) if len(table) else 0.0})
    return {str(r.label): float(r.threshold) for r in table.itertuples()}


@task(cache_policy=NO_CACHE, task_run_name="register {best.name}")
def register_task(
    best: Result,
    inputs: CVInputs,
    dataset: Dataset,
    *,
    n_jobs: int,
    experiment_id: str,
    parent_id: str,
    target_precision: float = 0.9,
    background_classes: Sequence[str] = (),
) -> Registration:
    """Refit the best CV result on all clips, log it as ONE pyfunc and register it (nested run "champion-refit").

    An ensemble's final members (chosen on all folds' out-of-fold predictions; members can differ per fold in CV,
    the champion has this one set) are each refitted on all clips; a weighted or stacking combiner is fitted on
    their out-of-fold probabilities. The registered model is soundflow-<dataset name>. Its detection thresholds
    are calibrated per class on the result's out-of-fold window scores (see calibrate_thresholds)."""
    log = run_logger(__name__)
    members = members_of(best)
    configs = [m.config for m in members]
    configuration = configuration_of(best)
    name = model_name(dataset.name)
    folds = folds_digest(inputs.manifest, inputs.splits)
    champ = current_champion(name)
    calibration = f"precision {target_precision:g}; background {sorted(background_classes)}"
    if (
        champ is not None
        and champ.tags.get("configuration") == configuration
        and champ.tags.get("folds_digest") == folds
        and champ.tags.get(TAG_CALIBRATION) == calibration
        and abs(float(champ.tags.get("cv_accuracy_mean", "nan")) - float(best.cv_accuracy_mean)) < 5e-7
    ):
        # nothing changed since the champion was registered: a warm re-run does not refit it again
        log.info("champion %s v%s is already %s on these folds; not refitting", name, champ.version, configuration)
        return Registration(
            name=name,
            version=str(champ.version),
            alias_moved=False,
            uri=f"models:/{name}@{ALIAS}",
            reason="unchanged: same configuration, folds and CV accuracy as the champion",
            configuration=configuration,
        )
    spec_params = (
        {"combiner": best.combiner, "members": {f"member{i}": c.params() for i, c in enumerate(configs)}}
        if isinstance(best, EnsembleResult)
        else configs[0].params()
    )
    run_params = {
        "configuration": best.name,
        **spec_params,
        "registered_model": name,
        "folds_digest": folds,
        "cv_run_id": best.run_id,
    }
    tags = {
        "soundflow.kind": "champion",
        "soundflow.config": best.name,
        **license_tags(c.features for c in configs),
    }
    with tracking.run(
        experiment_id, name="champion-refit", params=run_params, parent_id=parent_id, tags=tags
    ) as run_id:
        t0 = time.perf_counter()
        estimators = refit_members(configs, inputs, n_jobs=n_jobs, log=log)
        combiner = fit_combiner(best, inputs.manifest)
        refit_s = time.perf_counter() - t0
        manifest = read_manifest(inputs.manifest)
        names = class_names(manifest)
        background = [c for c in names if c in set(background_classes) or is_background(c)]
        thresholds = calibrate_thresholds(
            run_id, best, manifest["class_id"].to_numpy(), names, target_precision=target_precision, ignore=background
        )
        member_cfg = [
            {
                "name": c.name,
                "features": c.features,
                "feature_opts": resolved_opts(c.features, dict(inputs.feature_opts.get(c.features, {}))),
                # the rate its features were computed at (a representation's own, from the source audio)
                "sample_rate": int(inputs.feature_rates.get(c.features, dataset.sample_rate)),
            }
            for c in configs
        ]
        info = log_ensemble_model(
            run_id,
            estimators,
            members=member_cfg,
            combiner=combiner,
            config={
                "model_name": name,
                "configuration": configuration,
                "class_names": names,
                "sample_rate": dataset.sample_rate,
                "window_s": dataset.window_s,
                "hop_s": dataset.hop_s,
                "thresholds": thresholds,
                "target_precision": target_precision,
                "background_classes": background,
            },
        )
        tracking.log_metrics(
            run_id, {"cv_accuracy_mean": best.cv_accuracy_mean, "refit_seconds": refit_s, "n_members": len(members)}
        )
        result = register_champion(
            run_id,
            info.model_uri,
            name=name,
            cv_accuracy=float(best.cv_accuracy_mean),
            folds_digest=folds,
            configuration=configuration,
        )
        tracking.client().set_model_version_tag(name, result["version"], TAG_CALIBRATION, calibration)
    log.info("registered %s v%s (%s): %s", name, result["version"], configuration, result["reason"])
    return Registration(
        name=name,
        version=result["version"],
        alias_moved=result["alias_moved"],
        uri=result["uri"],
        reason=result["reason"],
        configuration=configuration,
        run_id=run_id,
    )

"""The champion: refit the best configuration (one model, or an ensemble's members and its combiner) on every clip,
log it as one pyfunc, register it, and move the `champion` alias only when it beats the current champion on the
same folds."""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import digest
from tasks.config import tracking_uri
from tasks.data.manifest import class_names, read_manifest
from tasks.errors import SoundflowError
from tasks.evaluation.ensembles import Combiner
from tasks.features.pretrained import license_tags
from tasks.features.representations import resolved_opts
from tasks.logs import run_logger
from tasks.models import catalog
from tasks.models import rows as rowsets
from tasks.tracking import runs as tracking
from tasks.tracking.pyfunc import load_estimator, log_ensemble_model, save_estimator

ALIAS = "champion"
TAG_ACCURACY = "cv_accuracy_mean"
TAG_CONFIG = "configuration"
TAG_FOLDS = "folds_digest"


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


def refit_full(
    spec: dict, manifest_path: str, features_path: str, *, aug_features_path: str | None = None, n_jobs: int = 1
):
    """Fit the configuration `spec` (model, seed, hyper) on all clips (+ their augmented copies if given)."""
    manifest = read_manifest(manifest_path)
    y = manifest["class_id"].to_numpy()
    groups = manifest["group"].astype(str).to_numpy()
    X = np.load(features_path, mmap_mode="r")
    X_aug = None if aug_features_path is None else np.load(aug_features_path, mmap_mode="r")
    rows, yt, gt = rowsets.training_rows(X, y, groups, np.arange(len(y)), X_aug)
    est = catalog.make(spec["model"], seed=int(spec.get("seed", 0)), n_jobs=n_jobs, hyper=spec.get("hyper"))()
    return rowsets.fit(est, rows, yt, gt)


def _refit_saved(spec: dict, manifest_path: str, features_path: str, aug_path: str | None, folder: str) -> dict:
    """refit_full in a worker process; the estimator goes to `folder` (its own format), the format comes back."""
    t0 = time.perf_counter()
    fmt, cls = save_estimator(refit_full(spec, manifest_path, features_path, aug_features_path=aug_path), Path(folder))
    return {"estimator_format": fmt, "estimator_class": cls, "seconds": time.perf_counter() - t0}


def refit_members(specs: list[dict], inputs: dict, *, n_jobs: int, log) -> list:
    """Every member refitted on all clips, in the order given: side by side in up to n_jobs worker processes (the
    cores split between them as in CV), the longest first, with a log line as each one finishes."""
    from tasks.evaluation.train import init_worker, longest_first

    def job(spec: dict) -> tuple:
        aug = inputs.get("aug_features", {}).get(spec["features"]) if spec["augmented"] else None
        return spec, inputs["manifest"], inputs["features"][spec["features"]], aug

    def label(spec: dict) -> str:
        return f"{spec['model']}/{spec['features']}{'+aug' if spec['augmented'] else ''}"

    workers = max(1, min(int(n_jobs), len(specs)))
    log.info("champion: refitting %d member(s) on every clip, %d at a time", len(specs), workers)
    if workers == 1:
        estimators = []
        for i, spec in enumerate(specs, 1):
            t0, (spec, manifest, features, aug) = time.perf_counter(), job(spec)
            estimators.append(refit_full(spec, manifest, features, aug_features_path=aug, n_jobs=int(n_jobs)))
            log.info(
                "champion: member %d/%d %s refitted (%.0f s)", i, len(specs), label(spec), time.perf_counter() - t0
            )
        return estimators
    first = longest_first(specs)
    with tempfile.TemporaryDirectory(prefix="soundflow-refit-") as tmp:
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker, initargs=(workers,)
        ) as pool:
            futures = {
                pool.submit(_refit_saved, *job(specs[i]), str(Path(tmp) / str(i))): i
                for i in sorted(range(len(specs)), key=lambda i: first.index(specs[i]))
            }
            saved: dict[int, dict] = {}
            for done, future in enumerate(as_completed(futures), 1):
                i = futures[future]
                saved[i] = future.result()
                log.info(
                    "champion: member %d/%d %s refitted (%.0f s)",
                    done,
                    len(specs),
                    label(specs[i]),
                    saved[i]["seconds"],
                )
        return [load_estimator(Path(tmp) / str(i), saved[i]) for i in range(len(specs))]


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


def best_single(results: list[dict]) -> dict:
    """The best configuration that is one model."""
    singles = [r for r in results if r.get("family") != "ensemble"]
    if not singles:
        raise ValueError("no single-model result to register (only ensembles)")
    return max(singles, key=_accuracy)


def _accuracy(result: dict) -> float:
    return _rounded(result["cv_accuracy_mean"])


def _rounded(accuracy: float) -> float:
    """An accuracy to compare: rounded, so that equal fold scores summed in another order (float noise) tie."""
    return round(float(accuracy), 9)


def best_result(results: list[dict]) -> dict:
    """The best CV result, single model or ensemble; on a tie the one listed first (single models precede ensembles:
    an ensemble is the champion only if it scores higher, not when it equals its best member)."""
    if not results:
        raise ValueError("no CV result to register")
    return max(results, key=_accuracy)


def members_of(best: dict) -> list[dict]:
    """The results to refit: the ensemble's final members (chosen on all out-of-fold rows), or the model itself."""
    if best.get("family") != "ensemble":
        return [best]
    if not best.get("final_members"):
        raise ValueError(f"{best['name']}: an ensemble result without final_members (ensemble_task produces them)")
    return list(best["final_members"])


def configuration_of(best: dict) -> str:
    """What the champion is, as its `configuration` tag: the result's name, plus an ensemble's members."""
    if best.get("family") != "ensemble":
        return best["name"]
    return f"{best['name']} = {' + '.join(m['name'] for m in members_of(best))}"


def fit_combiner(best: dict, manifest_path: str, params: dict) -> Combiner | None:
    """An ensemble's combiner fitted on its members' out-of-fold probabilities of all folds (None for one model).

    Weighted: weights searched as CV searches them per fold; stacking: the Stacker on every out-of-fold row."""
    if best.get("family") != "ensemble":
        return None
    y = read_manifest(manifest_path)["class_id"].to_numpy()
    P = np.stack([np.load(m["proba"]) for m in members_of(best)])
    scored = ~np.isnan(P[..., 0]).any(axis=0)
    kind = best.get("combiner") or best["name"].rsplit(":", 1)[-1]
    if kind in ("weighted", "stacking", "logpool") and not scored.any():
        raise ValueError(f"{best['name']}: no out-of-fold predictions to fit the {kind} combiner on")
    return Combiner(
        kind,
        method=best.get("optimizer") or params.get("optimizer", "jaya"),
        seed=int(best.get("seed", params.get("seed", 0))),
    ).fit(P[:, scored], y[scored])


def _spec_of(best: dict, params: dict) -> dict:
    """The configuration to refit: the CV result's own seed/hyper if present, else the run's parameters."""
    name = best.get("name", "")
    repeat = int(name.rsplit("#", 1)[1]) if "#" in name and name.rsplit("#", 1)[1].isdigit() else 0
    return {
        "model": best["model"],
        "features": best["features"],
        "augmented": bool(best.get("augmented")),
        "seed": int(best.get("seed", params.get("seed", 0) + repeat)),
        "hyper": best.get("hyper", (params.get("hyper") or {}).get(best["model"], {})),
    }


@task(cache_policy=NO_CACHE, task_run_name="register {best[name]}")
def register_task(best: dict, inputs: dict, params: dict, experiment_id: str, parent_id: str) -> dict:
    """Refit the best CV configuration on all clips, log it as ONE pyfunc and register it (nested run "champion-refit").

    best: a configuration's result (tracking/cv_runs.py: name, model, features, augmented, cv_accuracy_mean; seed/hyper optional), or an
    ensemble_task result (family "ensemble", combiner, final_members: the member results chosen on all folds'
    out-of-fold predictions; members can differ per fold in CV, the champion has this one set). Each member is
    refitted on all clips; a weighted or stacking combiner is fitted on the members' out-of-fold probabilities.
    inputs: manifest, splits, features {kind: path}, aug_features {kind: path}; optional feature_opts {kind: opts}
    (the options features_task was given; default none).
    params: the flow's CaseStudyParams.model_dump() (sample_rate, window_s, hop_s, seed, hyper, n_jobs, optimizer)
    plus `dataset_name`, the name ingestion gave the dataset (the registered model is soundflow-<dataset_name>)."""
    log = run_logger(__name__)
    members = members_of(best)
    specs = [_spec_of(m, params) for m in members]
    configuration = configuration_of(best)
    name = model_name(params["dataset_name"])
    folds = folds_digest(inputs["manifest"], inputs["splits"])
    champ = current_champion(name)
    if (
        champ is not None
        and champ.tags.get("configuration") == configuration
        and champ.tags.get("folds_digest") == folds
        and abs(float(champ.tags.get("cv_accuracy_mean", "nan")) - float(best["cv_accuracy_mean"])) < 5e-7
    ):
        # nothing changed since the champion was registered: a warm re-run does not refit it again
        log.info("champion %s v%s is already %s on these folds; not refitting", name, champ.version, configuration)
        return {
            "name": name,
            "version": str(champ.version),
            "alias_moved": False,
            "uri": f"models:/{name}@{ALIAS}",
            "reason": "unchanged: same configuration, folds and CV accuracy as the champion",
            "run_id": None,
            "configuration": configuration,
        }
    ensemble = best.get("family") == "ensemble"
    spec_params = (
        {"combiner": best.get("combiner"), "members": {f"member{i}": s for i, s in enumerate(specs)}}
        if ensemble
        else specs[0]
    )
    run_params = {
        "configuration": best["name"],
        **spec_params,
        "registered_model": name,
        "folds_digest": folds,
        "cv_run_id": best.get("run_id", ""),
    }
    tags = {
        "soundflow.kind": "champion",
        "soundflow.config": best["name"],
        **license_tags(s["features"] for s in specs),
    }
    with tracking.run(
        experiment_id, name="champion-refit", params=run_params, parent_id=parent_id, tags=tags
    ) as run_id:
        t0 = time.perf_counter()
        estimators = refit_members(specs, inputs, n_jobs=int(params.get("n_jobs", 1)), log=log)
        combiner = fit_combiner(best, inputs["manifest"], params)
        refit_s = time.perf_counter() - t0
        names = class_names(read_manifest(inputs["manifest"]))
        member_cfg = [
            {
                "name": m["name"],
                "features": s["features"],
                "feature_opts": resolved_opts(s["features"], (inputs.get("feature_opts") or {}).get(s["features"], {})),
                # the rate its features were computed at (a representation's own, from the source audio)
                "sample_rate": int((inputs.get("feature_rates") or {}).get(s["features"], params["sample_rate"])),
            }
            for m, s in zip(members, specs)
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
                "sample_rate": int(params["sample_rate"]),
                "window_s": float(params["window_s"]),
                "hop_s": float(params.get("hop_s") or params["window_s"]),
            },
        )
        tracking.log_metrics(
            run_id, {"cv_accuracy_mean": best["cv_accuracy_mean"], "refit_seconds": refit_s, "n_members": len(members)}
        )
        result = register_champion(
            run_id,
            info.model_uri,
            name=name,
            cv_accuracy=float(best["cv_accuracy_mean"]),
            folds_digest=folds,
            configuration=configuration,
        )
    log.info("registered %s v%s (%s): %s", name, result["version"], configuration, result["reason"])
    return {
        "name": name,
        "version": result["version"],
        "alias_moved": result["alias_moved"],
        "uri": result["uri"],
        "reason": result["reason"],
        "run_id": run_id,
        "configuration": configuration,
    }

"""An ensemble as the registered champion, on 30 real ESC-10 clips: members on engineered and raw vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from prefect.logging import disable_run_logger

from tasks import config
from tasks.data.audio import load_audio
from tasks.data.manifest import write_manifest
from tasks.data.split import make_splits, n_folds
from tasks.evaluation.cv import predict_proba
from tasks.evaluation.ensemble_cv import final_members
from tasks.evaluation.ensembles import Combiner
from tasks.evaluation.refit import members_of, refit_members
from tasks.evaluation.train import fit_fold, plan
from tasks.features.representations import compute
from tasks.records import Config, ConfigResult, CVInputs, Dataset
from tasks.tracking import pyfunc as serving
from tasks.tracking import registry
from tasks.tracking import runs as tracking
from tasks.tracking.cv_runs import log_configuration_task
from tasks.tracking.ensemble_runs import ensemble_task
from tests.conftest import esc10_five_second_clips

SR = 22050
PER_CLASS = 3
HELD_OUT = 2  # further clips per class, never trained on


@pytest.fixture(scope="module")
def cv(esc10_dir, tmp_path_factory) -> dict:
    """30 clips, engineered and raw vectors, 3 group folds; CV of 4 configurations and their ensembles (real runs)."""
    out = tmp_path_factory.mktemp("ens")
    manifest, held, classes = esc10_five_second_clips(esc10_dir, PER_CLASS, HELD_OUT, distinct_groups=True)
    write_manifest(out / "manifest.csv", manifest)
    clips = np.stack([load_audio(p, sr=SR, duration_s=5.0) for p in manifest["path"]])
    feats = {}
    for kind in ("engineered", "raw"):
        feats[kind] = str(out / f"{kind}.npy")
        np.save(feats[kind], compute(kind, clips, SR, n_jobs=1))
    splits = make_splits(manifest, scheme="group_kfold", k=3, seed=0)
    (out / "splits.json").write_text(json.dumps([{"train": tr.tolist(), "test": te.tolist()} for tr, te in splits]))
    inputs = CVInputs(manifest=str(out / "manifest.csv"), splits=str(out / "splits.json"), features=feats)
    exp = tracking.client().create_experiment("test-champion-ensemble", artifact_location=(out / "mlruns").as_uri())
    parent = tracking.start_run(exp, name="case-study")
    specs = plan(["gaussian_nb", "logreg"], ["engineered", "raw"], [], seed=0, repeats={}, hyper={})
    with disable_run_logger():
        results = [_cv(s, inputs, exp, parent, str(out / "results")) for s in specs]
        ensembles = ensemble_task.fn(
            results,
            inputs,
            ["weighted", "stacking", "vote", "logpool"],
            n_members=3,
            method="jaya",
            seed=0,
            experiment_id=exp,
            parent_id=parent,
            results_dir=str(out / "results"),
            pools={"engineered-only": ["*/engineered"], "unmatched": ["cnn*"]},
        )
    return {
        "dir": out,
        "inputs": inputs,
        "exp": exp,
        "parent": parent,
        "results": results,
        "held": held,
        "ensembles": {e.name: e for e in ensembles},
        "classes": list(classes),
        "y": manifest["class_id"].to_numpy(),
        "paths": manifest["path"].tolist(),
    }


def _cv(config: Config, inputs: CVInputs, exp: str, parent: str, results_dir: str) -> ConfigResult:
    """A configuration cross-validated as the flow does it: fold by fold, then logged once."""
    folds = [fit_fold(config, inputs, k, results_dir) for k in range(n_folds(inputs.splits))]
    return log_configuration_task.fn(config, inputs, folds, exp, parent, results_dir)


def _register(best, cv: dict, dataset: str):
    """register_task as the flow calls it, for a dataset named `dataset` (the model soundflow-<dataset>)."""
    n = len(cv["paths"])
    data = Dataset(dataset, "folders", cv["inputs"].manifest, "", "", "", "d", n, n, SR, 5.0, 5.0)
    return registry.register_task.fn(
        best, cv["inputs"], data, n_jobs=1, experiment_id=cv["exp"], parent_id=cv["parent"]
    )


@pytest.fixture(scope="module")
def weighted_champion(cv) -> dict:
    """The weighted ensemble refitted, logged as one pyfunc and registered as soundflow-ens-weighted."""
    best = cv["ensembles"]["ensemble:weighted"]
    out = _register(best, cv, "ens-weighted")
    return {"best": best, "reg": out, "model": serving.load_model("models:/soundflow-ens-weighted@champion")}


def _member_proba(model, paths: list[str], n_classes: int) -> np.ndarray:
    """Each loaded member's probabilities on its own representation of 5 s clips: (members, clips, classes)."""
    inner = model.unwrap_python_model()
    clips = np.stack([load_audio(p, sr=SR, duration_s=5.0) for p in paths])
    return np.stack(
        [
            predict_proba(est, compute(m["features"], clips, SR, n_jobs=1), n_classes)
            for m, est in zip(inner.config["members"], inner.estimators)
        ]
    )


def test_final_members_are_chosen_on_every_out_of_fold_row():
    """B is best on the first ten rows (one fold's view), A on all scored rows; rows C lacks (NaN) are not scored."""
    y = np.zeros(20, dtype=int)
    hit = {
        "A": np.r_[np.zeros(2), np.ones(17), np.zeros(1)],
        "B": np.r_[np.ones(16), np.zeros(4)],
        "C": np.r_[np.ones(5), np.zeros(15)],
    }
    probas = {k: np.c_[0.2 + 0.6 * h, 0.8 - 0.6 * h] for k, h in hit.items()}
    probas["C"][:2] = np.nan
    same = {k: "classical" for k in probas}
    assert final_members(probas, same, y, n_members=2) == ["A", "B"]
    assert final_members({k: p[2:10] for k, p in probas.items()}, same, y[2:10], n_members=2) == ["A", "B"]
    assert final_members({k: p[:10] for k, p in probas.items() if k != "C"}, same, y[:10], n_members=2) == ["B", "A"]
    assert final_members(probas, same, y, n_members=2, fixed_members=["C", "A"]) == ["C", "A"]


def test_pool_ensembles_draw_only_on_their_pool(cv):
    """A named pool's ensembles choose members (per fold and final) among the configurations it matches only;
    the mixed ensembles still draw on all of them, and a pool matching fewer than two is skipped."""
    ens = cv["ensembles"]
    pooled = [e for name, e in ens.items() if name.startswith("engineered-only:")]
    assert sorted(e.combiner for e in pooled) == ["logpool", "stacking", "vote", "weighted"]
    for e in pooled:
        assert e.members and all(m.endswith("/engineered") for m in e.members)
        assert all(m.features == "engineered" for m in e.final_members)
        assert tracking.client().get_run(e.run_id).data.params["pool"].startswith("engineered-only: ")
    assert any(m.endswith("/raw") for m in ens["ensemble:vote"].members)
    assert not any(name.startswith("unmatched:") for name in ens)


def test_ensemble_result_names_its_final_members(cv):
    ens = cv["ensembles"]["ensemble:weighted"]
    names = [m.name for m in ens.final_members]
    assert len(names) == 3 and {m.features for m in ens.final_members} == {"engineered", "raw"}
    assert set(names) <= {r.name for r in cv["results"]} and ens.combiner == "weighted"
    logged = tracking.client().get_run(ens.run_id).data.params["final_members"]
    assert json.loads(logged) == names


def test_weighted_champion_is_the_refitted_members_and_all_fold_weights(cv, weighted_champion):
    model, best = weighted_champion["model"], weighted_champion["best"]
    inner = model.unwrap_python_model()
    assert [m["name"] for m in inner.config["members"]] == [m.name for m in best.final_members]
    assert weighted_champion["reg"].configuration.startswith("ensemble:weighted = ")
    y = cv["y"]
    for m, est in zip(inner.config["members"], inner.estimators):
        if m["name"].startswith("gaussian_nb"):
            assert est.model_[-1].class_count_.sum() == len(y)  # refitted on every clip, not a fold
    P_oof = np.stack([np.load(m.proba) for m in best.final_members])
    expected = Combiner("weighted", method="jaya", seed=0).fit(P_oof, y).weights_
    np.testing.assert_allclose(inner.combiner.weights_, expected)
    np.testing.assert_allclose(inner.config["weights"], expected)

    out = model.predict(pd.DataFrame({"path": cv["paths"]}))
    P = _member_proba(model, cv["paths"], len(cv["classes"]))
    p_cols = [f"p_{c}" for c in cv["classes"]]
    np.testing.assert_allclose(out[p_cols].to_numpy(), np.tensordot(expected, P, axes=1), rtol=1e-6, atol=1e-9)
    assert (out["label"] == [cv["classes"][i] for i in y]).mean() >= 0.9  # clips it was refitted on


@pytest.mark.parametrize("combiner", ["stacking", "vote", "logpool"])
def test_other_combiners_package_the_same_way(cv, combiner):
    best = cv["ensembles"][f"ensemble:{combiner}"]
    out = _register(best, cv, f"ens-{combiner}")
    model = serving.load_model(out.uri)
    paths = [p for p, _ in cv["held"]]
    P = _member_proba(model, paths, len(cv["classes"]))
    P_oof = np.stack([np.load(m.proba) for m in best.final_members])
    expected = Combiner(combiner).fit(P_oof, cv["y"]).predict_proba(P)
    got = model.predict(pd.DataFrame({"path": paths}))[[f"p_{c}" for c in cv["classes"]]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_logged_model_is_models_from_code(weighted_champion):
    uri = weighted_champion["reg"].uri
    local = Path(_download(uri))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert not any(f.endswith(".pkl") for f in files), sorted(f for f in files if f.endswith(".pkl"))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("audio_model.py") and "python_model" not in flavor
    assert any(f.endswith("estimators/combiner.joblib") for f in files)
    assert sum(f.endswith("estimator.joblib") for f in files) == 3 and "code/tasks/tracking/pyfunc.py" in files


def _download(uri: str) -> str:
    import mlflow

    store = config.tracking_uri()
    return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store, registry_uri=store)


def test_predict_flow_classifies_held_out_clips_with_the_ensemble(prefect_harness, cv, weighted_champion, capsys):
    from flows.predict import predict

    files = [p for p, _ in cv["held"]]
    rows = predict(files=files, model_name="soundflow-ens-weighted")
    direct = weighted_champion["model"].predict(pd.DataFrame({"path": files}))
    assert [r["file"] for r in rows] == files and all(r["error"] is None for r in rows)
    assert [r["label"] for r in rows] == direct["label"].tolist()
    np.testing.assert_allclose([r["probability"] for r in rows], direct["probability"], rtol=1e-9)
    assert len([line for line in capsys.readouterr().out.splitlines() if "\t" in line]) == len(files)


def test_a_single_model_replaces_the_ensemble_only_if_it_beats_it(cv, weighted_champion):
    """Same folds: the comparison with the ensemble champion decides, and is logged on the refit run."""
    single = registry.best_single(cv["results"])
    ens = weighted_champion["best"]
    out = _register(single, cv, "ens-weighted")
    assert out.alias_moved == (single.cv_accuracy_mean > ens.cv_accuracy_mean)
    assert out.configuration == single.name
    c = MlflowClient(config.tracking_uri())
    logged = json.loads(Path(c.download_artifacts(out.run_id, "champion_comparison.json")).read_text())
    assert logged["previous_version"] == weighted_champion["reg"].version
    assert logged["previous_cv_accuracy"] == pytest.approx(ens.cv_accuracy_mean, abs=1e-6)
    assert registry.best_result([*cv["results"], *cv["ensembles"].values()]).cv_accuracy_mean == pytest.approx(
        max(r.cv_accuracy_mean for r in [*cv["results"], *cv["ensembles"].values()]), abs=1e-9
    )


@pytest.fixture(scope="module")
def flow_run(prefect_harness, esc10_dir) -> dict:
    """The smoke preset with champion registration, cut to cheap vector models (2 clips per class and fold)."""
    from flows.case_study import case_study
    from flows.params import preset

    params = preset(
        "smoke",
        source=str(esc10_dir),
        experiment="test-champion-flow",
        register_champion=True,
        features=["raw", "engineered"],
        models=["gaussian_nb", "logreg", "nearest_centroid"],
        augmented=[],
        ensembles=["average", "weighted"],
        ensemble_members=3,
    )
    return case_study(params)


@pytest.mark.slow  # 2.5-4 min here on a shared machine: Prefect server, ESC-10 ingest, worker start-up, CV
def test_flow_registers_the_winning_ensemble(flow_run):
    results = flow_run.accuracies()
    best, champion = max(results, key=results.get), flow_run.champion
    print(f"flow_best={best} results={results}")
    # With these seeds and clips the weighted ensemble wins, by one clip of 100 (82% vs logreg's 81%); with knn7
    # in place of logreg a single model wins. If a change makes a single model win here, pick cheap members
    # where an ensemble does: this test is about registering it.
    assert best.startswith("ensemble:"), results
    assert champion.configuration.startswith(f"{best} = ") and champion.alias_moved
    mv = MlflowClient(config.tracking_uri()).get_model_version(champion.name, champion.version)
    assert mv.tags["configuration"] == champion.configuration
    assert float(mv.tags["cv_accuracy_mean"]) == pytest.approx(flow_run.best.cv_accuracy_mean, abs=1e-6)
    inner = serving.load_model(champion.uri).unwrap_python_model()
    assert len(inner.estimators) == 3 and champion.configuration.count(" + ") == 2


def _hyper(estimator) -> dict:
    """An estimator's hyper-parameters as plain values (nested estimators by class name)."""
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else vars(estimator)
    return {k: type(v).__name__ if hasattr(v, "fit") else repr(v) for k, v in params.items()}


def test_members_refitted_side_by_side_match_one_at_a_time(cv):
    """The champion's members refitted in 2 worker processes (as the flow does with n_jobs=2) are the members
    refitted one after another in this process, in the members' order, with a log line as each one finishes."""
    best = cv["ensembles"]["ensemble:weighted"]
    specs = [m.config for m in members_of(best)]
    lines: list[str] = []

    class Log:
        def info(self, msg, *args):
            lines.append(msg % args)

    alone = refit_members(specs, cv["inputs"], n_jobs=1, log=Log())
    side = refit_members(specs, cv["inputs"], n_jobs=2, log=Log())
    assert len(specs) >= 2 and len(alone) == len(side) == len(specs)
    for spec, a, b in zip(specs, alone, side):
        # The claim: the same estimators with the same hyper-parameters, making the same decisions. Their floats
        # come from other processes with other BLAS thread counts (and kernels on another CPU): an iterative solver
        # stopped at its tolerance carries those last-bit differences into its coefficients (3.6e-5 relative seen
        # on one machine), so probabilities agree to float32-sized tolerances, not bit for bit.
        assert type(a) is type(b) and _hyper(a) == _hyper(b)
        X = np.load(cv["inputs"].features[spec.features])
        pa, pb = a.predict_proba(X), b.predict_proba(X)
        np.testing.assert_allclose(pa, pb, rtol=1e-3, atol=1e-4)
        top2 = np.sort(pa, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-3  # a near-tie may break either way
        assert clear.any() and (pa.argmax(1) == pb.argmax(1))[clear].all()
    assert sum("refitted (" in line for line in lines) == 2 * len(specs)
    assert any("2 at a time" in line for line in lines)

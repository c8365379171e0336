"""Champion registry and the audio pyfunc on a tiny real setup: 3 ESC-10 clips per class, GaussianNB on engineered features."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.audio import load_audio
from tasks.data.manifest import write_manifest
from tasks.data.split import make_splits
from tasks.evaluation.refit import refit_full
from tasks.features.representations import compute
from tasks.records import Config, ConfigResult, CVInputs, Dataset, EnsembleResult
from tasks.tracking import pyfunc as serving
from tasks.tracking import registry
from tasks.tracking import runs as tracking
from tests.conftest import esc10_five_second_clips

SR = 22050
PER_CLASS = 3


def experiment(name: str, folder: Path) -> str:
    """An experiment whose artifacts stay in the test's temp folder (not ./mlruns of the working directory)."""
    exp = tracking.client().get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return tracking.client().create_experiment(name, artifact_location=(folder / "artifacts").as_uri())


@pytest.fixture(scope="module")
def tiny(esc10_dir, tmp_path_factory) -> dict:
    """Manifest, clips, engineered features and splits of 30 real 5 s clips."""
    out = tmp_path_factory.mktemp("tiny")
    manifest, _, classes = esc10_five_second_clips(esc10_dir, PER_CLASS, distinct_groups=True)
    clips = np.stack([load_audio(p, sr=SR, duration_s=5.0) for p in manifest["path"]])
    feats = compute("engineered", clips, SR, n_jobs=1)
    manifest_path, feats_path, splits_path = out / "manifest.csv", out / "engineered.npy", out / "splits.json"
    write_manifest(manifest_path, manifest)
    np.save(feats_path, feats)
    splits = make_splits(manifest, scheme="group_kfold", k=3, seed=0)
    splits_path.write_text(json.dumps([{"train": tr.tolist(), "test": te.tolist()} for tr, te in splits]))
    return {
        "dir": out,
        "manifest": str(manifest_path),
        "features": str(feats_path),
        "splits": str(splits_path),
        "paths": manifest["path"].tolist(),
        "clips": clips,
        "X": feats,
        "classes": list(classes),
    }


def _inputs(tiny: dict) -> CVInputs:
    return CVInputs(manifest=tiny["manifest"], splits=tiny["splits"], features={"engineered": tiny["features"]})


@pytest.fixture(scope="module")
def champion(tiny) -> dict:
    """gaussian_nb refit on all 30 clips, logged as a pyfunc and registered (first version: champion)."""
    est = refit_full(Config("gaussian_nb", "engineered", "classical"), _inputs(tiny))
    exp = experiment("test-registry", tiny["dir"])
    with tracking.run(exp, name="champion-refit") as run_id:
        info = serving.log_audio_model(
            run_id,
            est,
            config={
                "model_name": "soundflow-test",
                "features": "engineered",
                "class_names": tiny["classes"],
                "sample_rate": SR,
                "window_s": 5.0,
            },
        )
        digest = registry.folds_digest(tiny["manifest"], tiny["splits"])
        reg = registry.register_champion(
            run_id,
            info.model_uri,
            name="soundflow-test",
            cv_accuracy=0.5,
            folds_digest=digest,
            configuration="gaussian_nb/engineered",
        )
    return {"estimator": est, "run_id": run_id, "model_uri": info.model_uri, "digest": digest, "reg": reg}


def test_refit_uses_every_clip(tiny, champion):
    est = champion["estimator"]
    assert est.model_[-1].class_count_.sum() == len(tiny["paths"])


def test_champion_reloads_with_identical_probabilities(tiny, champion):
    assert champion["reg"]["alias_moved"] and champion["reg"]["reason"] == "no champion yet"
    model = serving.load_model("models:/soundflow-test@champion")
    expected = champion["estimator"].predict_proba(tiny["X"])
    p_cols = [f"p_{c}" for c in tiny["classes"]]

    by_path = model.predict(pd.DataFrame({"path": tiny["paths"]}))
    np.testing.assert_allclose(by_path[p_cols].to_numpy(), expected, rtol=1e-6, atol=1e-9)
    assert (by_path["error"] == "").all() and (by_path["n_windows"] == 1).all()
    assert by_path["label"].tolist() == [tiny["classes"][i] for i in expected.argmax(1)]
    np.testing.assert_allclose(by_path["probability"], expected.max(1), rtol=1e-6)

    waves = pd.DataFrame({"waveform": [c.astype(float).tolist() for c in tiny["clips"][:3]], "sample_rate": SR})
    by_wave = model.predict(waves)
    np.testing.assert_allclose(by_wave[p_cols].to_numpy(), expected[:3], rtol=1e-5, atol=1e-9)


def test_alias_moves_only_for_a_better_model_on_the_same_folds(champion):
    client = tracking.client()
    first = champion["reg"]["version"]
    uri, run_id, digest = champion["model_uri"], champion["run_id"], champion["digest"]

    worse = registry.register_champion(run_id, uri, name="soundflow-test", cv_accuracy=0.4, folds_digest=digest)
    assert not worse["alias_moved"] and "does not beat" in worse["reason"]
    assert str(client.get_model_version_by_alias("soundflow-test", "champion").version) == str(first)

    better = registry.register_champion(run_id, uri, name="soundflow-test", cv_accuracy=0.9, folds_digest=digest)
    assert better["alias_moved"] and better["previous_version"] == str(first)
    assert str(client.get_model_version_by_alias("soundflow-test", "champion").version) == str(better["version"])

    other = registry.register_champion(run_id, uri, name="soundflow-test", cv_accuracy=0.1, folds_digest="other")
    assert other["alias_moved"] and "folds differ" in other["reason"]
    mv = client.get_model_version("soundflow-test", str(other["version"]))
    assert mv.tags["folds_digest"] == "other" and mv.tags["cv_accuracy_mean"] == "0.100000"
    run = client.get_run(run_id)
    assert run.data.tags["champion.alias_moved"] == "true" and "folds differ" in run.data.tags["champion.reason"]
    logged = json.loads(Path(client.download_artifacts(run_id, "champion_comparison.json")).read_text())
    assert logged["version"] == other["version"]


def test_long_short_stereo_and_bad_files(tiny, champion, tmp_path):
    model = serving.load_model("models:/soundflow-test@champion")
    base = [load_audio(p, sr=SR, duration_s=None) for p in tiny["paths"][:3]]
    long12 = np.concatenate(base)[: 12 * SR]
    sf.write(tmp_path / "long.wav", long12, SR)
    sf.write(tmp_path / "short.flac", base[0][: 2 * SR], SR)
    y48 = load_audio(tiny["paths"][4], sr=48000, duration_s=None)
    sf.write(tmp_path / "stereo48k.wav", np.stack([y48, 0.5 * y48], axis=1), 48000)
    (tmp_path / "garbage.wav").write_bytes(b"RIFF this is not audio")
    files = [
        tmp_path / "long.wav",
        tmp_path / "garbage.wav",
        tmp_path / "short.flac",
        tmp_path / "missing.ogg",
        tmp_path / "stereo48k.wav",
    ]
    out = model.predict(pd.DataFrame({"path": [str(f) for f in files]}))
    assert out["n_windows"].tolist() == [4, 0, 1, 0, 1]  # 12 s: starts 0, 2.5, 5, 7 s
    ok = out["error"] == ""
    assert ok.tolist() == [True, False, True, False, True]
    p = out[[f"p_{c}" for c in tiny["classes"]]].to_numpy()
    np.testing.assert_allclose(p[ok].sum(1), 1.0, rtol=1e-6)
    assert out.loc[ok, "label"].isin(tiny["classes"]).all()
    assert "garbage.wav" in out["error"][1] and "unreadable" in out["error"][1]
    assert "missing.ogg" in out["error"][3] and "cannot open" in out["error"][3]
    assert np.isnan(p[~ok]).all()


def test_register_task_refits_logs_and_registers(tiny, champion):
    parent_exp = experiment("test-register-task", tiny["dir"])
    parent = tracking.start_run(parent_exp, name="case-study")
    config = Config("gaussian_nb", "engineered", "classical")
    from sklearn.naive_bayes import GaussianNB

    from tasks.data.split import load_splits

    y = np.array([tiny["classes"].index(label) for label in pd.read_csv(tiny["manifest"])["label"]])
    oof = np.full((len(y), len(tiny["classes"])), np.nan)  # the out-of-fold scores its thresholds come from
    for train, test in load_splits(tiny["splits"]):
        oof[test] = GaussianNB().fit(tiny["X"][train], y[train]).predict_proba(tiny["X"][test])
    np.save(tiny["dir"] / "oof.npy", oof)
    best = ConfigResult(
        config, "", str(tiny["dir"] / "oof.npy"), cv_accuracy_mean=0.55, cv_accuracy_sem=0.0, macro_f1_mean=0.5
    )
    data = Dataset(
        name="folders",
        layout="folders",
        manifest=tiny["manifest"],
        clips="",
        rejected="",
        info="",
        digest="d",
        n_clips=len(tiny["paths"]),
        n_recordings=len(tiny["paths"]),
        sample_rate=SR,
        window_s=5.0,
        hop_s=5.0,
    )
    where = {"experiment_id": parent_exp, "parent_id": parent, "n_jobs": 1}
    out = registry.register_task.fn(best, _inputs(tiny), data, **where)
    assert out.name == "soundflow-folders" and out.alias_moved and out.uri == "models:/soundflow-folders@champion"
    run = tracking.client().get_run(out.run_id)
    assert run.info.run_name == "champion-refit" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.info.status == "FINISHED" and run.data.params["model"] == "gaussian_nb"
    thresholds = serving.load_model(out.uri).unwrap_python_model().config["thresholds"]
    assert set(thresholds) == set(tiny["classes"]) and all(
        t in set(oof.ravel()) | {np.inf} for t in thresholds.values()
    )
    again = registry.register_task.fn(best, _inputs(tiny), data, **where)  # nothing changed: no refit
    assert not again.alias_moved and again.version == out.version and again.run_id is None
    assert again.reason.startswith("unchanged")
    other = replace(best, config=replace(config, repeat=1))  # another configuration with the same accuracy
    tie = registry.register_task.fn(other, _inputs(tiny), data, **where)
    assert not tie.alias_moved and tie.version == str(int(out.version) + 1)  # a tie does not move it


def test_keras_estimator_round_trips_through_its_own_save_format(tiny):
    """A KerasClassifier is stored with save() (.keras + sidecar), not joblib, and reloads to the same outputs."""
    config = Config("mlp_keras", "engineered", "mlp", hyper={"epochs": 2, "validation": 0.0})
    est = refit_full(config, _inputs(tiny))
    exp = experiment("test-registry", tiny["dir"])
    with tracking.run(exp, name="keras-model") as run_id:
        info = serving.log_audio_model(
            run_id,
            est,
            config={
                "model_name": "soundflow-keras-test",
                "features": "engineered",
                "class_names": tiny["classes"],
                "sample_rate": SR,
                "window_s": 5.0,
            },
        )
    model = serving.load_model(info.model_uri)
    inner = model.unwrap_python_model()
    assert inner.config["members"][0]["estimator_format"] == "keras"
    assert type(inner.estimator).__name__ == "KerasClassifier"
    out = model.predict(pd.DataFrame({"path": tiny["paths"][:4]}))
    np.testing.assert_allclose(
        out[[f"p_{c}" for c in tiny["classes"]]].to_numpy(), est.predict_proba(tiny["X"][:4]), rtol=1e-4, atol=1e-6
    )


def test_an_ensemble_that_only_ties_its_best_member_is_not_the_champion():
    """The same five fold scores averaged in another order differ in the last bit (a default run's BirdNET SVM and its
    logpool ensemble: 0.9549999999999998 and 0.9550000000000001): a tie, so the single model, listed first, wins and
    the ensemble's members are not refitted for nothing; a real gain of one clip in 400 still wins."""
    single = ConfigResult(Config("rbf_svm", "birdnet", "classical"), "a", "a.npy", 0.9549999999999998, 0.01, 0.9)
    ensemble = EnsembleResult(
        "ensemble", "logpool", "jaya", 0, (single.name,), (single,), "e", "e.npy", 0.9550000000000001, 0.01, 0.9
    )
    assert registry.best_result([single, ensemble]).name == "rbf_svm/birdnet"
    better = replace(ensemble, cv_accuracy_mean=0.9575)
    assert registry.best_result([single, better]).name == "ensemble:logpool"
    repeat = replace(single, config=replace(single.config, repeat=1), cv_accuracy_mean=0.9550000000000001)
    assert registry.best_single([single, repeat]).name == "rbf_svm/birdnet"

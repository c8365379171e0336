"""The records between stages: names are labels built from fields, cache keys stay what they were, ties resolve
to the single model."""

from dataclasses import FrozenInstanceError, replace

import pytest

from tasks.cache import digest
from tasks.records import AugmentParams, Config, ConfigResult, EnsembleResult, RunSummary


def _result(config: Config, acc: float) -> ConfigResult:
    return ConfigResult(config, "run", "p.npy", cv_accuracy_mean=acc, cv_accuracy_sem=0.01, macro_f1_mean=acc)


def test_a_configuration_name_is_built_from_its_fields():
    assert Config("rbf_svm", "birdnet", "classical").name == "rbf_svm/birdnet"
    assert Config("cnn2d_logmel", "logmel", "cnn2d", augmented=True, repeat=2).name == "cnn2d_logmel/logmel+aug#2"
    with pytest.raises(FrozenInstanceError):
        Config("rf5", "raw", "classical").seed = 3  # type: ignore[misc]


def test_the_cache_key_is_the_plan_dict_fold_results_were_keyed_by():
    """Fold results cached before the records keep their folder: the key is the old plan dict, field for field."""
    aug = AugmentParams(n_copies=2, p_shift=0.0)
    config = Config("rbf_svm", "birdnet", "classical", augmented=True, seed=3, hyper={"C": 2}, augmentation=aug)
    old = {
        "name": "rbf_svm/birdnet+aug",
        "model": "rbf_svm",
        "features": "birdnet",
        "augmented": True,
        "seed": 3,
        "hyper": {"C": 2},
        "n_jobs": 1,
        "score_aug_test": False,
        "augmentation": aug.model_dump(),
    }
    assert digest(config.key()) == digest(old)
    assert digest(replace(config, seed=4).key()) != digest(old)


def test_an_ensemble_carries_its_members_and_combiner_and_a_tie_goes_to_the_single_model():
    a, b = _result(Config("logreg", "engineered", "classical"), 0.9), _result(Config("rf5", "raw", "classical"), 0.8)
    ens = EnsembleResult("vectors", "weighted", "jaya", 0, (a.name, b.name), (a, b), "e", "e.npy", 0.9, 0.01, 0.9)
    assert ens.name == "vectors:weighted" and ens.family == "ensemble" and ens.final_members[0].config.model == "logreg"
    fields = dict(dataset="d", source="", preset="quick", n_clips=2, n_recordings=2, protocol="p")
    where = dict(experiment_id="1", parent_run_id="r", tracking_uri="", run_url="", registered_model="soundflow-d")
    summary = RunSummary(**fields, results=(a, b, ens), **where)
    assert summary.best is a and summary.accuracies() == {
        "logreg/engineered": 0.9,
        "rf5/raw": 0.8,
        "vectors:weighted": 0.9,
    }
    better = replace(ens, cv_accuracy_mean=0.9025)
    assert RunSummary(**fields, results=(a, b, better), **where).best is better

"""Presets, parameter validation and the training plan they expand to."""

import pytest
from pydantic import ValidationError

from flows.params import DEFAULT, PRESETS, CaseStudyParams, preset
from tasks.errors import SoundflowError
from tasks.evaluation.ensemble_cv import pool_members
from tasks.evaluation.train import plan
from tasks.features.representations import resolved_opts
from tasks.records import AugmentParams


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_plans(name):
    p = preset(name)
    specs = plan(p.models, p.features, p.augmented, seed=p.seed, repeats=p.repeats, hyper=p.hyper)
    names = [s.name for s in specs]
    assert len(names) == len(set(names)), "duplicate configuration names"
    assert specs, name


def test_model_entry_with_features_trains_on_those_only():
    specs = plan(["rf5", "mlp_sklearn/engineered"], ["raw", "engineered"], [], seed=0, repeats={}, hyper={})
    assert sorted((s.model, s.features) for s in specs) == [
        ("mlp_sklearn", "engineered"),
        ("rf5", "engineered"),
        ("rf5", "raw"),
    ]


def test_model_entry_with_unknown_features_names_the_entry():
    with pytest.raises(ValueError, match="mlp_sklearn/logmel"):
        plan(["mlp_sklearn/logmel"], ["raw"], [], seed=0, repeats={}, hyper={})
    with pytest.raises(ValidationError, match="mlp_sklearn/logmel"):
        CaseStudyParams(models=["rf5", "mlp_sklearn/logmel"])
    with pytest.raises(ValidationError, match="unknown model 'rf7'"):
        CaseStudyParams(models=["rf7"])


def test_augmented_and_repeats_expand_with_their_own_seeds():
    specs = plan(
        ["cnn2d_logmel", "rf5"],
        ["logmel", "raw"],
        ["cnn2d_logmel", "rf5/raw"],
        seed=7,
        repeats={"cnn2d_logmel": 2},
        hyper={},
        augmentation=AugmentParams(n_copies=1),
    )
    cnn = [s for s in specs if s.model == "cnn2d_logmel"]
    assert [(s.name, s.seed, s.augmented) for s in cnn] == [
        ("cnn2d_logmel/logmel+aug#0", 7, True),
        ("cnn2d_logmel/logmel+aug#1", 8, True),
    ]
    rf = [(s.augmented, s.augmentation) for s in specs if s.model == "rf5"]
    assert rf == [(False, None), (True, AugmentParams(n_copies=1))]


def test_default_logmel_crop_fits_the_default_logmel():
    import numpy as np

    from tasks.features.representations import logmel
    from tasks.models.catalog import info

    p = preset("default")
    assert p.window_s == "auto"  # 5 s on ESC-10 (tests/test_windows.py)
    frames = logmel(
        np.zeros(int(p.sample_rate * 5.0), np.float32), p.sample_rate, **p.feature_opts.get("logmel", {})
    ).shape[1]
    frac = {**info("cnn2d_logmel").defaults, **p.hyper.get("cnn2d_logmel", {})}["random_crop_frac"]
    assert round(frac * frames) == 86  # 4 s of the 5 s ESC-10 clip, as calibrated (bench/train.py)


def test_feature_options_are_checked_against_the_representation():
    resolved_opts("logmel", {"hop_length": 1024, "n_mels": 32})
    with pytest.raises(SoundflowError, match=r"logmel.*\['hop'\]"):
        resolved_opts("logmel", {"hop": 1024})
    with pytest.raises(ValidationError, match="feature_opts"):
        CaseStudyParams(feature_opts={"logmel": {"hop": 1024}})
    with pytest.raises(ValidationError, match="unknown representation"):
        CaseStudyParams(feature_opts={"spectrum": {}})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_ensemble_pools_match_their_own_configurations(name):
    p = preset(name)
    names = [s.name for s in plan(p.models, p.features, p.augmented, seed=0, repeats=p.repeats, hyper=p.hyper)]
    for pool, patterns in p.ensemble_pools.items():
        assert len(pool_members(names, patterns)) >= 2, (pool, patterns)


def test_ensemble_pools_match_names_and_refuse_reserved_ones():
    names = ["rbf_svm/birdnet", "rbf_svm/birdnet+aug", "logreg/engineered", "cnn2d_logmel/logmel+aug"]
    assert pool_members(names, ["*/birdnet*", "*/engineered"]) == names[:3]
    assert pool_members(names, ["*/raw"]) == []
    assert preset("default", ensemble_pools={"mine": ["rbf_svm/*"]}).ensemble_pools["mine"] == ["rbf_svm/*"]
    for bad in ("ensemble", "a:b", "cnn-repeats", ""):
        with pytest.raises(ValidationError, match="ensemble pool name"):
            CaseStudyParams(ensemble_pools={bad: ["*"]})


def test_overrides_merge_into_nested_preset_dicts():
    p = preset("default", hyper={"mlp_keras": {"epochs": 3}})
    assert p.hyper["mlp_keras"] == {"epochs": 3}
    assert p.hyper["cnn2d_logmel"] == DEFAULT["hyper"]["cnn2d_logmel"]


def test_resolved_feature_options_fill_in_the_defaults():
    opts = resolved_opts("logmel", {"n_mels": 32})
    assert opts["n_mels"] == 32 and opts["hop_length"] == 1024 and set(opts) >= {"n_fft", "fmin", "fmax"}
    assert resolved_opts("engineered", {}) == {}


def test_longest_first_puts_the_cnns_and_augmented_runs_ahead():
    from tasks.evaluation.train import longest_first

    specs = plan(
        ["rf5", "mlp_keras", "cnn1d_deep0_k7", "cnn2d_logmel"],
        ["raw", "logmel"],
        ["cnn2d_logmel", "cnn1d_deep0_k7"],
        seed=0,
        repeats={},
        hyper={},
    )
    order = [s.name for s in longest_first(specs)]
    assert order[:3] == ["cnn2d_logmel/logmel+aug", "cnn1d_deep0_k7/raw+aug", "cnn1d_deep0_k7/raw"]
    assert order[-1] == "rf5/raw" and sorted(order) == sorted(s.name for s in specs)


def test_worker_initializer_splits_the_cores(monkeypatch):
    import os

    from threadpoolctl import threadpool_limits

    from tasks.runtime import init_worker

    for var in (
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    ):
        monkeypatch.setenv(var, "")  # so that the teardown restores what init_worker sets (delenv alone would not)
        monkeypatch.delenv(var)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with threadpool_limits(limits=None):  # restores this process's BLAS threads on exit
        init_worker(2)
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "2" and os.environ["TF_NUM_INTEROP_THREADS"] == "1"


def test_fold_task_thread_cap_without_a_pool_initializer():
    """A Dask worker started without a nanny runs no initializer and sets no thread variables: limit_threads (called
    by every fold task) caps BLAS and TensorFlow at 1 thread there, though NumPy's BLAS started first with a thread
    per core; with OMP_NUM_THREADS set (a nanny's 1, or a user's), that value wins."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, os, numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "before = max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas')\n"
        "from tasks.runtime import limit_threads\n"
        "limit_threads(1)\n"
        "after = max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas')\n"
        "print(json.dumps([before, after, os.environ['TF_NUM_INTRAOP_THREADS']]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and not k.startswith("TF_NUM_")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    before, after, tf_threads = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == (os.cpu_count() or 1) and after == 1 and tf_threads == "1"
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])[1:] == [min(2, os.cpu_count() or 1), "2"]


def _blas_threads() -> tuple[int, int]:
    import os

    from threadpoolctl import threadpool_info

    return os.getpid(), max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


def test_local_runner_workers_run_their_share_of_blas_threads(prefect_harness):
    """The real process pool: each of its 2 workers gets its share of the cores as BLAS threads (1 on 2 cores, here
    and in CI), or the user's own OMP_NUM_THREADS, though NumPy and its BLAS are loaded before the initializer runs."""
    import os

    from prefect import flow, task

    from flows.runners import task_runner
    from tasks import config

    probe = task(_blas_threads)

    @flow(task_runner=task_runner("local", n_jobs=2))
    def probe_flow() -> list[tuple[int, int]]:
        return [f.result() for f in [probe.submit() for _ in range(4)]]

    with config.workers_share_prefect_api():
        seen = probe_flow()
    expected = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // 2))  # the user's wins
    assert {n for _, n in seen} == {expected}
    assert all(pid != os.getpid() for pid, _ in seen)

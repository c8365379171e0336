"""Shared fixtures: the real ESC-10 folder, a temp data dir and MLflow store per session, seeded RNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tasks.config import SHARED_ESC10


@pytest.fixture(scope="session", autouse=True)
def _isolated_stores(tmp_path_factory):
    """Point data/ and the MLflow store at temp dirs so tests never touch the user's."""
    root = tmp_path_factory.mktemp("soundflow")
    os.environ["SOUNDFLOW_DATA"] = str(root / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    yield root


@pytest.fixture(scope="session")
def esc10_dir() -> Path:
    """The real ESC-10 dataset in its original layout (read-only)."""
    if not SHARED_ESC10.is_dir():
        pytest.skip(f"ESC-10 not found at {SHARED_ESC10}")
    return SHARED_ESC10


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server/database for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def esc10_five_second_clips(esc10_dir: Path, per_class: int, held_out: int = 0, *, distinct_groups: bool = False):
    """A manifest of the first `per_class` exactly-5-s ESC-10 clips of each class, and `held_out` further
    (path, label) pairs per class that it leaves out (for prediction tests). distinct_groups: each class's
    first clip of each source recording first, so that group folds can hold every class on each training side."""
    import pandas as pd

    from tasks.cache import file_sha256
    from tasks.data.audio import probe
    from tasks.data.layouts import scan

    listing = scan(esc10_dir)
    recs = listing.recordings
    picked, held = [], []
    for c, label in enumerate(listing.classes):
        exact = [
            r
            for r in recs[recs["label"] == label].to_dict("records")
            if abs(probe(r["path"])["duration_s"] - 5.0) < 0.01
        ]
        if distinct_groups:
            first = {id(r) for r in {r["group"]: r for r in reversed(exact)}.values()}
            exact = [r for r in exact if id(r) in first] + [r for r in exact if id(r) not in first]
        picked += [
            {
                **r,
                "recording_id": Path(r["path"]).name,
                "filename": Path(r["path"]).name,
                "start_s": 0.0,
                "duration_s": 5.0,
                "class_id": c,
                "content_hash": file_sha256(r["path"]),
                "sample_rate": 44100,
                "channels": 1,
                "recording_duration_s": 5.0,
                "loudness_db": -20.0,
            }
            for r in exact[:per_class]
        ]
        held += [(r["path"], label) for r in exact[per_class : per_class + held_out]]
    return pd.DataFrame(picked), held, listing.classes

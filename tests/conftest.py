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

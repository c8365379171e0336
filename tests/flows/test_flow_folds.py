"""Data unlike ESC-10 through the real flow: an ESC-50-layout dataset whose official folds cannot be trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mlflow import MlflowClient

from flows.params import CaseStudyParams
from tasks import config
from tasks.errors import DatasetError

SR = 8000


def esc50_with_one_oversized_fold(root: Path, *, n_classes: int = 50, n_clips: int = 414) -> Path:
    """ESC-50's layout (audio/ + meta/esc50.csv) as a user met it: 400 of 414 clips in fold 4, 11 in fold 2, 1 in
    fold 3, 2 in fold 5, none in fold 1; each class a tone of its own, each clip its own source."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    folds = [4] * 400 + [2] * 11 + [3] + [5] * 2
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    t = np.arange(round(SR * 0.5)) / SR
    for i in range(n_clips):
        c = i % n_classes
        y = 0.3 * np.sin(2 * np.pi * (200 + 60 * c) * (1 + 0.01 * rng.standard_normal()) * t)
        y += 0.01 * rng.standard_normal(len(t))
        name = f"{folds[i]}-{1000 + i}-A-{c}.wav"
        sf.write(root / "audio" / name, y.astype(np.float32), SR)
        lines.append(f"{name},{folds[i]},{c},sound {c},False,{1000 + i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def esc50_bad_folds(tmp_path_factory) -> Path:
    return esc50_with_one_oversized_fold(tmp_path_factory.mktemp("esc50") / "ESC-50-master")


def _params(source: Path, **kw) -> CaseStudyParams:
    return CaseStudyParams(
        source=str(source),
        sample_rate=SR,
        features=["engineered"],
        models=["gaussian_nb"],
        ensembles=[],
        augmented=[],
        ensemble_pools={},
        register_champion=False,
        **{"experiment": "esc50-bad-folds", **kw},
    )


def test_auto_falls_back_to_group_kfold_and_says_so(prefect_harness, esc50_bad_folds):
    from flows.case_study import case_study

    summary = case_study(_params(esc50_bad_folds))
    parent = MlflowClient(config.tracking_uri()).get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["soundflow.split"] == "group_kfold"
    note = parent.data.tags["soundflow.split_fallback"]
    assert "fold 4 holds 400 of 414 rows (97%)" in note and "fell back to 5-fold" in note
    assert summary.protocol.startswith("5-fold CV grouped by group") and "fold 4 holds" in summary.protocol
    assert parent.data.tags["soundflow.window_s"] == "0.5"  # --window-s auto: the clips' own length
    assert summary.best.cv_accuracy_mean > 0.5  # a sound 50-class problem once the folds are fair


def test_official_folds_that_cannot_be_trusted_stop_the_run_with_what_works(prefect_harness, esc50_bad_folds):
    from flows.case_study import case_study

    with pytest.raises(DatasetError, match=r"fold 4 holds 400 of 414 rows.*--split group_kfold"):
        case_study(_params(esc50_bad_folds, split="official", experiment="esc50-bad-folds-official"))
    c = MlflowClient(config.tracking_uri())
    exp = c.get_experiment_by_name("esc50-bad-folds-official")
    assert {r.info.status for r in c.search_runs([exp.experiment_id])} == {"FAILED"}


@pytest.mark.slow
def test_the_cli_ends_a_refused_split_with_its_message_and_exit_code_2(esc50_bad_folds, tmp_path):
    """`soundflow run --split official` on folds that cannot be trusted: exit 2 and one closing line that says what
    works (Prefect's own log of the failed task comes before it)."""
    import os
    import subprocess
    import sys

    from tasks.config import ROOT

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))},
        "SOUNDFLOW_DATA": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    args = ["run", "--source", str(esc50_bad_folds), "--split", "official", "--sample-rate", str(SR)]
    args += ["--models", "gaussian_nb", "--features", "engineered", "--augmented", "", "--ensembles", ""]
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    [said] = [line for line in proc.stderr.splitlines() if line.startswith("soundflow run:")]
    assert said.startswith("soundflow run: the dataset's own folds cannot be trusted") and "--split group_kfold" in said

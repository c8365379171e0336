"""Train/test splits that never put one group (source recording, speaker, the windows of one file) on both sides."""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import StratifiedGroupKFold

from tasks.data.manifest import has_folds, read_manifest, write_manifest
from tasks.cache import save_json
from tasks.errors import DatasetError

Scheme = Literal["auto", "official", "group_kfold", "book_holdout"]


def official_folds(folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (train, test) pair per official fold id."""
    folds = pd.array(folds, dtype="Int64")
    if pd.isna(folds).any():
        raise DatasetError("split='official' needs the dataset's own folds, and this dataset has none; "
                           "use split='auto' or 'group_kfold'")
    folds = np.asarray(folds, dtype=int)
    ids = sorted(set(folds.tolist()))
    if len(ids) < 2:
        raise DatasetError(f"official folds need at least two fold ids, got {ids}; use split='group_kfold'")
    return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in ids]


def group_kfold(y: np.ndarray, groups: np.ndarray, *, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """StratifiedGroupKFold by group, for data without official folds."""
    n_groups = len(set(groups.tolist()))
    if n_groups < k:
        raise DatasetError(f"group k-fold with k={k} needs at least {k} groups, the dataset has {n_groups}; lower --k")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups)]


def book_holdout(y: np.ndarray, groups: np.ndarray, *, per_class: int = 8, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The book's single split: about `per_class` clips of each class held out, whole sources at a time."""
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        sources = list(dict.fromkeys(groups[members].tolist()))
        rng.shuffle(sources)
        taken = 0
        for s in sources:
            if taken >= per_class:
                break
            idx = members[groups[members] == s]
            test.extend(idx.tolist())
            taken += len(idx)
    test_idx = np.array(sorted(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return [(train_idx, test_idx)]


def make_splits(manifest: pd.DataFrame, *, scheme: Scheme = "official", k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits for a manifest (row indices of segments); a group's segments (and their copies) stay together.

    auto: the dataset's own folds when it has them, else StratifiedGroupKFold over `group`."""
    y = manifest["class_id"].to_numpy()
    groups = manifest["group"].astype(str).to_numpy()
    if scheme == "auto":
        scheme = "official" if has_folds(manifest) else "group_kfold"
    if scheme == "official":
        splits = official_folds(manifest["fold"].to_numpy())
    elif scheme == "group_kfold":
        splits = group_kfold(y, groups, k=k, seed=seed)
    elif scheme == "book_holdout":
        splits = book_holdout(y, groups, seed=seed)
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; use auto, official, group_kfold or book_holdout")
    check_no_leak(splits, groups)
    return splits


def check_no_leak(splits, groups: np.ndarray) -> None:
    """Raise if any group appears on both sides of a split."""
    for i, (tr, te) in enumerate(splits):
        shared = set(groups[tr].tolist()) & set(groups[te].tolist())
        if shared:
            raise DatasetError(f"split {i}: groups on both sides of the split: {sorted(shared)[:5]}")
        if len(np.intersect1d(tr, te)):
            raise DatasetError(f"split {i}: clips on both sides of the split")


@task(cache_policy=NO_CACHE)
def split_task(manifest_path: str, scheme: str, k: int, seed: int, out_path: str) -> str:
    """Make the splits and save them as JSON lists of indices."""
    manifest = read_manifest(manifest_path)
    splits = make_splits(manifest, scheme=scheme, k=k, seed=seed)
    save_json(out_path, [{"train": tr.tolist(), "test": te.tolist()} for tr, te in splits])
    return out_path


def load_splits(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read splits written by split_task."""
    import json

    with open(path) as fh:
        return [(np.array(s["train"], dtype=int), np.array(s["test"], dtype=int)) for s in json.load(fh)]


def n_folds(path: str) -> int:
    """How many (train, test) splits a splits file holds."""
    return len(load_splits(path))


def subset_rows(manifest: pd.DataFrame, *, per_class_fold: int) -> np.ndarray:
    """Row indices of the segments of the first `per_class_fold` recordings of each (class, fold)."""
    recs = manifest.drop_duplicates("recording_id")
    keep = recs.groupby(["class_id", "fold"], sort=False, dropna=False).head(per_class_fold)["recording_id"]
    return np.flatnonzero(manifest["recording_id"].isin(set(keep)).to_numpy())


@task(cache_policy=NO_CACHE)
def subset_task(data: dict, per_class_fold: int, out_dir: str) -> dict:
    """A smaller dataset (quick runs, tests): same layout of outputs as ingestion's."""
    from pathlib import Path

    from tasks.cache import digest, save_npy

    manifest = read_manifest(data["manifest"])
    rows = subset_rows(manifest, per_class_fold=per_class_fold)
    key = digest(data["digest"], per_class_fold)
    out = Path(out_dir)
    man_path, clips_path = out / f"manifest-{key}.csv", out / f"clips-{key}.npy"
    if not (man_path.exists() and clips_path.exists()):
        save_npy(clips_path, np.load(data["clips"], mmap_mode="r")[rows])
        write_manifest(man_path, manifest.iloc[rows])
    return {**data, "manifest": str(man_path), "clips": str(clips_path), "digest": key, "n_clips": len(rows)}

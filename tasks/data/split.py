"""Train/test splits that never put one group (source recording, speaker, the windows of one file) on both sides."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import StratifiedGroupKFold

from tasks.cache import save_json
from tasks.data.manifest import has_folds, read_manifest, write_manifest
from tasks.errors import DatasetError
from tasks.records import Dataset

Scheme = Literal["auto", "official", "group_kfold", "book_holdout"]


def official_folds(folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (train, test) pair per official fold id."""
    folds = pd.array(folds, dtype="Int64")
    if pd.isna(folds).any():
        raise DatasetError(
            "split='official' needs the dataset's own folds, and this dataset has none; "
            "use split='auto' or 'group_kfold'"
        )
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


def book_holdout(
    y: np.ndarray, groups: np.ndarray, *, per_class: int = 8, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
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


# A test fold holding more than this share of the rows (or 1.5 times its due share 1/k, for k < 3) leaves too
# little to train on.
MAX_TEST_SHARE = 0.5
# A test fold with fewer rows than this share of the average fold scores too few clips to mean anything.
MIN_TEST_SHARE_OF_MEAN = 0.25


@dataclass(frozen=True)
class SplitChoice:
    """The splits a run uses, the scheme that made them, and why it is not the one asked for (empty if it is)."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    scheme: str
    note: str = ""


def make_splits(
    manifest: pd.DataFrame, *, scheme: Scheme = "official", k: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits for a manifest (row indices of segments); a group's segments (and their copies) stay together.

    auto: the dataset's own folds when it has them and they pass the checks, else StratifiedGroupKFold over `group`."""
    return choose_splits(manifest, scheme=scheme, k=k, seed=seed).splits


def choose_splits(manifest: pd.DataFrame, *, scheme: Scheme = "official", k: int = 5, seed: int = 0) -> SplitChoice:
    """The checked splits of a scheme; under auto, folds that fail the checks fall back to group k-fold (said in
    the note); any other scheme whose splits fail raises DatasetError naming the folds and what works."""
    y = manifest["class_id"].to_numpy()
    groups = manifest["group"].astype(str).to_numpy()
    labels = manifest["label"] if "label" in manifest else manifest["class_id"]
    names = dict(zip(manifest["class_id"].tolist(), labels.astype(str).tolist()))
    note = ""
    if scheme == "auto":
        if not has_folds(manifest):
            scheme = "group_kfold"
        else:
            folds = manifest["fold"].to_numpy()
            problems = split_problems(official_folds(folds), y, names, fold_ids(folds))
            if not problems:
                scheme = "official"
            else:
                scheme = "group_kfold"
                note = (
                    f"the dataset's own folds cannot be trusted ({_listed(problems)}; rows per fold: "
                    f"{fold_sizes(folds)}): fell back to {k}-fold cross-validation grouped by group "
                    f"(StratifiedGroupKFold)"
                )
    if scheme == "official":
        folds = manifest["fold"].to_numpy()
        splits = official_folds(folds)
        problems = split_problems(splits, y, names, fold_ids(folds))
        if problems:
            raise DatasetError(
                f"the dataset's own folds cannot be trusted for cross-validation: {_listed(problems)}. Rows per "
                f"fold: {fold_sizes(folds)}. Use --split group_kfold (StratifiedGroupKFold over the groups), or "
                f"--split auto, which falls back to it"
            )
    elif scheme == "group_kfold":
        splits = group_kfold(y, groups, k=k, seed=seed)
        problems = split_problems(splits, y, names, list(range(len(splits))))
        if problems:
            raise DatasetError(
                f"group k-fold (k={k}) cannot make folds to trust: {_listed(problems)}. "
                f"{_few_groups(y, groups, names, k)}Give more groups (a finer group column or --group-pattern), "
                f"lower --k, or drop the classes with too few groups"
            )
    elif scheme == "book_holdout":
        splits = book_holdout(y, groups, seed=seed)
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; use auto, official, group_kfold or book_holdout")
    check_no_leak(splits, groups)
    return SplitChoice(splits, scheme, note)


def split_problems(splits, y: np.ndarray, names: dict, fold_names: list) -> list[str]:
    """What makes each (train, test) split untrustworthy: classes missing from its training side, a test side
    with most of the rows, or one far smaller than the others; [] when every split passes."""
    classes = np.unique(y)
    mean_test = np.mean([len(te) for _, te in splits]) if len(splits) else 0.0
    lacking, oversized, small = [], [], []
    for name, (tr, te) in zip(fold_names, splits):
        missing = np.setdiff1d(classes, y[tr])
        if len(missing):
            shown = ", ".join(repr(str(names.get(c, c))) for c in missing[:5].tolist())
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            lacking.append(
                f"with fold {name} as the test fold, training lacks {len(missing)} of {len(classes)} "
                f"classes ({shown}{more})"
            )
        if len(te) > max(MAX_TEST_SHARE, 1.5 / max(len(splits), 1)) * len(y):
            oversized.append(f"fold {name} holds {len(te)} of {len(y)} rows ({len(te) / len(y):.0%})")
        if len(splits) > 1 and len(te) < MIN_TEST_SHARE_OF_MEAN * mean_test:
            small.append(
                f"fold {name} tests only {len(te)} rows (the folds average {mean_test:.0f}): "
                f"{len(np.unique(y[te]))} of {len(classes)} classes"
            )
    return oversized + lacking + small


def fold_ids(folds: np.ndarray) -> list[int]:
    return sorted(set(np.asarray(pd.array(folds, dtype="Int64"), dtype=int).tolist()))


def fold_sizes(folds: np.ndarray) -> str:
    counts = pd.Series(np.asarray(pd.array(folds, dtype="Int64"), dtype=int)).value_counts().sort_index()
    return ", ".join(f"{f}: {n}" for f, n in counts.items())


def _listed(problems: list[str], most: int = 4) -> str:
    more = f"; and {len(problems) - most} more problem(s)" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


def _few_groups(y: np.ndarray, groups: np.ndarray, names: dict, k: int) -> str:
    per_class = pd.Series(groups).groupby(y).nunique()
    few = per_class[per_class < k]
    if few.empty:
        return ""
    shown = ", ".join(f"{names.get(c, c)!r}: {n}" for c, n in few.head(5).items())
    return f"Classes with fewer than k={k} groups: {shown}{' ...' if len(few) > 5 else ''}. "


def check_no_leak(splits, groups: np.ndarray) -> None:
    """Raise if any group appears on both sides of a split."""
    for i, (tr, te) in enumerate(splits):
        shared = set(groups[tr].tolist()) & set(groups[te].tolist())
        if shared:
            raise DatasetError(f"split {i}: groups on both sides of the split: {sorted(shared)[:5]}")
        if len(np.intersect1d(tr, te)):
            raise DatasetError(f"split {i}: clips on both sides of the split")


@task(cache_policy=NO_CACHE)
def split_task(data: Dataset, scheme: Scheme, k: int, seed: int, out_dir: str) -> str:
    """Make the checked splits and save them as JSON under out_dir (the scheme used, why it differs from the one
    asked for, and the lists of indices); a fall-back is logged as a warning. Returns the file's path."""
    from pathlib import Path

    out_path = str(Path(out_dir) / f"splits-{data.digest}-{scheme}-{k}-{seed}.json")
    manifest = read_manifest(data.manifest)
    choice = choose_splits(manifest, scheme=scheme, k=k, seed=seed)
    if choice.note:
        from prefect import get_run_logger

        get_run_logger().warning("split: %s", choice.note)
    folds = [{"train": tr.tolist(), "test": te.tolist()} for tr, te in choice.splits]
    save_json(out_path, {"scheme": choice.scheme, "note": choice.note, "folds": folds})
    return out_path


def _read(path: str) -> dict:
    import json

    with open(path) as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {"scheme": "", "note": "", "folds": data}


def load_splits(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read splits written by split_task (or a plain JSON list of {"train", "test"} index lists)."""
    return [(np.array(s["train"], dtype=int), np.array(s["test"], dtype=int)) for s in _read(path)["folds"]]


def split_scheme(path: str) -> tuple[str, str]:
    """The scheme a splits file was made with, and the note saying why it is not the one asked for ("" if it is)."""
    data = _read(path)
    return data["scheme"], data["note"]


def protocol(path: str) -> str:
    """The evaluation protocol of a splits file in words, with why it is not the one asked for."""
    scheme, note = split_scheme(path)
    text = {
        "official": "cross-validation on the dataset's own folds",
        "group_kfold": f"{n_folds(path)}-fold CV grouped by group (StratifiedGroupKFold)",
        "book_holdout": "the book's 8-per-class hold-out",
    }.get(scheme, f"{n_folds(path)} train/test splits")
    return f"{text} ({note})" if note else text


def n_folds(path: str) -> int:
    """How many (train, test) splits a splits file holds."""
    return len(load_splits(path))


# Without folds, a subset keeps this many groups per class for each clip per class and fold asked for (the folds
# of group k-fold are made from the groups).
GROUPS_PER_FOLD = 5


def subset_rows(manifest: pd.DataFrame, *, per_class_fold: int) -> np.ndarray:
    """Row indices of the segments of the first `per_class_fold` recordings of each (class, fold); a dataset without
    folds (windows of annotated recordings, say) keeps each class's rows of its first GROUPS_PER_FOLD x
    per_class_fold groups, so that group k-fold still has groups to split."""
    if not has_folds(manifest):
        pairs = manifest.drop_duplicates(["class_id", "group"])
        keep = pairs.groupby("class_id", sort=False).head(GROUPS_PER_FOLD * per_class_fold)[["class_id", "group"]]
        chosen = set(map(tuple, keep.to_numpy().tolist()))
        mask = [(c, g) in chosen for c, g in zip(manifest["class_id"], manifest["group"])]
        return np.flatnonzero(mask)
    recs = manifest.drop_duplicates("recording_id")
    keep = recs.groupby(["class_id", "fold"], sort=False, dropna=False).head(per_class_fold)["recording_id"]
    return np.flatnonzero(manifest["recording_id"].isin(set(keep)).to_numpy())


@task(cache_policy=NO_CACHE)
def subset_task(data: Dataset, per_class_fold: int, out_dir: str) -> Dataset:
    """A smaller dataset (quick runs, tests): same layout of outputs as ingestion's."""
    from pathlib import Path

    from tasks.cache import digest, save_npy

    manifest = read_manifest(data.manifest)
    rows = subset_rows(manifest, per_class_fold=per_class_fold)
    key = digest(data.digest, per_class_fold)
    out = Path(out_dir)
    man_path, clips_path = out / f"manifest-{key}.csv", out / f"clips-{key}.npy"
    if not (man_path.exists() and clips_path.exists()):
        save_npy(clips_path, np.load(data.clips, mmap_mode="r")[rows])
        write_manifest(man_path, manifest.iloc[rows])
    subset = read_manifest(man_path)
    return replace(
        data,
        manifest=str(man_path),
        clips=str(clips_path),
        digest=key,
        n_clips=len(rows),
        n_recordings=int(subset["recording_id"].nunique()),
    )

"""Training and test sets as index arrays over memory-mapped feature files, read a batch at a time.

A set is (row, copy) pairs: sample i is X[row[i]] when copy[i] < 0, else the augmented copy X_aug[row[i], copy[i]].
Nothing is concatenated: Keras models read their batches from the files (KerasClassifier accepts Rows), and a
scikit-learn model, which needs its whole matrix in memory, gets `np.asarray(rows)` and nothing more.
"""

from __future__ import annotations

import inspect
from typing import Iterator

import numpy as np

from tasks.cache import drop_pages


class Rows:
    """Samples of X (n, ...) and of its augmented copies X_aug (n, n_copies, ...), read on demand."""

    def __init__(self, X: np.ndarray, row, copy=None, X_aug: np.ndarray | None = None):
        self.X, self.X_aug = X, X_aug
        self.row = np.asarray(row, dtype=np.intp)
        self.copy = np.full(len(self.row), -1, np.intp) if copy is None else np.asarray(copy, dtype=np.intp)
        if self.copy.shape != self.row.shape:
            raise ValueError(f"row and copy differ in length ({len(self.row)} vs {len(self.copy)})")
        if X_aug is None and (self.copy >= 0).any():
            raise ValueError("copies asked for without an array of augmented copies")

    @classmethod
    def of(cls, X) -> "Rows":
        """Every row of an array (or the Rows themselves)."""
        return X if isinstance(X, Rows) else cls(X, np.arange(len(X)))

    def __len__(self) -> int:
        return len(self.row)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),) + tuple(self.X.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def subset(self, idx) -> "Rows":
        """The samples at positions idx, still unread."""
        idx = np.asarray(idx, dtype=np.intp)
        return Rows(self.X, self.row[idx], self.copy[idx], self.X_aug)

    def take(self, idx) -> np.ndarray:
        """Samples at positions idx as one float32 array, in idx's order (each file read in ascending order, a block
        at a time: the output is the only copy of the samples, and a file's pages are released after each block)."""
        idx = np.asarray(idx, dtype=np.intp)
        out = np.empty((len(idx),) + self.shape[1:], np.float32)
        row, copy = self.row[idx], self.copy[idx]
        orig = copy < 0
        if orig.any():
            _gather_into(out, np.flatnonzero(orig), self.X, row[orig])
        if (~orig).any():
            flat = self.X_aug.reshape((-1,) + self.shape[1:])  # a view of the memmap: (row, copy) -> one index
            _gather_into(out, np.flatnonzero(~orig), flat, row[~orig] * self.X_aug.shape[1] + copy[~orig])
        return out

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The samples in order, `size` at a time."""
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(start + size, len(self))))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)


BLOCK_BYTES = 32 << 20  # samples read from a file at a time (here, by the Keras models and their statistics)


def _gather_into(out: np.ndarray, dest: np.ndarray, arr: np.ndarray, idx: np.ndarray) -> None:
    """out[dest] = arr[idx], reading arr in ascending index order (sequential pages of a memmap) about BLOCK_BYTES at
    a time and releasing its pages after each block, so no second full-size copy is made."""
    order = np.argsort(idx, kind="stable")
    per_row = max(1, arr[0].nbytes) if len(arr) else 1
    step = max(1, BLOCK_BYTES // per_row)
    for start in range(0, len(order), step):
        part = order[start : start + step]
        out[dest[part]] = arr[idx[part]]
        drop_pages(arr)  # a pass over files larger than RAM holds one block of their pages, not all of them


def training_rows(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, train: np.ndarray, X_aug: np.ndarray | None = None
) -> tuple[Rows, np.ndarray, np.ndarray]:
    """A fold's training set: its original rows, then (if given) their augmented copies, and only theirs.

    Labels and groups follow each copy's original, so a copy never leaves its source's side of any split."""
    train = np.asarray(train, dtype=np.intp)
    if X_aug is None:
        return Rows(X, train), y[train], groups[train]
    n_copies = X_aug.shape[1]
    row = np.concatenate([train, np.repeat(train, n_copies)])
    copy = np.concatenate([np.full(len(train), -1), np.tile(np.arange(n_copies), len(train))])
    return Rows(X, row, copy, X_aug), y[row], groups[row]


def streams(estimator) -> bool:
    """True for estimators that read Rows batch by batch (the Keras models); the others need arrays."""
    return bool(getattr(estimator, "reads_rows", False))


def fit(estimator, rows: Rows, y: np.ndarray, groups: np.ndarray):
    """Fit on Rows: streamed to models that read batches, materialized for the others; groups if it takes them."""
    X = rows if streams(estimator) else np.asarray(rows)
    if "groups" in inspect.signature(estimator.fit).parameters:
        return estimator.fit(X, y, groups=groups)
    return estimator.fit(X, y)

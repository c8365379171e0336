"""Per-class detection thresholds from out-of-fold window scores: the lowest score that reaches a target precision.

Each class is judged one-vs-rest: its windows are positives, every other window a negative. Precision at a
threshold t counts the windows scoring >= t, so tied scores enter or leave together."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.errors import DatasetError

TABLE_COLUMNS = ["label", "threshold", "precision", "recall", "support", "reached", "note"]
# Slack when comparing precisions, so 7/10 counts as reaching a 0.7 target and equal precisions tie.
PRECISION_TOLERANCE = 1e-12


def pr_curve(s: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct scores descending, precision and recall when each is the threshold) of one class."""
    s = np.asarray(s, float)
    positive = np.asarray(positive, bool)
    order = np.argsort(-s, kind="stable")
    s_desc, pos_desc = s[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_desc) != 0), len(s_desc) - 1] if len(s_desc) else np.array([], int)
    tp = np.cumsum(pos_desc)[last_of_tie]
    flagged = last_of_tie + 1
    support = max(int(positive.sum()), 1)
    return s_desc[last_of_tie], tp / flagged, tp / support


def _check(scores: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(scores as float (n, C), y as int (n,)), or DatasetError saying which row or shape is wrong."""
    scores, y = np.asarray(scores, float), np.asarray(y)
    n_classes = len(class_names)
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise DatasetError(
            f"scores have shape {scores.shape}; expected (n_windows, {n_classes}) for {list(class_names)}"
        )
    if len(set(class_names)) != n_classes:
        raise DatasetError(f"class names repeat: {list(class_names)}")
    if y.shape != (len(scores),):
        raise DatasetError(f"y has shape {y.shape}; expected ({len(scores)},), one class id per window")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"y holds {y.dtype} values; expected integer class ids 0..{n_classes - 1}")
    outside = np.flatnonzero((y < 0) | (y >= n_classes))
    if len(outside):
        raise DatasetError(f"y row {outside[0]}: class id {y[outside[0]]} is not in 0..{n_classes - 1}")
    rows, cols = np.nonzero(~np.isfinite(scores))
    if len(rows):
        raise DatasetError(
            f"scores row {rows[0]}: score of class {class_names[cols[0]]!r} is {scores[rows[0], cols[0]]}"
        )
    return scores, y.astype(int)


def calibrate(
    scores: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    *,
    target_precision: float = 0.9,
    ignore: Collection[str] = (),
) -> pd.DataFrame:
    """Per class (except `ignore`), the lowest threshold whose precision >= target_precision.

    If no threshold reaches it, the one with the best precision (ties: the lowest), reached=False and a note.
    A class without windows gets threshold inf (never detected). Thresholds are observed scores."""
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    scores, y = _check(scores, y, class_names)
    rows = []
    for c, name in enumerate(class_names):
        if name in set(ignore):
            continue
        support = int((y == c).sum())
        if support == 0:
            note = f"no windows of this class among {len(y)}: never detected"
            rows.append((name, np.inf, np.nan, np.nan, 0, False, note))
            continue
        thr, prec, rec = pr_curve(scores[:, c], y == c)
        ok = prec >= target_precision - PRECISION_TOLERANCE
        reached = bool(ok.any())
        if not reached:
            ok = prec >= prec.max() - PRECISION_TOLERANCE
        i = int(np.flatnonzero(ok)[-1])  # thresholds descend: the last qualifying one is the lowest
        note = "" if reached else f"target precision {target_precision:g} not reached; best is {prec[i]:.3f}"
        rows.append((name, float(thr[i]), float(prec[i]), float(rec[i]), support, reached, note))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"threshold": float, "precision": float, "recall": float, "support": int, "reached": bool})


def pr_figure(scores: np.ndarray, y: np.ndarray, class_names: Sequence[str], table: pd.DataFrame) -> Figure:
    """One precision-recall panel per class of `table`, its chosen threshold marked (red: target not reached)."""
    scores, y = _check(scores, y, class_names)
    missing = [label for label in table["label"] if label not in class_names]
    if missing:
        raise DatasetError(f"threshold table names class(es) {missing} not among {list(class_names)}")
    n = max(len(table), 1)
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.8 * ncols, 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for ax, row in zip(axes.flat, table.itertuples(index=False)):
        c = list(class_names).index(row.label)
        if row.support:
            _, prec, rec = pr_curve(scores[:, c], y == c)
            ax.plot(rec, prec, "-", marker=".", ms=3, lw=1)
            colour = "tab:green" if row.reached else "tab:red"
            ax.plot([row.recall], [row.precision], "o", color=colour, ms=6)
            ax.set_title(f"{row.label}: t={row.threshold:.3g}", fontsize=9)
        else:
            ax.set_title(f"{row.label}: no windows", fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(table) :]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    return fig

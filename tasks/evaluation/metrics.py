"""Cross-validation metrics with the same names for every model family."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from tasks.data.windows import pool

_METRIC_UNSAFE = re.compile(r"[^\w.\- /]")  # characters MLflow refuses in metric names


def sem(values) -> float:
    """Standard error of the mean (0 for fewer than two values)."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def by_recording(
    y: np.ndarray, proba: np.ndarray, splits, owner: np.ndarray | None, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list]:
    """Segment results pooled per recording: (labels, probabilities, splits over recordings).

    A recording's segments share its fold (a split never cuts a group), so each test fold maps to whole recordings."""
    if owner is None:
        return y, proba, list(splits)
    codes, keys = pd.factorize(pd.Series(np.asarray(owner)), sort=False)
    _, pooled = pool(np.nan_to_num(proba, nan=0.0), owner, weights)
    first = np.zeros(len(keys), int)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # first segment of each recording
    tested = np.zeros(len(keys), bool)
    rec_splits = []
    for tr, te in splits:
        tested[codes[te]] = True
        rec_splits.append((np.unique(codes[tr]), np.unique(codes[te])))
    pooled[~tested] = np.nan
    return y[first], pooled, rec_splits


def cv_summary(
    y: np.ndarray,
    proba: np.ndarray,
    splits,
    class_names: list[str],
    *,
    owner: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> dict:
    """Per-fold accuracy and macro F1, their mean/SEM, per-class recall and the pooled confusion matrix.

    With `owner` (the recording of each segment) everything is per recording, segment probabilities averaged
    (near-silent windows weighted 0); the per-segment accuracy is kept as `segment_accuracy_mean`."""
    seg_pred = np.argmax(proba, axis=1)
    seg_acc = [float(np.mean(seg_pred[te] == y[te])) for _, te in splits]
    y, proba, splits = by_recording(y, proba, splits, owner, weights)
    pred = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
    fold_acc, fold_f1 = [], []
    tested = np.zeros(len(y), bool)
    for _, te in splits:
        fold_acc.append(float(np.mean(pred[te] == y[te])))
        fold_f1.append(
            float(f1_score(y[te], pred[te], average="macro", labels=range(len(class_names)), zero_division=0))
        )
        tested[te] = True
    labels = list(range(len(class_names)))
    cm = confusion_matrix(y[tested], pred[tested], labels=labels)
    recall = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {
        "fold_accuracy": fold_acc,
        "fold_macro_f1": fold_f1,
        "cv_accuracy_mean": float(np.mean(fold_acc)),
        "cv_accuracy_sem": sem(fold_acc),
        "macro_f1_mean": float(np.mean(fold_f1)),
        "segment_accuracy_mean": float(np.mean(seg_acc)),
        "n_recordings_tested": int(tested.sum()),
        "recall": {c: float(r) for c, r in zip(class_names, recall)},
        "confusion": cm,
        "report": classification_report(
            y[tested], pred[tested], labels=labels, target_names=class_names, zero_division=0
        ),
    }


def scalar_metrics(summary: dict) -> dict[str, float]:
    """The flat metrics every run logs (accuracies as fractions in [0, 1])."""
    out = {k: summary[k] for k in ("cv_accuracy_mean", "cv_accuracy_sem", "macro_f1_mean", "segment_accuracy_mean")}
    out.update({"recall_" + _METRIC_UNSAFE.sub("_", c): r for c, r in summary["recall"].items()})
    return out


def confusion_frame(cm: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Confusion matrix as a table: rows true class, columns predicted."""
    frame = pd.DataFrame(cm, index=class_names, columns=class_names)
    frame.index.name = "true"
    return frame.reset_index()


def confusion_figure(cm: np.ndarray, class_names: list[str], *, title: str = ""):
    """Row-normalized confusion matrix heatmap (like the book's Table 12-2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    f"{100 * norm[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig

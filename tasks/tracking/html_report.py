"""report/index.html: one self-contained page a person opens (figures embedded), logged on the parent run."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import atomic_path, digest
from tasks.models import catalog
from tasks.records import AuditVerdict, Dataset, EnsembleResult, Result, RunSummary

# The book's figures (Kneusel, Practical Deep Learning, ch. 12; its own protocol: an 8-per-class hold-out with
# 19 augmented copies of every clip, test copies scored too), in %, by our configuration names.
_BOOK_RAW = {
    "nearest_centroid": 11.9,
    "knn3": 12.1,
    "knn7": 10.5,
    "gaussian_nb": 28.1,
    "rf5": 22.6,
    "rf50": 30.8,
    "rf500": 32.8,
    "rf1000": 34.4,
    "linear_svm_c0.01": 16.5,
    "linear_svm_c0.1": 17.5,
    "linear_svm_c1": 13.4,
    "linear_svm_c10": 10.2,
    "mlp_sklearn": 19.1,
}
_BOOK_CNN1D = {  # Table 12-1: first kernel -> (shallow, medium, deep0, deep1, deep2)
    3: (41.63, 38.75, 47.06, 10.00, 10.00),
    5: (38.13, 40.44, 46.82, 10.00, 10.00),
    7: (38.19, 38.69, 44.69, 50.50, 50.44),
    9: (40.13, 38.25, 42.94, 49.19, 50.19),
    11: (38.00, 39.44, 43.19, 46.88, 10.00),
    13: (37.00, 37.06, 45.44, 49.38, 49.63),
    15: (35.25, 40.38, 41.13, 10.00, 10.00),
    33: (32.81, 36.81, 43.06, 46.50, 10.00),
}
_BOOK_OTHER = {
    "cnn2d_book_k3/book_image": 75.54,
    "cnn2d_book_k7/book_image": 76.18,
    # the book's ensembles mix six 2D CNNs (weights tuned on the test set itself)
    "ensemble:average": 78.88,
    "ensemble:maximum": 78.81,
    "ensemble:vote": 78.50,
    "ensemble:weighted": 81.06,
}


def book_figure(result: Result) -> float | None:
    """The book's accuracy (%) for one of our results (a model on a representation, or an ensemble), if it has one."""
    if isinstance(result, EnsembleResult):
        return _BOOK_OTHER.get(result.name)
    model, features = result.config.model, result.config.features
    if features == "raw" and model in _BOOK_RAW:
        return _BOOK_RAW[model]
    meta = catalog.info(model)
    if features == "raw" and meta.family == "cnn1d":
        arch, kernel = meta.defaults["arch"].removeprefix("cnn1d_"), meta.defaults["hyper"]["kernel"]
        archs = ("shallow", "medium", "deep0", "deep1", "deep2")
        return _BOOK_CNN1D[kernel][archs.index(arch)] if arch in archs and kernel in _BOOK_CNN1D else None
    return _BOOK_OTHER.get(f"{model}/{features}")


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards when it belongs to pyplot)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _curves_png(name: str, history: Path) -> bytes:
    """A configuration's learning curves as PNG, rendered once per history (kept beside it: a warm run's report
    only reads it)."""
    text = history.read_text()
    path = history.parent / f"curves-{digest(name, text)}.png"
    if not path.exists():
        png = figure_png(learning_curves_figure(name, json.loads(text)))
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
    return path.read_bytes()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(frame: pd.DataFrame, *, index: bool = False) -> str:
    return frame.to_html(index=index, border=0, classes="t", na_rep="", escape=True)


def learning_curves_figure(name: str, histories: list[dict]):
    """Training (and validation) loss and accuracy per epoch, one line per fold."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for k, hist in enumerate(histories):
            for prefix, style in (("", "-"), ("val_", ":")):
                values = hist.get(prefix + key) or []
                if len(values):
                    ax.plot(
                        np.arange(1, len(values) + 1),
                        values,
                        style,
                        color=f"C{k}",
                        label=f"fold {k + 1}{' validation' if prefix else ''}",
                    )
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(name, fontsize=10)
    return fig


def results_table(results: Sequence[Result], *, book: bool = False) -> pd.DataFrame:
    """Configuration, family, features, accuracy mean +- SEM (%), macro F1 (and the book's figure), best first."""
    rows = [
        {
            "configuration": r.name,
            "family": r.family,
            "features": f"{r.features}{' + augmented copies' if r.augmented else ''}",
            "accuracy (%)": f"{100 * r.cv_accuracy_mean:.1f} ± {100 * r.cv_accuracy_sem:.1f}",
            "macro F1": f"{r.macro_f1_mean:.3f}",
            "book (%)": book_figure(r),
            "_sort": r.cv_accuracy_mean,
        }
        for r in results
    ]
    frame = pd.DataFrame(rows).sort_values("_sort", ascending=False, kind="stable").drop(columns="_sort")
    if book:
        frame["book (%)"] = frame["book (%)"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.1f}")
    else:
        frame = frame.drop(columns="book (%)")
    return frame.reset_index(drop=True)


def dataset_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Recordings per class (rows) and fold (columns, if the dataset has folds), with totals."""
    recs = manifest.drop_duplicates("recording_id")
    if recs["fold"].isna().any():
        return recs.groupby("label").size().rename("recordings").to_frame()
    return pd.crosstab(recs["label"], recs["fold"], margins=True, margins_name="total")


def build_html(
    *,
    title: str,
    description: str,
    results: Sequence[Result],
    comparison_png: bytes,
    confusions: list[tuple[str, bytes]],
    recall: pd.DataFrame,
    curves: list[tuple[str, bytes]],
    dataset: pd.DataFrame,
    dataset_facts: dict[str, str],
    rejected: pd.DataFrame,
    audit: dict | None = None,
    book: bool = False,
) -> str:
    """The page: description, results (book: with the book's ESC-10 figures), plot, confusions, recall, curves, data."""
    esc = html.escape
    facts = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in dataset_facts.items())
    book_note = (
        " <i>book</i>: the figure of Kneusel's case study for the same model and input, measured on its own protocol "
        "(a random hold-out, test clips augmented too; its ensembles mix six 2D CNNs with weights tuned on the "
        "test set), so read it as a landmark, not a like-for-like comparison."
        if book
        else ""
    )
    parts = [
        f"<h1>{esc(title)}</h1><p class='desc'>{esc(description)}</p>",
        f"<section id='results'><h2>Results</h2><p>k-fold accuracy, mean ± standard error over folds.{book_note}</p>"
        f"{_table(results_table(results, book=book))}</section>",
        f"<section id='comparison'><h2>Comparison</h2>{_img(comparison_png, 'accuracy per configuration')}</section>",
        "<section id='confusion'><h2>Confusion matrices (row-normalized)</h2>"
        + "".join(f"<figure>{_img(png, name)}<figcaption>{esc(name)}</figcaption></figure>" for name, png in confusions)
        + "</section>",
        f"<section id='recall'><h2>Per-class recall (%)</h2>{_table(recall, index=True)}</section>",
        "<section id='curves'><h2>Learning curves of the deep models</h2>"
        + (
            "".join(_img(png, f"learning curves {name}") for name, png in curves)
            or "<p>No deep model in this run (or their results were reused from a run that kept no curves).</p>"
        )
        + "</section>",
        f"<section id='dataset'><h2>Dataset</h2><ul>{facts}</ul>{_table(dataset, index=True)}</section>",
        f"<section id='rejected'><h2>Rejected files ({len(rejected)})</h2>"
        + (_table(rejected) if len(rejected) else "<p>None: every file decoded and passed the checks.</p>")
        + "</section>",
    ]
    if audit:
        parts.append(
            f"<section id='audit'><h2>Leakage audit</h2><p><b>{esc(audit.get('verdict', ''))}</b></p>"
            f"<pre style='white-space:pre-wrap;font-size:12px'>{esc(audit.get('text', ''))}</pre></section>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;"
        "border-bottom:1px solid #ddd;text-align:right}table.t td:first-child{text-align:left}"
        "img{max-width:100%}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}figure img{max-width:500px}.desc{line-height:1.5}"
        "h2{margin-top:1.6em;border-bottom:2px solid #eee}"
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _audit_text(audit: AuditVerdict | None) -> dict | None:
    """The audit's verdict and its summary (markdown as text), if the run had one."""
    if audit is None:
        return None
    path = Path(audit.summary)
    return {"verdict": audit.verdict, "text": path.read_text() if path.is_file() else ""}


def write_html_report(
    data: Dataset, splits_path: str, summary: RunSummary, reports_dir: str, *, description: str = ""
) -> str:
    """Write report/index.html for this run under reports_dir/<run id>/ and log it on the parent run."""
    from tasks.data.manifest import class_names, pooling, read_manifest, read_rejected
    from tasks.data.split import load_splits
    from tasks.evaluation.metrics import confusion_figure, cv_summary
    from tasks.tracking import runs as tracking
    from tasks.tracking.report import comparison_figure, results_frame

    results, parent_id = summary.results, summary.parent_run_id
    manifest = read_manifest(data.manifest)
    names, y = class_names(manifest), manifest["class_id"].to_numpy()
    owner, weights = pooling(manifest)
    splits = load_splits(splits_path)
    ranked = sorted(results, key=lambda r: -r.cv_accuracy_mean)
    picks = [
        r
        for r in (
            next((r for r in ranked if r.family != "ensemble"), None),
            next((r for r in ranked if r.family == "ensemble"), None),
        )
        if r is not None
    ]
    confusions, recall = [], {}
    for r in picks:
        s = cv_summary(y, np.load(r.proba), splits, names, owner=owner, weights=weights)
        label = f"{'best ensemble' if r.family == 'ensemble' else 'best model'}: {r.name}"
        confusions.append((label, figure_png(confusion_figure(s["confusion"], names, title=r.name))))
        recall[r.name] = {c: round(100 * v, 1) for c, v in s["recall"].items()}
    curves = []
    for r in ranked:
        if r.history and Path(r.history).exists():
            curves.append((r.name, _curves_png(r.name, Path(r.history))))
    rejected = read_rejected(data.rejected) if Path(data.rejected).exists() else pd.DataFrame()
    if len(rejected):
        rejected = rejected[[c for c in ("path", "reason") if c in rejected.columns] or list(rejected.columns)]
    facts = {
        "dataset": summary.dataset,
        "source": summary.source,
        "recordings": manifest["recording_id"].nunique(),
        "segments": len(manifest),
        "classes": len(names),
        "protocol": summary.protocol,
        "MLflow parent run": parent_id,
    }
    page = build_html(
        title=f"soundflow case study — {summary.dataset}, preset {summary.preset}",
        description=description,
        results=results,
        comparison_png=figure_png(comparison_figure(results_frame(results), chance_pct=100 / len(names))),
        confusions=confusions,
        recall=pd.DataFrame(recall),
        curves=curves,
        dataset=dataset_summary(manifest),
        dataset_facts=facts,
        rejected=rejected,
        audit=_audit_text(summary.audit),
        book=summary.dataset == "esc10",  # the book's figures are ESC-10's
    )
    out = Path(reports_dir) / parent_id / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    tracking.log_file(parent_id, out, "report")
    return str(out)


@task(cache_policy=NO_CACHE)
def html_report_task(
    data: Dataset, splits_path: str, summary: RunSummary, reports_dir: str, *, description: str = ""
) -> str:
    """The run's HTML report (see write_html_report)."""
    return write_html_report(data, splits_path, summary, reports_dir, description=description)

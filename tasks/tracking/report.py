"""The results table (the book's Table 12-3, from this run), its plot, and where to find them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.cache import cached_folder, digest, save_text
from tasks.models import catalog
from tasks.records import ConfigResult, Dataset, Result
from tasks.tracking import runs as tracking


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    """One row per configuration, best first, accuracies in percent."""
    rows = [
        {
            "configuration": r.name,
            "model": r.config.model if isinstance(r, ConfigResult) else "",
            "family": r.family,
            "features": r.features,
            "augmented": r.augmented,
            "accuracy_pct": 100 * r.cv_accuracy_mean,
            "sem_pct": 100 * r.cv_accuracy_sem,
            "macro_f1": r.macro_f1_mean,
            "fit_s": r.fit_seconds,
            "run_id": r.run_id,
        }
        for r in results
    ]
    frame = pd.DataFrame(rows)
    return frame.sort_values("accuracy_pct", ascending=False, kind="stable").reset_index(drop=True)


def markdown_table(frame: pd.DataFrame) -> str:
    """Model, data, accuracy mean +- SEM, as markdown."""
    lines = ["| configuration | family | features | accuracy (%) | macro F1 |", "|---|---|---|---|---|"]
    for r in frame.itertuples():
        feat = f"{r.features}{' + augmented' if r.augmented else ''}"
        lines.append(
            f"| {r.configuration} | {r.family} | {feat} | {r.accuracy_pct:.1f} ± {r.sem_pct:.1f} | {r.macro_f1:.3f} |"
        )
    return "\n".join(lines)


def comparison_figure(
    frame: pd.DataFrame, *, title: str = "k-fold accuracy (mean ± SEM)", chance_pct: float | None = None
):
    """Horizontal bars with error bars, one per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = frame.iloc[::-1]
    colors = {"classical": "#8da0cb", "mlp": "#66c2a5", "cnn1d": "#fc8d62", "cnn2d": "#e78ac3", "ensemble": "#a6d854"}
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(f) + 1)))
    ax.barh(
        range(len(f)),
        f["accuracy_pct"],
        xerr=f["sem_pct"],
        color=[colors.get(x, "#b3b3b3") for x in f["family"]],
        error_kw={"elinewidth": 0.8, "capsize": 2},
    )
    ax.set_yticks(range(len(f)), f["configuration"], fontsize=7)
    if chance_pct:
        ax.axvline(chance_pct, color="grey", lw=0.6, ls=":", label="chance")
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def cnn1d_grid(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The book's Table 12-1 layout: first kernel (rows) x 1D architecture (columns), accuracy in %."""
    rows = frame[(frame["family"] == "cnn1d") & (frame["features"] == "raw")]
    if rows.empty:
        return None
    defaults = [catalog.info(m).defaults for m in rows["model"]]
    arch = [d["arch"].removeprefix("cnn1d_") for d in defaults]
    rows = rows.assign(arch=[a + ("+aug" if aug else "") for a, aug in zip(arch, rows["augmented"])])
    rows = rows.assign(k=[d["hyper"]["kernel"] for d in defaults])
    grid = rows.pivot_table(index="k", columns="arch", values="accuracy_pct", aggfunc="mean").round(2)
    order = [c for a in ("shallow", "medium", "deep0", "deep1", "deep2") for c in (a, a + "+aug") if c in grid.columns]
    return grid[order].reset_index()


@task(cache_policy=NO_CACHE)
def spectrogram_examples_task(clips_path: str, manifest_path: str, sr: int, parent_id: str, per_class: int = 3) -> None:
    """The book's Figure 12-5: spectrogram images of a few clips per class, logged on the parent run (rendered
    once per clips file and rows, beside the clips)."""
    from tasks.data.manifest import class_names, read_manifest
    from tasks.features.representations import compute, example_grid

    manifest = read_manifest(manifest_path)
    rows = manifest.groupby("class_id", sort=True).head(per_class).index.to_numpy()
    names = class_names(manifest)

    def render(folder: Path) -> None:
        images = compute("book_image", np.asarray(np.load(clips_path, mmap_mode="r")[rows]), sr, n_jobs=1)
        fig = example_grid(images, manifest["class_id"].to_numpy()[rows], names, per_class=per_class)
        tracking.save_figure(fig, folder / "spectrogram_examples.png")

    key = digest(Path(clips_path).name, rows.tolist(), names, sr, per_class)
    folder = cached_folder(Path(clips_path).parent / f"examples-{key}", render)
    tracking.log_folder(parent_id, folder, "report")


@task(cache_policy=NO_CACHE)
def dataset_summary_task(data: Dataset, parent_id: str) -> int:
    """The dataset summary (soundflow inspect) as a Prefect markdown artifact and an MLflow artifact; its class count."""
    from tasks.data.ingest import dataset_info
    from tasks.data.inspect import summarize, summary_markdown
    from tasks.data.manifest import read_manifest, read_rejected

    summary = summarize(read_manifest(data.manifest), read_rejected(data.rejected), dataset_info(data))
    md = summary_markdown(summary)
    tracking.log_text(parent_id, md, "dataset/summary.md")
    tracking.log_file(parent_id, data.rejected, "dataset")
    create_markdown_artifact(markdown=md, key="dataset-summary", description=f"dataset {data.name}")
    return summary["n_classes"]


@task(cache_policy=NO_CACHE)
def report_task(results: Sequence[Result], parent_id: str, reports_dir: str, n_classes: int | None = None) -> str:
    """Publish the table as a Prefect artifact and MLflow artifacts (markdown, CSV, plot; chance = 1/n_classes)."""
    frame = results_frame(results)
    md = markdown_table(frame)
    url = tracking.run_url(parent_id)
    tracking.log_text(parent_id, md, "report/results.md")
    tracking.log_frame(parent_id, frame, "report/results.csv")
    tracking.log_figure(
        parent_id, comparison_figure(frame, chance_pct=100 / n_classes if n_classes else None), "report/comparison.png"
    )
    if len(frame):
        best = frame.iloc[0]
        tracking.log_metrics(parent_id, {"best_cv_accuracy_mean": best["accuracy_pct"] / 100})
        tracking.client().set_tag(parent_id, "soundflow.best", best["configuration"])
    table = frame.drop(columns=["run_id"]).round(3).to_dict(orient="records")
    create_table_artifact(
        table=table,
        key="case-study-results",
        description=f"Case-study results (k-fold accuracy, mean ± SEM). MLflow parent run: {url}",
    )
    create_markdown_artifact(
        markdown=f"# Case study\n\n{md}\n\nMLflow parent run: [{parent_id}]({url})", key="case-study-report"
    )
    grid = cnn1d_grid(frame)
    if grid is not None:
        tracking.log_frame(parent_id, grid, "report/table_12_1_cnn1d.csv")
        create_table_artifact(
            table=grid.to_dict(orient="records"),
            key="cnn1d-kernel-grid",
            description="1D CNNs: accuracy (%) by first kernel (rows) and architecture (the book's Table 12-1 layout)",
        )
    path = save_text(f"{reports_dir}/results.md", md + "\n")
    return str(path)

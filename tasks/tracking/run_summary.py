"""The few lines a person reads when a case-study run ends: best results, the champion, time, next commands."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import SoundflowError
from tasks.evaluation.progress import duration_text
from tasks.records import Dataset, Registration, Result, RunSummary
from tasks.tracking import runs as tracking
from tasks.tracking.html_report import write_html_report


def _rows(results: Sequence[Result], n: int) -> list[str]:
    best = sorted(results, key=lambda r: -r.cv_accuracy_mean)[:n]
    width = max([len(r.name) for r in best] + [20])
    return [f"  {r.name:<{width}}  {100 * r.cv_accuracy_mean:5.1f} +- {100 * r.cv_accuracy_sem:.1f}" for r in best]


def champion_line(champion: Registration | None) -> str:
    """Which model is the champion now, and why the alias did or did not move."""
    if not champion:
        return "Champion: not registered by this run (--register-champion refits the best model and registers it)."
    moved = "moved to this version" if champion.alias_moved else "not moved"
    return (
        f"Champion: {champion.name} v{champion.version} ({champion.configuration}); "
        f"alias @champion {moved}: {champion.reason}."
    )


AUDIO_SUFFIXES = (".wav", ".ogg", ".flac", ".mp3")


def script(name: str, *, cwd: Path | None = None) -> str:
    """How to call one of this environment's commands so that it runs as printed without an activated venv:
    the running interpreter's own script (relative to the working directory when it lies below it)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    cwd = cwd or Path.cwd()
    try:
        return shlex.quote(str(path.relative_to(cwd)))
    except ValueError:
        return shlex.quote(str(path))


def example_audio(source: str | None) -> str | None:
    """One audio file of the run's source folder (the first in sorted order), to show a runnable predict command."""
    root = Path(source) if source else None
    if root is None or not root.is_dir():
        return None
    return next((str(p) for p in sorted(root.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES), None)


def next_commands(summary: RunSummary) -> list[str]:
    """Open the MLflow UI on this parent run; predict with the champion. Each runs as printed from here."""
    uri, url = summary.tracking_uri, summary.run_url
    if uri.startswith("http"):
        ui = f"open {url}"
    else:
        ui = f"{script('mlflow')} ui --backend-store-uri {shlex.quote(uri)} --port 5000   # then open {url}"
    champion = summary.champion
    name = champion.name if champion else summary.registered_model
    clip = example_audio(summary.source)
    predict = f"{script('soundflow')} predict --model {shlex.quote(name)} {shlex.quote(clip or 'path/to/clip.wav')}"
    if not champion:
        predict += "   # once a run registered a champion"
    return [ui, predict]


def summary_text(summary: RunSummary, *, n_models: int = 5, n_ensembles: int = 3) -> str:
    """A short human table: best configurations and ensembles (mean +- SEM, %), champion, time, next commands."""
    singles = [r for r in summary.results if r.family != "ensemble"]
    ensembles = [r for r in summary.results if r.family == "ensemble"]
    lines = [
        f"Case study finished in {duration_text(summary.seconds)}: {summary.dataset}, "
        f"{summary.n_clips} clips, {summary.protocol}; {len(singles)} configurations, "
        f"{len(ensembles)} ensembles (accuracy %, mean +- SEM over folds).",
        "",
        f"Best configurations (of {len(singles)}):",
        *_rows(singles, n_models),
    ]
    if ensembles:
        lines += ["", f"Best ensembles (of {len(ensembles)}):", *_rows(ensembles, n_ensembles)]
    lines += ["", champion_line(summary.champion)]
    if summary.report:
        lines.append(f"Report: {summary.report}")
    lines += ["", "Next:", *(f"  {c}" for c in next_commands(summary))]
    return "\n".join(lines)


def run_description(summary: RunSummary) -> str:
    """One paragraph for the parent run's description: dataset, protocol, best result, champion."""
    singles = [r for r in summary.results if r.family != "ensemble"]
    ensembles = [r for r in summary.results if r.family == "ensemble"]
    best = summary.best
    best_single = max(singles, key=lambda r: r.cv_accuracy_mean) if singles else None

    def pct(r: Result) -> str:
        return f"{100 * r.cv_accuracy_mean:.1f} +- {100 * r.cv_accuracy_sem:.1f}%"

    text = (
        f"Case study on {summary.dataset} ({summary.n_clips} clips"
        f"{', from ' + summary.source if summary.source else ''}), preset {summary.preset}: "
        f"{summary.protocol} of {len(singles)} model configurations and {len(ensembles)} ensembles, "
        f"in {duration_text(summary.seconds)}. Best: {best.name} at {pct(best)} (mean +- SEM over folds)"
    )
    if best_single is not None and best_single is not best:
        text += f"; best single model {best_single.name} at {pct(best_single)}"
    champion = summary.champion
    if champion:
        moved = "moved to it" if champion.alias_moved else "not moved"
        text += (
            f". Champion: {champion.name} v{champion.version} ({champion.configuration}), "
            f"alias {moved}: {champion.reason}."
        )
    else:
        text += ". No champion registered by this run."
    return text


def summary_json(summary: RunSummary) -> dict:
    """The summary as JSON-able values (`soundflow run --json`): the figures, the champion, where things are."""
    best = summary.best
    return {
        "parent_run_id": summary.parent_run_id,
        "experiment_id": summary.experiment_id,
        "dataset": summary.dataset,
        "source": summary.source,
        "preset": summary.preset,
        "n_clips": summary.n_clips,
        "n_recordings": summary.n_recordings,
        "protocol": summary.protocol,
        "best": best.name,
        "best_accuracy": best.cv_accuracy_mean,
        "results": summary.accuracies(),
        "results_table": [
            {
                "name": r.name,
                "family": r.family,
                "cv_accuracy_mean": r.cv_accuracy_mean,
                "cv_accuracy_sem": r.cv_accuracy_sem,
            }
            for r in summary.results
        ],
        "champion": asdict(summary.champion) if summary.champion else None,
        "registered_model": summary.registered_model,
        "failed": list(summary.failed),
        "audit": asdict(summary.audit) if summary.audit else None,
        "seconds": summary.seconds,
        "tracking_uri": summary.tracking_uri,
        "run_url": summary.run_url,
        "report": summary.report,
    }


@task(cache_policy=NO_CACHE)
def finish_task(summary: RunSummary, data: Dataset, splits: str, reports_dir: str, *, started: float) -> RunSummary:
    """The run's wall time (since time.monotonic() was `started`), the parent run's description and the HTML
    report; then the run FINISHED, or SoundflowError naming the configurations that failed (the flow's failure
    hook marks the runs FAILED)."""
    summary = replace(summary, seconds=time.monotonic() - started)
    description = run_description(summary)
    tracking.set_description(summary.parent_run_id, description)
    summary = replace(summary, report=write_html_report(data, splits, summary, reports_dir, description=description))
    if summary.failed:
        raise SoundflowError(
            f"{len(summary.failed)} configuration(s) failed (their MLflow runs are FAILED, the others "
            f"finished): {'; '.join(summary.failed)}"
        )
    tracking.end_run(summary.parent_run_id, "FINISHED")
    return summary

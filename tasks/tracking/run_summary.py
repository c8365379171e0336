"""The few lines a person reads when a case-study run ends: best results, the champion, time, next commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from tasks.evaluation.progress import duration_text


def _rows(results: list[dict], n: int) -> list[str]:
    best = sorted(results, key=lambda r: -r["cv_accuracy_mean"])[:n]
    width = max([len(r["name"]) for r in best] + [20])
    return [
        f"  {r['name']:<{width}}  {100 * r['cv_accuracy_mean']:5.1f} +- {100 * r['cv_accuracy_sem']:.1f}" for r in best
    ]


def champion_line(champion: dict | None) -> str:
    """Which model is the champion now, and why the alias did or did not move."""
    if not champion:
        return "Champion: not registered by this run (--register-champion refits the best model and registers it)."
    moved = "moved to this version" if champion.get("alias_moved") else "not moved"
    return (
        f"Champion: {champion['name']} v{champion['version']} ({champion.get('configuration') or ''}); "
        f"alias @champion {moved}: {champion.get('reason', '')}."
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


def next_commands(summary: dict) -> list[str]:
    """Open the MLflow UI on this parent run; predict with the champion. Each runs as printed from here."""
    uri, url = summary["tracking_uri"], summary["run_url"]
    if uri.startswith("http"):
        ui = f"open {url}"
    else:
        ui = f"{script('mlflow')} ui --backend-store-uri {shlex.quote(uri)} --port 5000   # then open {url}"
    champion = summary.get("champion")
    name = champion["name"] if champion else summary.get("registered_model", "soundflow-esc10")
    clip = example_audio(summary.get("source"))
    predict = f"{script('soundflow')} predict --model {shlex.quote(name)} {shlex.quote(clip or 'path/to/clip.wav')}"
    if not champion:
        predict += "   # once a run registered a champion"
    return [ui, predict]


def summary_text(summary: dict, *, n_models: int = 5, n_ensembles: int = 3) -> str:
    """A short human table: best configurations and ensembles (mean +- SEM, %), champion, time, next commands."""
    results = summary["results_table"]
    singles = [r for r in results if r["family"] != "ensemble"]
    ensembles = [r for r in results if r["family"] == "ensemble"]
    lines = [
        f"Case study finished in {duration_text(summary['seconds'])}: {summary['dataset']}, "
        f"{summary['n_clips']} clips, {summary['protocol']}; {len(singles)} configurations, "
        f"{len(ensembles)} ensembles (accuracy %, mean +- SEM over folds).",
        "",
        f"Best configurations (of {len(singles)}):",
        *_rows(singles, n_models),
    ]
    if ensembles:
        lines += ["", f"Best ensembles (of {len(ensembles)}):", *_rows(ensembles, n_ensembles)]
    lines += ["", champion_line(summary.get("champion"))]
    if summary.get("report"):
        lines.append(f"Report: {summary['report']}")
    lines += ["", "Next:", *(f"  {c}" for c in next_commands(summary))]
    return "\n".join(lines)


def run_description(summary: dict) -> str:
    """One paragraph for the parent run's description: dataset, protocol, best result, champion."""
    results = summary["results_table"]
    singles = [r for r in results if r["family"] != "ensemble"]
    ensembles = [r for r in results if r["family"] == "ensemble"]
    best = max(results, key=lambda r: r["cv_accuracy_mean"])
    best_single = max(singles, key=lambda r: r["cv_accuracy_mean"]) if singles else None

    def pct(r: dict) -> str:
        return f"{100 * r['cv_accuracy_mean']:.1f} +- {100 * r['cv_accuracy_sem']:.1f}%"

    text = (
        f"Case study on {summary['dataset']} ({summary['n_clips']} clips"
        f"{', from ' + summary['source'] if summary.get('source') else ''}), preset {summary.get('preset', '?')}: "
        f"{summary['protocol']} of {len(singles)} model configurations and {len(ensembles)} ensembles, "
        f"in {duration_text(summary['seconds'])}. Best: {best['name']} at {pct(best)} (mean +- SEM over folds)"
    )
    if best_single is not None and best_single is not best:
        text += f"; best single model {best_single['name']} at {pct(best_single)}"
    champion = summary.get("champion")
    if champion:
        moved = "moved to it" if champion.get("alias_moved") else "not moved"
        text += (
            f". Champion: {champion['name']} v{champion['version']} ({champion.get('configuration', '')}), "
            f"alias {moved}: {champion.get('reason', '')}."
        )
    else:
        text += ". No champion registered by this run."
    return text

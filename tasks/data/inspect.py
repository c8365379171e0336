"""What the pipeline will use of a dataset, without training: classes, folds, groups, durations, rejections."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.data.manifest import class_names, has_folds

_DURATION_BINS_S = [0, 1, 2, 5, 10, 30, 60, 300, np.inf]


def summarize(manifest: pd.DataFrame, rejected: pd.DataFrame, info: dict) -> dict:
    """Plain numbers and small tables describing a manifest (one row per segment). Recordings are audio files: the
    regions of one file (CSV regions, the windows of an annotated recording) count once."""
    recs = manifest.drop_duplicates("recording_id")
    files = manifest.drop_duplicates("path")
    names = class_names(manifest)
    per_class = pd.DataFrame(
        {
            "class": names,
            "recordings": manifest.groupby("class_id")["path"]
            .nunique()
            .reindex(range(len(names)), fill_value=0)
            .to_numpy(),
            "segments": manifest.groupby("class_id").size().reindex(range(len(names)), fill_value=0).to_numpy(),
        }
    )
    folds = None
    if has_folds(manifest):
        folds = pd.crosstab(recs["label"], recs["fold"]).reindex(names)
    group_sizes = files.groupby("group").size()
    durations = pd.cut(files["recording_duration_s"], _DURATION_BINS_S, right=False).value_counts(sort=False)
    windows = manifest.groupby("path").size()
    return {
        "layout": info.get("layout", "?"),
        "name": info.get("name", "?"),
        "base": info.get("base", "?"),
        "n_classes": len(names),
        "n_recordings": len(files),
        "n_segments": len(manifest),
        "per_class": per_class,
        "folds": folds,
        "n_groups": int(group_sizes.size),
        "largest_group": (str(group_sizes.idxmax()), int(group_sizes.max())),
        "durations": {str(k): int(v) for k, v in durations.items() if v},
        "sample_rates": {int(k): int(v) for k, v in files["sample_rate"].value_counts().sort_index().items()},
        "channels": {int(k): int(v) for k, v in files["channels"].value_counts().sort_index().items()},
        "windows_per_recording": {
            "min": int(windows.min()),
            "median": float(windows.median()),
            "max": int(windows.max()),
        },
        "window_s": info.get("window_s"),
        "hop_s": info.get("hop_s"),
        "rejected": rejected,
        "notes": list(info.get("notes", [])),
        "annotations": info.get("annotations"),
        "split": "the dataset's own folds" if folds is not None else "StratifiedGroupKFold over groups",
    }


def summary_markdown(s: dict) -> str:
    """The summary as markdown (terminal, Prefect artifact, MLflow artifact)."""
    out = [
        f"# Dataset `{s['name']}` ({s['layout']} layout)",
        "",
        f"Source: `{s['base']}`",
        "",
        f"{s['n_classes']} classes, {s['n_recordings']} recordings, {s['n_segments']} segments of "
        f"{s['window_s']:g} s (hop {s['hop_s']:g} s); windows per recording: min "
        f"{s['windows_per_recording']['min']}, median {s['windows_per_recording']['median']:g}, max "
        f"{s['windows_per_recording']['max']}.",
        "",
        f"Split: {s['split']}. Groups: {s['n_groups']} (largest: `{s['largest_group'][0]}` with "
        f"{s['largest_group'][1]} recordings).",
        "",
    ]
    out += [f"> **Note:** {n}" for n in s["notes"]] + ([""] if s["notes"] else [])
    out += ["## Classes", "", "| class | recordings | segments |", "|---|---|---|"]
    out += [f"| {r['class']} | {r['recordings']} | {r['segments']} |" for r in s["per_class"].to_dict("records")]
    if s.get("annotations"):
        out += ["", *_annotations_markdown(s["annotations"])]
    if s["folds"] is not None:
        folds = s["folds"]
        out += [
            "",
            "## Recordings per fold and class",
            "",
            "| class | " + " | ".join(f"fold {f}" for f in folds.columns) + " |",
            "|---|" + "---|" * len(folds.columns),
        ]
        out += [f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |" for label, row in folds.iterrows()]
    out += ["", "## Recordings", "", "| duration | recordings |", "|---|---|"]
    out += [f"| {k} s | {v} |" for k, v in s["durations"].items()]
    out += ["", "| sample rate (Hz) | recordings |", "|---|---|"] + [
        f"| {k} | {v} |" for k, v in s["sample_rates"].items()
    ]
    out += ["", "| channels | recordings |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["channels"].items()]
    rej = s["rejected"]
    out += ["", f"## Rejected files ({len(rej)})", ""]
    if len(rej):
        out += ["| file | class | reason |", "|---|---|---|"]
        out += [f"| {r['path']} | {r['label']} | {r['reason']} |" for r in rej.to_dict("records")]
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


def _annotations_markdown(counts: dict) -> list[str]:
    """Events and windows per class of annotated recordings, background kept, windows dropped and why."""
    bg, dropped = counts["background"], counts["dropped"]
    out = [
        f"## Annotations ({counts['recordings']} recordings)",
        "",
        "| class | events | unreviewed rows | windows | dropped: under threshold | several classes | unreviewed |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {c} | {v['events']} | {v['unreviewed_rows']} | {v['windows']} | {v['under threshold']} | "
        f"{v['several classes']} | {v['unreviewed']} |"
        for c, v in counts["per_class"].items()
    ]
    out += [
        "",
        f"Background windows: {bg['kept']} of {bg['total']} kept (--background-ratio {bg['ratio']:g}), plus "
        f"{bg['negative']} from {counts['negative_rows']} rejected detections (always kept). Dropped windows: "
        f"{sum(dropped.values())} ("
        + ", ".join(f"{r} {dropped[r]}" for r in ("under threshold", "several classes", "unreviewed") if r in dropped)
        + ").",
    ]
    return out

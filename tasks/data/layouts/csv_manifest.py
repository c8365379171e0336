"""A CSV manifest: columns path,label and optional fold, group, start_s, end_s (paths relative to the CSV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.layouts.base import Listing, listing, read_table
from tasks.data.layouts.folders import NO_GROUPS
from tasks.errors import DatasetError

OPTIONAL = ("fold", "group", "start_s", "end_s")


def matches(base: Path) -> bool:
    return base.is_file() and base.suffix.lower() == ".csv"


def scan(csv: Path) -> Listing:
    """Rows checked one by one; errors name the CSV row (1 = first data row) and the file."""
    meta = read_table(csv, {"path", "label"})
    unknown = sorted(set(meta.columns) - {"path", "label", *OPTIONAL})
    if unknown:
        hint = (
            "; onset/offset columns make it an events table: use --dataset annotations (or auto)"
            if {"onset", "offset"} & set(unknown)
            else ""
        )
        raise DatasetError(f"{csv}: unknown columns {unknown}; allowed: path, label, {', '.join(OPTIONAL)}{hint}")
    rows = []
    for i, rec in enumerate(meta.to_dict("records"), start=1):
        where = f"{csv} row {i}"
        label = rec["label"].strip()
        if not rec["path"].strip():
            raise DatasetError(f"{where}: empty path")
        if not label:
            raise DatasetError(f"{where} ({rec['path']}): empty label")
        path = Path(rec["path"]).expanduser()
        path = path if path.is_absolute() else csv.parent / path
        if not path.is_file():
            raise DatasetError(f"{where}: file not found: {path}")
        start, end = _number(rec.get("start_s"), where, "start_s"), _number(rec.get("end_s"), where, "end_s")
        if not np.isnan(end) and end <= (0 if np.isnan(start) else start):
            raise DatasetError(f"{where} ({path}): end_s {end} must be after start_s")
        fold = _number(rec.get("fold"), where, "fold")
        rows.append(
            {
                "path": str(path.absolute()),
                "label": label,
                "fold": None if np.isnan(fold) else int(fold),
                "group": (rec.get("group") or "").strip() or f"{label}/{path.name}",
                "start_s": start,
                "end_s": end,
            }
        )
    folds = pd.Series([r["fold"] for r in rows])
    if folds.notna().any() and folds.isna().any():
        raise DatasetError(f"{csv} row {int(folds.isna().idxmax()) + 1}: empty fold while other rows have one")
    notes = (
        []
        if "group" in meta.columns
        else [
            NO_GROUPS.replace(
                "pass --group-pattern REGEX (its first capture group, matched against the file name)",
                "add a 'group' column",
            )
        ]
    )
    return listing(csv, "csv", csv.stem, sorted({r["label"] for r in rows}), rows, notes)


def _number(value, where: str, column: str) -> float:
    if value is None or str(value).strip() == "":
        return float("nan")
    try:
        return float(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: {column} {value!r} is not a number") from exc

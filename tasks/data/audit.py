"""Leakage audit: duplicates across folds, group hints from file names, and what a leaky split costs."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tasks.data.duplicates import (
    DEFAULT_THRESHOLD,
    PAIR_COLUMNS,
    check_manifest,
    exact_duplicates,
    fingerprints,
    near_duplicates,
    near_rule,
    per_recording,
    sound_spans,
)
from tasks.errors import DatasetError

_SEP = "_. -"
_SPLIT = re.compile(f"[{_SEP}]+")
_TOKEN, _GAP = f"[^{_SEP}]+", f"[{_SEP}]+"
# A gap is reported as a leak only above this many points and twice its paired standard error.
MIN_GAP_POINTS = 2.0
CANDIDATE_COLUMNS = [
    "source",
    "position",
    "pattern",
    "n_groups",
    "shared_fraction",
    "examples",
    "per_file_accuracy",
    "accuracy",
    "gap_points",
    "noise_points",
    "significant",
]


@dataclass
class AuditResult:
    """What the audit found; `leak` is True when the split as configured would likely inflate the score."""

    duplicates: pd.DataFrame
    candidates: pd.DataFrame
    split: str  # "per-file" (no folds or groups given), "given groups" or "given folds"
    per_file_accuracy: float
    grouped_accuracy: float
    proposed_pattern: str
    gap_points: float
    noise_points: float
    leak: bool
    verdict: str
    n_segments: int = 0
    n_recordings: int = 0
    n_cv_segments: int = 0
    hints: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    near_rule: str = ""  # what a near-duplicate pair is and how that rule was checked

    def tags(self) -> dict[str, str]:
        """MLflow tags for the parent run."""
        return {
            "soundflow.audit.verdict": self.verdict[:5000],
            "soundflow.audit.group_pattern": self.proposed_pattern,
            "soundflow.audit.gap_points": "" if math.isnan(self.gap_points) else f"{self.gap_points:.1f}",
        }


def group_hints(manifest: pd.DataFrame, *, min_coverage: float = 0.9, min_shared: float = 0.5) -> list[dict]:
    """File-name token positions that look like a speaker, device or source id, each with a --group-pattern.

    A position qualifies when at least min_coverage of the files have a token there, tokens repeat (at most
    half as many distinct tokens as files, at least two) and at least min_shared of the files carry a token
    that also occurs in another class. The pattern's first group, matched against the file name, is the token.
    """
    m = check_manifest(manifest).drop_duplicates("recording_id")
    names = [PurePath(p).name for p in m["path"]]
    tokens = [[t for t in _SPLIT.split(PurePath(n).stem) if t] for n in names]
    labels = m["label"].to_numpy()
    out = []
    for pos in range(max((len(t) for t in tokens), default=0)):
        have = np.array([len(t) > pos for t in tokens])
        if have.mean() < min_coverage:
            continue
        tok = pd.Series([t[pos] for t, h in zip(tokens, have) if h])
        lab = labels[have]
        classes_per_token = pd.Series(lab).groupby(tok.to_numpy()).nunique()
        shared = tok.map(classes_per_token).to_numpy() >= 2
        n_groups = tok.nunique()
        if not (2 <= n_groups <= have.sum() / 2) or shared.mean() < min_shared:
            continue
        pattern = "^" + f"{_TOKEN}{_GAP}" * pos + f"({_TOKEN})(?=[{_SEP}])"
        groups = apply_group_pattern(names, pattern)
        out.append(
            {
                "source": f"file-name token {pos + 1}",
                "position": pos,
                "pattern": pattern,
                "n_groups": int(pd.Series(groups).nunique()),
                "shared_fraction": round(float(shared.mean()), 3),
                "examples": ", ".join(tok.value_counts().index[:3]),
            }
        )
    return out


def apply_group_pattern(names, pattern: str) -> np.ndarray:
    """Group of each file name: the pattern's first capture group, or the name itself when it does not match."""
    rx = re.compile(pattern)
    if rx.groups < 1:
        raise DatasetError(f"group pattern {pattern!r} has no capture group; e.g. '^[^_]+_([^_]+)_'")
    out = []
    for name in names:
        match = rx.match(PurePath(name).name)
        out.append(match.group(1) if match and match.group(1) else PurePath(name).name)
    return np.array(out, dtype=object)


def folds_from_groups(y: np.ndarray, groups: np.ndarray, *, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of each sample under StratifiedGroupKFold: a group never spans two folds."""
    folds = np.zeros(len(y), int)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        folds[test] = i
    return folds


def matched_folds(y: np.ndarray, units: np.ndarray, folds: np.ndarray, *, seed: int) -> np.ndarray:
    """Folds with the same per-class sizes as `folds`, dealt at random to units (files) within each class.

    Comparing against these rather than a fresh k-fold keeps training-set sizes equal on both sides, so a
    lopsided grouping (one take letter on most files) is not mistaken for a leak.
    """
    rng = np.random.default_rng(seed)
    codes, _ = pd.factorize(pd.Series(units, dtype=object))
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    unit_fold, unit_class = np.asarray(folds)[first].copy(), np.asarray(y)[first]
    for c in np.unique(unit_class):
        idx = np.flatnonzero(unit_class == c)
        unit_fold[idx] = rng.permutation(unit_fold[idx])
    return unit_fold[codes]


def cv_correct(X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per-sample correctness of a standardized logistic regression scored on each fold id in turn."""
    X, y = np.asarray(X, np.float64), np.asarray(y)
    correct = np.zeros(len(y), bool)
    # One BLAS thread: lbfgs's small matrix products ran 40x slower with 2 threads on a busy 2-core machine.
    # tol 1e-3 stops lbfgs after ~25 iterations instead of ~110 on ESC-10, same held-out accuracy.
    with threadpool_limits(1):
        for f in np.unique(folds):
            test = folds == f
            model = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-3, max_iter=300))
            model.fit(X[~test], y[~test])
            correct[test] = model.predict(X[test]) == y[test]
    return correct


def gap_between(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Accuracies, gap (a - b) and noise in points; the noise is twice the paired standard error, at least 2."""
    d = correct_a.astype(float) - correct_b.astype(float)
    se = 100 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    gap, noise = 100 * d.mean(), max(MIN_GAP_POINTS, 2 * se)
    return {
        "accuracy_a": float(correct_a.mean()),
        "accuracy_b": float(correct_b.mean()),
        "gap_points": round(float(gap), 2),
        "noise_points": round(float(noise), 2),
        "significant": bool(gap > noise),
    }


def leak_gap(
    X: np.ndarray, y: np.ndarray, groups_a: np.ndarray, groups_b: np.ndarray, *, k: int = 5, seed: int = 0
) -> dict:
    """Cross-validated accuracy with groups_a (each file its own) and groups_b (proposed), and the gap.

    groups_b's StratifiedGroupKFold folds are scored as they are; groups_a gets folds of the same per-class
    sizes dealt at random to its groups (matched_folds), so only the keeping-together differs.
    """
    folds_b = folds_from_groups(np.asarray(y), groups_b, k=_folds(k, groups_b), seed=seed)
    return _compare(X, y, groups_a, folds_b, seed=seed)


def _compare(X: np.ndarray, y: np.ndarray, units: np.ndarray, folds_b: np.ndarray, *, seed: int) -> dict:
    """gap_between per-unit matched folds (a) and folds_b (b), with the fold count."""
    folds_a = matched_folds(y, units, folds_b, seed=seed)
    out = gap_between(cv_correct(X, y, folds_a), cv_correct(X, y, folds_b))
    return {**out, "k": int(len(np.unique(folds_b)))}


def _folds(k: int, *groupings: np.ndarray) -> int:
    """k, lowered to the fewest groups of any grouping (StratifiedGroupKFold needs k groups)."""
    k = min([k] + [int(pd.Series(g).nunique()) for g in groupings])
    if k < 2:
        raise DatasetError(f"audit: a grouping has fewer than 2 groups; cannot cross-validate (k={k})")
    return k


def merged_duplicates(manifest: pd.DataFrame, duplicates: pd.DataFrame) -> np.ndarray:
    """Groups joining each recording with its duplicates (connected components over the duplicate pairs)."""
    m = check_manifest(manifest)
    rec_codes, recs = pd.factorize(m["recording_id"])
    index = pd.Series(np.arange(len(recs)), index=recs)
    a = index[duplicates["recording_a"]].to_numpy() if len(duplicates) else np.array([], int)
    b = index[duplicates["recording_b"]].to_numpy() if len(duplicates) else np.array([], int)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(recs), len(recs)))
    _, component = connected_components(graph, directed=False)
    return component[rec_codes].astype(str)


def audit(
    manifest: pd.DataFrame,
    clips: np.ndarray,
    sr: int,
    X: np.ndarray,
    *,
    seed: int = 0,
    k: int = 5,
    threshold: float = DEFAULT_THRESHOLD,
    max_cv_segments: int = 4000,
) -> AuditResult:
    """Find duplicates and candidate groupings and measure what ignoring them does to a fast model's accuracy.

    Duplicates are searched over every segment; the cross-validations use whole recordings drawn at random
    up to max_cv_segments segments (each fit of the logistic regression grows with n).
    """
    t0 = time.perf_counter()
    m = check_manifest(manifest, len(clips))
    if len(X) != len(m):
        raise DatasetError(f"audit: {len(X)} feature vectors for {len(m)} manifest rows")
    # a segment shorter than its window (manifest duration_s) is fingerprinted by its sound, not its padding
    duration_s = manifest["duration_s"].to_numpy(float) if "duration_s" in manifest.columns else None
    spans = sound_spans(clips, sr, duration_s=duration_s)
    fp = fingerprints(clips, sr, spans=spans)
    timings = {"fingerprints_s": time.perf_counter() - t0}
    t = time.perf_counter()
    near = near_duplicates(fp, m, threshold=threshold, sound_s=(spans[:, 1] - spans[:, 0]) / sr)
    timings["near_duplicates_s"] = time.perf_counter() - t
    duplicates = per_recording(pd.concat([exact_duplicates(m), near], ignore_index=True))
    t = time.perf_counter()
    hints = group_hints(m)
    timings["hints_s"] = time.perf_counter() - t

    t = time.perf_counter()
    has_folds = bool(m["fold"].notna().all() and m["fold"].nunique() >= 2)
    has_groups = m["group"].nunique() < m["recording_id"].nunique()
    split = "given folds" if has_folds else "given groups" if has_groups else "per-file"
    rows = _cv_rows(m, max_cv_segments, seed=seed)
    candidates = _measure(m, np.asarray(X)[rows], rows, split, hints, duplicates, k=k, seed=seed)
    timings["cv_s"] = time.perf_counter() - t
    best = candidates.iloc[0] if len(candidates) else None

    crossing = _crossing(duplicates, split)
    significant = split == "per-file" and best is not None and bool(best["significant"])
    timings["total_s"] = time.perf_counter() - t0
    nan = float("nan")
    return AuditResult(
        duplicates=duplicates,
        candidates=candidates,
        split=split,
        per_file_accuracy=float(best["per_file_accuracy"]) if best is not None else nan,
        grouped_accuracy=float(best["accuracy"]) if best is not None else nan,
        proposed_pattern=str(best["pattern"]) if significant else "",
        gap_points=float(best["gap_points"]) if best is not None else nan,
        noise_points=float(best["noise_points"]) if best is not None else nan,
        leak=bool(len(crossing)) or significant,
        verdict=_verdict(split, best, crossing),
        hints=hints,
        n_segments=len(m),
        n_recordings=int(m["recording_id"].nunique()),
        n_cv_segments=len(rows),
        timings={key: round(v, 3) for key, v in timings.items()},
        near_rule=near_rule(threshold),
    )


def _measure(
    m: pd.DataFrame,
    X: np.ndarray,
    rows: np.ndarray,
    split: str,
    hints: list[dict],
    duplicates: pd.DataFrame,
    *,
    k: int,
    seed: int,
) -> pd.DataFrame:
    """CANDIDATE_COLUMNS rows, largest gap first: each hint and the merged duplicates (per-file), or the
    given folds or groups, each against per-file folds of the same sizes, on manifest rows `rows` (X's rows)."""
    y = m["class_id"].to_numpy()[rows]
    per_file = m["recording_id"].to_numpy(dtype=object)[rows]
    blank = {"position": -1, "pattern": "", "shared_fraction": float("nan"), "examples": ""}
    if split == "per-file":
        names = [PurePath(p).name for p in m["path"]]
        options = [(h, apply_group_pattern(names, h["pattern"])) for h in hints]
        if len(duplicates):
            options.append(({**blank, "source": "duplicates merged"}, merged_duplicates(m, duplicates)))
    else:
        column = "fold" if split == "given folds" else "group"
        options = [({**blank, "source": split}, m[column].astype(str).to_numpy(dtype=object))]
    out = []
    for hint, groups in options:
        groups = np.asarray(groups, dtype=object)[rows]
        n_groups = int(pd.Series(groups).nunique())
        if n_groups < 2:
            continue
        folds = (
            pd.factorize(groups)[0]
            if split == "given folds"
            else folds_from_groups(y, groups, k=_folds(k, groups), seed=seed)
        )
        r = _compare(X, y, per_file, folds, seed=seed)
        out.append(
            {
                **hint,
                "n_groups": n_groups,
                "per_file_accuracy": r["accuracy_a"],
                "accuracy": r["accuracy_b"],
                "gap_points": r["gap_points"],
                "noise_points": r["noise_points"],
                "significant": r["significant"],
            }
        )
    return pd.DataFrame(out, columns=CANDIDATE_COLUMNS).sort_values("gap_points", ascending=False, ignore_index=True)


def _cv_rows(m: pd.DataFrame, max_segments: int, *, seed: int) -> np.ndarray:
    """Row numbers of whole recordings drawn at random until max_segments segments (all rows if fewer)."""
    if len(m) <= max_segments:
        return np.arange(len(m))
    counts = m.groupby("recording_id", sort=True).size()
    order = counts.sample(frac=1.0, random_state=seed)
    keep = order.index[: int(np.searchsorted(order.cumsum().to_numpy(), max_segments, side="right"))]
    return np.flatnonzero(m["recording_id"].isin(keep).to_numpy())


def _crossing(duplicates: pd.DataFrame, split: str) -> pd.DataFrame:
    """Duplicate pairs the split can put on both sides: across folds, across groups, or any (per-file)."""
    if duplicates.empty:
        return duplicates
    if split == "given folds":
        return duplicates[duplicates["crosses_fold"].fillna(True).astype(bool)]
    if split == "given groups":
        return duplicates[duplicates["crosses_group"].astype(bool)]
    return duplicates


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _verdict(split: str, best, crossing: pd.DataFrame) -> str:
    """One plain-language paragraph: what leaks, by how much, and what to pass."""
    parts = []
    if split == "per-file":
        if best is None:
            parts.append(
                "no file-name token recurs across classes and no duplicates were found, so there is "
                "no grouping to test; each file is its own group"
            )
        elif best["significant"]:
            if best["pattern"]:
                what = (
                    f"files sharing {best['source']} (e.g. {best['examples']}; {best['n_groups']} groups) "
                    f"are kept together: pass --group-pattern '{best['pattern']}' or a group column"
                )
            else:
                what = "copies of the same sound are kept together: remove the duplicates or give each set one group"
            before, after = _pct(best["per_file_accuracy"]), _pct(best["accuracy"])
            parts.append(f"accuracy drops from {before} to {after} when {what}")
        else:
            parts.append(
                f"no leak found: accuracy is {_pct(best['per_file_accuracy'])} with each file its own group "
                f"and {_pct(best['accuracy'])} when {best['source']} is kept together (gap "
                f"{best['gap_points']:+.1f} points, within noise of ±{best['noise_points']:.1f})"
            )
    else:
        unit = "folds" if split == "given folds" else "groups"
        line = (
            f"the given {unit} are used: accuracy {_pct(best['accuracy'])} on them vs "
            f"{_pct(best['per_file_accuracy'])} with each file its own group (gap {best['gap_points']:+.1f} points"
        )
        if best["significant"]:
            parts.append(line + f"): the given {unit} keep related files apart; keep using them")
        else:
            parts.append(line + f", within noise of ±{best['noise_points']:.1f}): no sign of leakage")
    if len(crossing):
        where = {"given folds": "cross folds", "given groups": "cross groups"}.get(split, "can land on both sides")
        n_exact = int((crossing["kind"] == "exact").sum())
        parts.append(
            f"{len(crossing)} duplicate pair(s) {where} ({n_exact} exact, {len(crossing) - n_exact} "
            f"near): check audit/duplicates.csv and remove copies or give them one group"
        )
    return "; ".join(parts) + "."


def summary_markdown(result: AuditResult, *, max_pairs: int = 20) -> str:
    """audit/summary.md: verdict, the splits compared, candidate groupings and the duplicate pairs."""
    lines = [
        "## Leakage audit",
        "",
        f"**Verdict:** {result.verdict}",
        "",
        f"{result.n_segments} segments from {result.n_recordings} recordings; split: {result.split}; "
        f"cross-validated on {result.n_cv_segments} segments.",
        "",
    ]
    if len(result.candidates):
        lines += [
            "| grouping | pattern | groups | accuracy | per-file accuracy | gap (points) | noise (±) |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r.source}{f' (e.g. {r.examples})' if r.examples else ''} | "
                f"{f'`{r.pattern}`' if r.pattern else ''} | {r.n_groups} | {_pct(r.accuracy)} | "
                f"{_pct(r.per_file_accuracy)} | {r.gap_points:+.1f} | {r.noise_points:.1f} |"
                for r in result.candidates.itertuples()
            ),
            "",
        ]
    if result.split != "per-file" and result.hints:
        lines += [
            "File-name tokens that recur across classes (not measured: the split is given): "
            + "; ".join(
                f"{h['source']} ({h['n_groups']} groups, e.g. {h['examples']}) `{h['pattern']}`" for h in result.hints
            ),
            "",
        ]
    d = result.duplicates
    lines.append(
        f"Duplicate recording pairs: {int((d['kind'] == 'exact').sum())} exact (same content hash), "
        f"{int((d['kind'] == 'near').sum())} near ({result.near_rule or 'fingerprint cosine ≥ threshold'}); "
        f"{int(d['crosses_fold'].fillna(False).astype(bool).sum())} cross folds."
    )
    if len(d):
        lines += [
            "",
            "| kind | similarity | path a | path b | fold a | fold b |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r.kind} | {r.similarity:.3f} | {r.path_a} | {r.path_b} | {_na(r.fold_a)} | {_na(r.fold_b)} |"
                for r in d.head(max_pairs).itertuples()
            ),
        ]
        if len(d) > max_pairs:
            lines.append(f"\n… {len(d) - max_pairs} more in audit/duplicates.csv")
    cost = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in result.timings.items())
    lines += ["", f"Cost: {cost}."]
    return "\n".join(lines) + "\n"


def _na(v) -> str:
    return "" if v is pd.NA or v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def duplicates_csv(result: AuditResult) -> pd.DataFrame:
    """The table for audit/duplicates.csv (PAIR_COLUMNS, most similar first within each kind)."""
    return result.duplicates[PAIR_COLUMNS]

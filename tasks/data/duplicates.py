"""Exact and near-duplicate recordings: same content hash, or near-identical level-invariant audio fingerprints."""
from __future__ import annotations

from itertools import combinations

import librosa
import numpy as np
import pandas as pd
import scipy.fft

from tasks.errors import DatasetError

MANIFEST_COLUMNS = ("path", "recording_id", "label", "class_id", "fold", "group", "content_hash")
PAIR_COLUMNS = ["kind", "path_a", "path_b", "recording_a", "recording_b", "label_a", "label_b", "similarity",
                "fold_a", "fold_b", "group_a", "group_b", "crosses_fold", "crosses_group", "n_segments",
                "index_a", "index_b"]
# Log floor 50 dB under the clip's loudest cell: it scales with the clip (so level cancels) and sits above
# the hiss a re-encoding or mild added noise brings, so such copies still match.
FLOOR_DB = 50.0
DEFAULT_THRESHOLD = 0.7


def check_manifest(manifest: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """The manifest with a 0..n-1 index and typed audit columns; DatasetError naming what is missing."""
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(f"audit: manifest lacks columns {missing}; it needs {list(MANIFEST_COLUMNS)}")
    if n is not None and len(manifest) != n:
        raise DatasetError(f"audit: manifest has {len(manifest)} rows but {n} segments/vectors were given")
    m = manifest.reset_index(drop=True).copy()
    for col in ("path", "recording_id", "label", "group", "content_hash"):
        m[col] = m[col].fillna("").astype(str)
    m["fold"] = pd.array(m["fold"], dtype="Int64")
    m["class_id"] = m["class_id"].astype(int)
    return m


def fingerprints(clips: np.ndarray, sr: int, *, n_bands: int = 32, n_steps: int = 16, n_fft: int = 1024,
                 chunk: int = 64) -> np.ndarray:
    """(n, (n_bands - 1) * (n_steps - 1)) float32 unit vectors: a coarse, level-invariant log-mel signature.

    The log-mel power is averaged into n_bands x n_steps cells, then differenced along frequency and time
    (Haitsma & Kalker's fingerprint, kept real-valued): the clip's spectral tilt and loudness envelope cancel,
    so two takes of a similar sound differ while a copy at another level or with mild noise does not. Shifts
    must stay small beside a cell (segment / n_steps): on ESC-10's 5 s clips, copies shifted by 10, 20, 50
    and 100 ms reach the default threshold 100%, 99.5%, 88% and 28% of the time (bench/audit.py).
    A constant signal (a digital steady tone) has no pattern and gets a zero vector: only its hash matches.
    """
    clips = np.atleast_2d(np.asarray(clips, np.float32))
    if clips.shape[-1] < n_fft:
        clips = np.pad(clips, ((0, 0), (0, n_fft - clips.shape[-1])))
    hop = n_fft // 2
    n_frames = 1 + (clips.shape[-1] - n_fft) // hop
    edges = np.linspace(0, n_frames, n_steps + 1).round().astype(int)
    lo = np.minimum(edges[:-1], n_frames - 1)
    hi = np.maximum(edges[1:], lo + 1)
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_bands).astype(np.float32).T
    window = np.hanning(n_fft).astype(np.float32)
    out = np.empty((len(clips), (n_bands - 1) * (n_steps - 1)), np.float32)
    for start in range(0, len(clips), chunk):
        block = clips[start:start + chunk]
        frames = np.lib.stride_tricks.sliding_window_view(block, n_fft, axis=-1)[:, ::hop][:, :n_frames]
        mag = np.abs(scipy.fft.rfft(frames * window, axis=-1, workers=-1))
        mag *= mag
        power = (mag.reshape(-1, mag.shape[-1]) @ mel).reshape(len(block), n_frames, n_bands)
        cum = np.concatenate([np.zeros_like(power[:, :1]), np.cumsum(power, axis=1)], axis=1)
        cells = (cum[:, hi] - cum[:, lo]) / (hi - lo)[None, :, None]  # (c, n_steps, n_bands)
        floor = cells.max(axis=(1, 2), keepdims=True) * 10 ** (-FLOOR_DB / 10) + 1e-30
        pattern = np.diff(np.diff(10 * np.log10(cells + floor), axis=2), axis=1)
        out[start:start + chunk] = _unit(pattern.reshape(len(block), -1))
    return out


def _unit(v: np.ndarray, *, tol: float = 1e-2) -> np.ndarray:
    """Rows scaled to unit norm; rows with norm under tol dB (a constant signal) become zero."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norm > tol, v / np.maximum(norm, tol), 0.0).astype(np.float32)


def exact_duplicates(manifest: pd.DataFrame) -> pd.DataFrame:
    """Pairs of different recordings whose files have the same content hash (one row per recording pair)."""
    m = check_manifest(manifest)
    first = m[m["content_hash"] != ""].drop_duplicates("recording_id")
    ia, ib = [], []
    for _, rows in first.groupby("content_hash", sort=True):
        for a, b in combinations(rows.index.tolist(), 2):
            ia.append(a)
            ib.append(b)
    return pair_frame(m, np.array(ia, int), np.array(ib, int), np.ones(len(ia)), kind="exact")


def near_duplicates(fp: np.ndarray, manifest: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD,
                    chunk: int = 1024) -> pd.DataFrame:
    """Segment pairs of different recordings whose fingerprints' cosine is >= threshold.

    Blocked matrix products over the upper triangle: O(n^2 d) flops in BLAS, memory O(chunk * n).
    """
    fp = np.asarray(fp, np.float32)
    m = check_manifest(manifest, len(fp))
    rec = pd.factorize(m["recording_id"])[0]
    ia, ib, sim = [np.array([], int)], [np.array([], int)], [np.array([], np.float32)]
    for start in range(0, len(fp), chunk):
        stop = min(start + chunk, len(fp))
        block = fp[start:stop] @ fp[start:].T
        i, j = np.nonzero(block >= threshold)
        a, b = i + start, j + start
        keep = (b > a) & (rec[a] != rec[b])
        ia.append(a[keep])
        ib.append(b[keep])
        sim.append(block[i[keep], j[keep]])
    similarity = np.minimum(np.concatenate(sim).astype(float), 1.0)
    return pair_frame(m, np.concatenate(ia), np.concatenate(ib), similarity, kind="near")


def pair_frame(m: pd.DataFrame, ia: np.ndarray, ib: np.ndarray, similarity: np.ndarray, *,
               kind: str) -> pd.DataFrame:
    """The PAIR_COLUMNS table for manifest rows ia[k], ib[k]."""
    a, b = m.iloc[ia].reset_index(drop=True), m.iloc[ib].reset_index(drop=True)
    out = pd.DataFrame({
        "kind": kind, "path_a": a["path"], "path_b": b["path"], "recording_a": a["recording_id"],
        "recording_b": b["recording_id"], "label_a": a["label"], "label_b": b["label"],
        "similarity": np.round(np.asarray(similarity, float), 4), "fold_a": a["fold"], "fold_b": b["fold"],
        "group_a": a["group"], "group_b": b["group"],
        "crosses_fold": pd.array(a["fold"] != b["fold"], dtype="boolean"),
        "crosses_group": a["group"] != b["group"], "n_segments": 1,
        "index_a": np.asarray(ia, int), "index_b": np.asarray(ib, int),
    }, columns=PAIR_COLUMNS)
    return out.sort_values(["similarity", "index_a", "index_b"], ascending=[False, True, True],
                           ignore_index=True)


def per_recording(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, recording pair): the most similar segment pair, n_segments counting all of them."""
    if pairs.empty:
        return pairs
    p = pairs.copy()
    swap = p["recording_a"] > p["recording_b"]
    for left, right in (("path_a", "path_b"), ("recording_a", "recording_b"), ("label_a", "label_b"),
                        ("fold_a", "fold_b"), ("group_a", "group_b"), ("index_a", "index_b")):
        la, ra = p[left].copy(), p[right].copy()
        p[left], p[right] = la.where(~swap, ra), ra.where(~swap, la)
    p = p.sort_values("similarity", ascending=False, kind="stable")
    counts = p.groupby(["kind", "recording_a", "recording_b"], sort=False)["n_segments"].transform("sum")
    p["n_segments"] = counts
    return p.drop_duplicates(["kind", "recording_a", "recording_b"]).sort_values(
        ["kind", "similarity", "recording_a", "recording_b"], ascending=[True, False, True, True],
        ignore_index=True)[PAIR_COLUMNS]

"""Cost of the leakage audit per 1,000 segments on generated data (1,000 and 10,000 segments), and on ESC-10.

    nice -n 10 python bench/audit.py                  # 1,000 and 10,000 generated 1 s segments + ESC-10
    nice -n 10 python bench/audit.py --sizes 1000 --no-esc10

Generated segments (16 kHz, 1 s): 50 speakers x 10 classes, each speaker with its own filter and pitch per
class, named spkNN_takeT_label.wav; 1% are planted copies (half byte-identical, half at -6 dB shifted 10 ms)
and their recall is reported. X for the cross-validation is a generated 1,210-value vector with a
weak class part and a strong part per (speaker, class), so a per-file split leaks (computing the engineered
vector is the caller's cost, not the audit's). ESC-10 goes through the current ingestion at
22,050 Hz with its official folds; its engineered vectors are computed first and not timed. Also on
ESC-10: the share of copies at -6 dB shifted by 10-100 ms that the near-duplicate threshold still catches.
Ends with key=value lines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import SHARED_ESC10  # noqa: E402
from tasks.data.audit import audit  # noqa: E402
from tasks.data.duplicates import DEFAULT_THRESHOLD, fingerprints  # noqa: E402

SR = 16_000
ESC10 = SHARED_ESC10


def generated(n: int, *, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, set[frozenset]]:
    """(manifest, clips, X, planted duplicate pairs) for n one-second segments."""
    rng = np.random.default_rng(seed)
    n_planted = max(2, n // 100) // 2 * 2
    base = n - n_planted
    speakers, classes = 50, 10
    spk = rng.integers(0, speakers, base)
    cls = np.arange(base) % classes
    t = np.arange(SR) / SR
    pitch = rng.uniform(200, 3000, (speakers, classes))
    env = np.stack([np.interp(t, np.linspace(0, 1, 10), e) for e in rng.uniform(0.1, 1, (base, 10))])
    clips = (
        0.3 * env * np.sin(2 * np.pi * pitch[spk, cls][:, None] * t * rng.uniform(0.99, 1.01, (base, 1)))
        + 0.02 * rng.standard_normal((base, SR))
    ).astype(np.float32)
    for s in range(speakers):
        rows = spk == s
        clips[rows] = scipy.signal.sosfilt(
            scipy.signal.butter(2, rng.uniform(800, 6000), "low", fs=SR, output="sos"), clips[rows], axis=1
        )
    names = [f"spk{s:02d}_take{i // (speakers * classes) + 1}_c{c}" for i, (s, c) in enumerate(zip(spk, cls))]
    names = [f"{name}_{i}" for i, name in enumerate(names)]
    hashes = [f"h{i}" for i in range(base)]
    src = rng.choice(base, n_planted, replace=False)
    copies = []
    for j, i in enumerate(src):
        if j % 2:
            copies.append(0.5 * np.concatenate([clips[i, 160:], np.zeros(160, np.float32)]))
            hashes.append(f"h{base + j}")
        else:
            copies.append(clips[i])
            hashes.append(hashes[i])
        names.append(f"spk{spk[i]:02d}_take9_c{cls[i]}_copy{j}")
    clips = np.concatenate([clips, np.stack(copies).astype(np.float32)])
    labels = np.concatenate([cls, cls[src]])
    m = pd.DataFrame(
        {
            "path": [f"/gen/{name}.wav" for name in names],
            "recording_id": names,
            "label": [f"c{c}" for c in labels],
            "class_id": labels,
            "fold": pd.array([pd.NA] * n, "Int64"),
            "group": names,
            "content_hash": hashes,
        }
    )
    speaker_of = np.concatenate([spk, spk[src]])
    rendition = rng.standard_normal((speakers, classes, 1210))  # each speaker's own take on each class
    X = (
        rng.standard_normal((classes, 1210))[labels] * 0.05
        + rendition[speaker_of, labels]
        + 2 * rng.standard_normal((n, 1210))
    ).astype(np.float32)
    planted = {frozenset((names[i], names[base + j])) for j, i in enumerate(src)}
    return m, clips, X, planted


def esc10() -> dict:
    """Full audit of ESC-10 with its official folds, X given."""
    import tempfile

    from tasks.data.ingest import build
    from tasks.data.manifest import read_manifest
    from tasks.features.representations import compute

    out = Path(tempfile.gettempdir()) / "audit-bench-esc10"
    data = build(ESC10, dataset="esc10", sr=22_050, out_dir=out)
    m = read_manifest(data["manifest"])
    clips = np.load(data["clips"])
    X = compute("engineered", clips, 22_050)
    start = time.perf_counter()
    result = audit(m, clips, 22_050, X, seed=0)
    seconds = time.perf_counter() - start
    print(f"ESC-10: {seconds:.1f} s  {result.timings}\n  {result.verdict}", flush=True)
    crossing = int(result.duplicates["crosses_fold"].fillna(True).astype(bool).sum())
    fp, found = fingerprints(clips, 22_050), {}
    for shift_ms in (10, 20, 50, 100):
        shift = round(22_050 * shift_ms / 1000)
        moved = 0.5 * np.concatenate([clips[:, shift:], np.zeros((len(clips), shift), np.float32)], axis=1)
        found[f"esc10_shifted_copy_recall_{shift_ms}ms"] = float(
            np.mean((fingerprints(moved, 22_050) * fp).sum(axis=1) >= DEFAULT_THRESHOLD)
        )
    print(f"  copies at -6 dB shifted by 10/20/50/100 ms found: {list(found.values())}", flush=True)
    return {
        **found,
        "esc10_audit_s": f"{seconds:.2f}",
        "esc10_gap_points": f"{result.gap_points:.1f}",
        "esc10_noise_points": f"{result.noise_points:.1f}",
        "esc10_duplicate_pairs": len(result.duplicates),
        "esc10_pairs_crossing_folds": crossing,
        "esc10_leak": result.leak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000])
    ap.add_argument("--no-esc10", action="store_true")
    args = ap.parse_args()

    fingerprints(np.zeros((2, SR), np.float32) + 1e-3, SR)  # librosa's mel filters: first call compiles
    keys: dict[str, object] = {}
    for n in args.sizes:
        m, clips, X, planted = generated(n)
        start = time.perf_counter()
        result = audit(m, clips, SR, X, seed=0)
        total = time.perf_counter() - start
        per_k = {k.removesuffix("_s"): v / (n / 1000) for k, v in result.timings.items()}
        found = {frozenset(p) for p in result.duplicates[["recording_a", "recording_b"]].to_numpy()}
        recall = len(planted & found) / len(planted)
        print(
            f"n={n}: {total:.1f} s; per 1,000 segments: " + ", ".join(f"{k} {v:.2f} s" for k, v in per_k.items()),
            flush=True,
        )
        print(
            f"  planted copies found {recall:.0%}, other pairs {len(found - planted)}; cv on {result.n_cv_segments}"
            f" segments; proposed {result.proposed_pattern!r}, gap {result.gap_points:.1f}",
            flush=True,
        )
        tag = f"at_{n // 1000}k"
        keys.update(
            {
                f"audit_s_per_1k_{tag}": f"{total / (n / 1000):.2f}",
                f"fingerprint_s_per_1k_{tag}": f"{per_k['fingerprints']:.3f}",
                f"near_dup_s_per_1k_{tag}": f"{per_k['near_duplicates']:.3f}",
                f"hints_s_per_1k_{tag}": f"{per_k['hints']:.3f}",
                f"cv_s_per_1k_{tag}": f"{per_k['cv']:.3f}",
                f"planted_recall_{tag}": f"{recall:.3f}",
                f"other_pairs_{tag}": len(found - planted),
                f"gap_points_{tag}": f"{result.gap_points:.1f}",
            }
        )
        if n == max(args.sizes):
            keys["audit_s_per_1k"] = f"{total / (n / 1000):.2f}"
            near = result.timings["near_duplicates_s"]
            keys["near_dup_s_at_40k_projected"] = f"{near * (40_000 / n) ** 2:.1f}"
    if not args.no_esc10 and ESC10.is_dir():
        keys.update(esc10())
    for key, value in keys.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()

"""Leakage audit on real audio files with known answers: a planted speaker leak, planted copies, clean data."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import soundfile as sf

from tasks.cache import file_sha256
from tasks.config import SHARED_ESC10
from tasks.data.audio import load_audio
from tasks.data.audit import (
    AuditResult,
    apply_group_pattern,
    audit,
    duplicates_csv,
    group_hints,
    leak_gap,
    summary_markdown,
)
from tasks.data.duplicates import PAIR_COLUMNS, exact_duplicates, fingerprints, near_duplicates
from tasks.features.representations import compute

_SPEC = importlib.util.spec_from_file_location("bench_audit", Path(__file__).parents[2] / "bench" / "audit.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)

SR = 16000
ESC10 = SHARED_ESC10
SPEAKERS = [f"spk{i:02d}" for i in range(1, 9)]
LABELS = ["dog", "cat", "bird", "cow"]


def _write(path: Path, y: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(y, -1, 1).astype(np.float32), SR)
    return path


def _manifest(paths: list[Path], labels: list[str], folds=None, groups=None) -> pd.DataFrame:
    """The audit's manifest for whole files: one segment per file, each file its own recording."""
    classes = sorted(set(labels))
    return pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "recording_id": [p.stem for p in paths],
            "label": labels,
            "class_id": [classes.index(c) for c in labels],
            "fold": pd.array(folds if folds is not None else [pd.NA] * len(paths), dtype="Int64"),
            "group": groups if groups is not None else [p.stem for p in paths],
            "content_hash": [file_sha256(p) for p in paths],
        }
    )


def _decode(paths: list[Path], *, duration_s: float) -> np.ndarray:
    return np.stack([load_audio(p, sr=SR, duration_s=duration_s) for p in paths])


def _speaker_set(root: Path, *, seed: int, own_pitch: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """spkNN_takeT_label.wav, each speaker with its own filter and noise floor; with own_pitch each speaker
    also renders each class at a pitch of its own (so a per-file split leaks), else the class sets the pitch."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    class_rate = {c: 3.0 + 2 * i for i, c in enumerate(LABELS)}  # a weak cue every speaker shares
    paths, labels = [], []
    for spk in SPEAKERS:
        cutoff = rng.uniform(800, 5000)
        sos = scipy.signal.butter(2, cutoff, "low", fs=SR, output="sos")
        floor = 10 ** rng.uniform(-2.5, -1.5)
        pitch = {c: (rng.uniform(200, 3000) if own_pitch else 400 * 1.5**i) for i, c in enumerate(LABELS)}
        for take in range(1, 4):
            for c in LABELS:
                f = pitch[c] * rng.uniform(0.99, 1.01)
                rate = class_rate[c] if own_pitch else rng.uniform(2, 10)
                am = 1 + 0.3 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
                y = 0.3 * am * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
                y = scipy.signal.sosfilt(sos, y + floor * rng.standard_normal(SR))
                paths.append(_write(root / f"{spk}_take{take}_{c}.wav", y * 10 ** rng.uniform(-0.3, 0)))
                labels.append(c)
    m = _manifest(paths, labels)
    return m, _decode(paths, duration_s=1.0)


def _texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """A 2 s sound with its own spectro-temporal pattern: noise in a random band under a random envelope plus
    a gliding tone."""
    t = np.arange(n) / SR
    lo = rng.uniform(100, 3000)
    band = scipy.signal.sosfilt(
        scipy.signal.butter(2, [lo, lo * rng.uniform(1.5, 3)], "band", fs=SR, output="sos"), rng.standard_normal(n)
    )
    env = np.interp(t, np.linspace(0, t[-1], 12), rng.uniform(0.05, 1, 12))
    f0, f1 = rng.uniform(200, 4000, 2)
    glide = np.sin(2 * np.pi * np.cumsum(np.linspace(f0, f1, n)) / SR)
    return 0.2 * env * band / np.abs(band).max() + 0.1 * glide * np.interp(t, [0, t[-1]], rng.uniform(0, 1, 2))


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """12 distinct sounds in folds 1-3, one byte-identical copy and one scaled, 10 ms shifted copy elsewhere."""
    root = tmp_path_factory.mktemp("copies")
    rng = np.random.default_rng(7)
    n = 2 * SR
    sounds = [_texture(rng, n) for _ in range(12)]
    paths = [_write(root / f"clip{i:02d}.wav", y) for i, y in enumerate(sounds)]
    labels = [LABELS[i % 4] for i in range(12)]
    folds = [1 + i % 3 for i in range(12)]
    shutil.copy(paths[0], root / "renamed.wav")
    shifted = 0.5 * np.concatenate([sounds[1][160:], np.zeros(160)])
    paths += [root / "renamed.wav", _write(root / "quieter_later.wav", shifted)]
    labels += [labels[0], labels[1]]
    folds += [folds[0] % 3 + 1, folds[1] % 3 + 1]
    return _manifest(paths, labels, folds=folds), _decode(paths, duration_s=2.0)


def test_fingerprints_are_unit_and_level_invariant(rng):
    y = np.stack([_texture(rng, SR) for _ in range(3)]).astype(np.float32)
    fp = fingerprints(y, SR)
    assert fp.dtype == np.float32 and fp.shape == (3, 31 * 15)
    np.testing.assert_allclose(np.linalg.norm(fp, axis=1), 1, atol=1e-5)
    assert (fingerprints(0.05 * y, SR) * fp).sum(axis=1).min() > 0.9999
    assert (fp @ fp.T)[np.triu_indices(3, 1)].max() < 0.7  # different sounds do not match


def test_exact_and_near_duplicates_found_across_folds(copies):
    m, clips = copies
    exact = exact_duplicates(m)
    assert list(exact.columns) == PAIR_COLUMNS
    assert [set(r) for r in exact[["recording_a", "recording_b"]].to_numpy()] == [{"clip00", "renamed"}]
    assert exact["crosses_fold"].tolist() == [True]

    near = near_duplicates(fingerprints(clips, SR), m)
    pairs = {frozenset(r): s for r, s in zip(near[["recording_a", "recording_b"]].to_numpy(), near["similarity"])}
    assert set(pairs) == {frozenset({"clip00", "renamed"}), frozenset({"clip01", "quieter_later"})}
    assert pairs[frozenset({"clip00", "renamed"})] > 0.999
    assert near["crosses_fold"].all()


def test_audit_lists_copies_and_flags_them(copies):
    m, clips = copies
    X = compute("engineered", clips, SR)
    result = audit(m, clips, SR, X, seed=0, k=3)
    assert result.split == "given folds" and result.leak
    table = duplicates_csv(result)
    assert sorted(table["kind"]) == ["exact", "near", "near"]
    assert {Path(p).name for p in table[["path_a", "path_b"]].to_numpy().ravel()} == {
        "clip00.wav",
        "renamed.wav",
        "clip01.wav",
        "quieter_later.wav",
    }
    assert "3 duplicate pair(s) cross folds" in result.verdict
    md = summary_markdown(result)
    assert "renamed.wav" in md and "quieter_later.wav" in md


def test_group_hints_find_speaker_and_take_not_label(tmp_path):
    names = [f"{s}_take{t}_{c}.wav" for s in SPEAKERS for t in (1, 2, 3) for c in LABELS]
    m = pd.DataFrame(
        {
            "path": [str(tmp_path / n) for n in names],
            "recording_id": names,
            "label": [n.split("_")[2][:-4] for n in names],
            "class_id": 0,
            "fold": pd.NA,
            "group": names,
            "content_hash": "",
        }
    )
    hints = {h["position"]: h for h in group_hints(m)}
    assert set(hints) == {0, 1}
    assert hints[0]["n_groups"] == 8 and hints[1]["n_groups"] == 3
    assert list(apply_group_pattern(names[:2], hints[0]["pattern"])) == ["spk01", "spk01"]
    assert list(apply_group_pattern(["spk02_take3_cow.wav", "odd.wav"], hints[1]["pattern"])) == ["take3", "odd.wav"]


def test_audit_proposes_the_planted_speaker_token(tmp_path):
    m, clips = _speaker_set(tmp_path, seed=3, own_pitch=True)
    X = compute("engineered", clips, SR)
    result = audit(m, clips, SR, X, seed=0)
    assert result.split == "per-file" and result.leak
    assert apply_group_pattern(["spk05_take1_dog.wav"], result.proposed_pattern)[0] == "spk05"
    assert result.gap_points > 25 and result.per_file_accuracy > 0.9
    sources = result.candidates["source"].tolist()
    assert sources[0] == "file-name token 1" and "file-name token 2" in sources  # the take token is measured too
    take = result.candidates.set_index("source").loc["file-name token 2"]
    assert take["gap_points"] < result.gap_points - 20
    assert "accuracy drops from" in result.verdict and result.proposed_pattern in result.verdict
    assert result.tags()["soundflow.audit.group_pattern"] == result.proposed_pattern
    # leak_gap, the building block, agrees on the direction with the speaker groups
    gap = leak_gap(
        X,
        m["class_id"].to_numpy(),
        m["recording_id"].to_numpy(),
        apply_group_pattern(m["path"], result.proposed_pattern),
        k=4,
        seed=1,
    )
    assert gap["accuracy_a"] - gap["accuracy_b"] > 0.25 and gap["significant"]
    # once the speaker is given as the group, the same audit finds the split sound and proposes nothing
    given = audit(m.assign(group=apply_group_pattern(m["path"], result.proposed_pattern)), clips, SR, X, seed=0)
    assert given.split == "given groups" and not given.leak and given.proposed_pattern == ""
    assert given.gap_points > 25 and "keep using them" in given.verdict


def test_audit_no_false_alarm_when_speakers_only_colour_the_sound(tmp_path):
    m, clips = _speaker_set(tmp_path, seed=4, own_pitch=False)
    result = audit(m, clips, SR, compute("engineered", clips, SR), seed=0)
    assert not result.leak and result.proposed_pattern == ""
    assert result.duplicates.empty
    assert (result.candidates["gap_points"] <= result.candidates["noise_points"]).all()
    assert result.verdict.startswith("no leak found")


def _padded(recordings: list[np.ndarray], labels, groups, *, sr: int, window_s: float):
    """(manifest, clips) of recordings zero-padded into one window each, as the ingestion pads them: one
    segment per recording, with its duration_s (the content before the padding)."""
    window = round(window_s * sr)
    clips = np.zeros((len(recordings), window), np.float32)
    for i, y in enumerate(recordings):
        clips[i, : min(len(y), window)] = y[:window]
    ids = [f"rec{i:04d}" for i in range(len(recordings))]
    classes = sorted(set(labels))
    m = pd.DataFrame(
        {
            "path": [f"/gen/{g}_{i}_{c}.wav" for i, g, c in zip(ids, groups, labels)],
            "recording_id": ids,
            "label": labels,
            "class_id": [classes.index(c) for c in labels],
            "fold": pd.array([pd.NA] * len(ids), dtype="Int64"),
            "group": groups,
            "content_hash": [f"h{i}" for i in range(len(ids))],
            "duration_s": [min(len(y), window) / sr for y in recordings],
        }
    )
    return m, clips


@pytest.fixture(scope="module")
def spoken_digits():
    """The issue's case, smaller: 1,500 distinct word-like recordings of 0.1-2.3 s at 8 kHz (bench/audit.py's
    generator), ten labels, six speakers given as groups, zero-padded into 3 s windows; plus 15 copies of each
    kind (re-encoded, 16-bit, gain-changed, trimmed, shifted, resampled), each under another speaker."""
    rng = np.random.default_rng(3)
    n, n_copies, speakers = 1500, 15, [f"spk{i}" for i in range(6)]
    recordings = [bench.word_like(rng) for _ in range(n)]
    labels = [f"d{i % 10}" for i in range(n)]
    groups = [speakers[i % 6] for i in range(n)]
    planted = {}
    for kind in bench.COPY_KINDS:
        for source in rng.choice(n, n_copies, replace=False):
            planted[len(recordings)] = (int(source), kind)
            recordings.append(bench.copy_of(recordings[source], kind, rng))
            labels.append(labels[source])
            groups.append(speakers[(source + 1) % 6])
    m, clips = _padded(recordings, labels, groups, sr=8000, window_s=3.0)
    X = rng.standard_normal((len(m), 8)).astype(np.float32)
    return m, audit(m, clips, 8000, X, seed=0), planted


def test_audit_finds_no_near_duplicates_among_distinct_short_clips(spoken_digits):
    m, result, _ = spoken_digits
    n_distinct = 1500
    ids = set(m["recording_id"][:n_distinct])
    false = result.duplicates[result.duplicates["recording_a"].isin(ids) & result.duplicates["recording_b"].isin(ids)]
    assert false.empty, f"{len(false)} false pairs among {n_distinct} distinct clips"
    md = summary_markdown(result)
    assert "over each segment's sound" in md and "checked in bench/audit.py" in md  # says what a near pair is


@pytest.mark.parametrize("kind", bench.COPY_KINDS)
def test_audit_finds_every_copy_of_a_short_clip(spoken_digits, kind):
    m, result, planted = spoken_digits
    ids = m["recording_id"].to_numpy()
    found = {frozenset(p) for p in result.duplicates[["recording_a", "recording_b"]].to_numpy()}
    pairs = [frozenset((ids[s], ids[c])) for c, (s, k) in planted.items() if k == kind]
    missed = [sorted(p) for p in pairs if p not in found]
    assert not missed, f"{kind}: {len(missed)} of {len(pairs)} copies missed"
    assert result.leak and result.split == "given groups"


def test_short_sound_fingerprint_ignores_padding_and_where_it_sits(rng):
    """A 0.4 s word zero-padded into a 5 s window matches itself 0.3 s later, quieter, and with the window
    ending right after it; a segment that fills its window (or nearly) is fingerprinted as a whole, as before."""
    sr = 8000
    word = bench.word_like(rng)[: int(0.4 * sr)]
    clips = np.zeros((3, 5 * sr), np.float32)
    clips[0, : len(word)] = word
    clips[1, int(0.3 * sr) : int(0.3 * sr) + len(word)] = 0.1 * word
    clips[2, : len(word)] = word
    durations = [len(word) / sr, 0.3 + len(word) / sr, 5.0]
    fp = fingerprints(clips, sr, duration_s=durations)
    assert fp[0] @ fp[1] > 0.99
    np.testing.assert_array_equal(fp[2], fingerprints(clips[2:], sr)[0])  # a full window: no change
    np.testing.assert_array_equal(fp[2], fingerprints(clips[2:], sr, duration_s=[4.97])[0])  # 30 ms short: same
    assert fp[0] @ fp[2] < 0.7  # the word alone vs the word at the start of a 5 s window


def _esc10(tmp_path_factory) -> tuple[pd.DataFrame, np.ndarray]:
    """ESC-10 through the ingestion."""
    if not ESC10.is_dir():
        pytest.skip(f"ESC-10 not found at {ESC10}")
    from tasks.data.ingest import build
    from tasks.data.manifest import read_manifest

    data = build(ESC10, dataset="esc10", sr=22050, out_dir=tmp_path_factory.mktemp("esc10"))
    return read_manifest(data.manifest), np.load(data.clips)


@pytest.fixture(scope="module")
def esc10(tmp_path_factory):
    return _esc10(tmp_path_factory)


def _check_clean(result: AuditResult) -> None:
    assert result.split == "given folds"
    crossing = result.duplicates[result.duplicates["crosses_fold"].fillna(True).astype(bool)]
    assert len(crossing) <= 2, crossing[["path_a", "path_b", "similarity"]]
    assert not result.leak or len(crossing), result.verdict
    assert result.gap_points < 5, result.verdict
    assert "drops" not in result.verdict
    assert "## Leakage audit" in summary_markdown(result)


def test_esc10_subset_official_folds_no_false_alarm(esc10):
    m, clips = esc10
    keep = np.flatnonzero(m["class_id"].isin([0, 1, 4, 6]).to_numpy())
    sub = m.iloc[keep].reset_index(drop=True)
    sub["class_id"] = pd.factorize(sub["class_id"], sort=True)[0]
    result = audit(sub, clips[keep], 22050, compute("engineered", clips[keep], 22050), seed=0)
    _check_clean(result)


@pytest.mark.slow
def test_esc10_official_folds_no_false_alarm(esc10):
    m, clips = esc10
    result = audit(m, clips, 22050, compute("engineered", clips, 22050), seed=0)
    _check_clean(result)
    assert len(result.candidates) == 1 and result.proposed_pattern == ""

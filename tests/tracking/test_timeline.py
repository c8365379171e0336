"""Scores on a timeline (score_windows and predict's "windows" output) on real files with tone bursts at known times."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow.exceptions import MlflowException

from tasks.config import tracking_uri
from tasks.errors import AudioDecodeError
from tasks.evaluation.ensembles import Combiner
from tasks.features.representations import compute
from tasks.models.classical import make_classical
from tasks.tracking import pyfunc as serving
from tasks.tracking import runs as tracking
from tasks.tracking.pyfunc import AudioClassifier
from tasks.tracking.timeline import score_windows

SR = 16000
CLASSES = ["220", "3 kHz", "ruído"]  # a digit name, a space, non-ASCII: the windows output names columns by them
WINDOW_S = 1.0
BURSTS = {"3 kHz": (5.0, 8.0), "220": (15.0, 18.0)}  # class -> (start, end) in the 30.25-s recording


def _sound(kind: str, n: int, sr: int, rng: np.random.Generator, level: float) -> np.ndarray:
    """A 220 Hz or 3 kHz tone (jittered 3%) over some background noise, or white noise, peak `level`."""
    noise = rng.uniform(-1, 1, n)
    if kind == "ruído":
        return level * noise
    f = (220.0 if kind == "220" else 3000.0) * rng.uniform(0.97, 1.03)
    tone = np.sin(2 * np.pi * f * np.arange(n) / sr + rng.uniform(0, 2 * np.pi))
    return level * (tone + rng.uniform(0.0, 0.25) * noise)


@pytest.fixture(scope="module")
def fitted() -> dict:
    """Logistic regressions on engineered features of 1-s synthetic clips recorded at 11-22 kHz: one at the model's
    16 kHz, one at its own 8 kHz (like a BirdNET member), and the config they share."""
    rng = np.random.default_rng(3)
    clips, y = [], []
    for c, kind in enumerate(CLASSES):
        for _ in range(12):
            rate = int(rng.choice([11025, 16000, 22050]))
            clip = _sound(kind, rate, rate, rng, rng.uniform(0.02, 0.5)).astype(np.float32)
            clips.append(serving.prepare_waveform(clip, rate, sr=SR)[:SR])
            y.append(c)
    clips = np.stack(clips)
    low = np.stack([serving.prepare_waveform(x, SR, sr=8000) for x in clips])
    est = make_classical("logreg", seed=0).fit(compute("engineered", clips, SR, n_jobs=1), y)
    est8k = make_classical("logreg", seed=0).fit(compute("engineered", low, 8000, n_jobs=1), y)
    config = {"model_name": "soundflow-timeline", "class_names": CLASSES, "sample_rate": SR, "window_s": WINDOW_S}
    return {"estimator": est, "estimator8k": est8k, "config": config}


@pytest.fixture(scope="module")
def model(fitted) -> AudioClassifier:
    """One member, built in-process as load_context would."""
    member = {"name": "logreg", "features": "engineered", "feature_opts": {}}
    return AudioClassifier([fitted["estimator"]], Combiner("average"), {**fitted["config"], "members": [member]})


@pytest.fixture(scope="module")
def two_rates(fitted) -> AudioClassifier:
    """Two members averaged, the second reading the same windows at its own 8 kHz."""
    members = [
        {"name": "logreg", "features": "engineered", "feature_opts": {}},
        {"name": "logreg-8k", "features": "engineered", "feature_opts": {}, "sample_rate": 8000},
    ]
    return AudioClassifier(
        [fitted["estimator"], fitted["estimator8k"]], Combiner("average"), {**fitted["config"], "members": members}
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """bursts.wav: 30.25 s at 16 kHz, background noise with a 3 kHz burst at 5-8 s and a 220 Hz burst at 15-18 s;
    stereo.flac: 12.6 s of noise and a 220 Hz burst (3-6 s), stereo at 11025 Hz; burst.mp3: the same, 12 s mono
    at 22050 Hz; short.ogg: 0.4 s at 22050 Hz;
    one_window.wav: exactly one window; silent.wav and notes.wav: unusable."""
    d = tmp_path_factory.mktemp("timeline")
    rng = np.random.default_rng(5)
    y = 0.05 * rng.uniform(-1, 1, round(30.25 * SR))
    for kind, (a, b) in BURSTS.items():
        y[round(a * SR) : round(b * SR)] += _sound(kind, round((b - a) * SR), SR, rng, 0.4)
    sf.write(d / "bursts.wav", y.astype(np.float32), SR, subtype="FLOAT")
    rate = 11025
    s = 0.05 * rng.uniform(-1, 1, round(12.6 * rate))
    s[3 * rate : 6 * rate] += _sound("220", 3 * rate, rate, rng, 0.4)
    sf.write(d / "stereo.flac", np.stack([s, 0.8 * s], axis=1), rate)
    m = 0.05 * rng.uniform(-1, 1, 12 * 22050)
    m[3 * 22050 : 6 * 22050] += _sound("220", 3 * 22050, 22050, rng, 0.4)
    sf.write(d / "burst.mp3", m.astype(np.float32), 22050)
    sf.write(d / "short.ogg", _sound("3 kHz", round(0.4 * 22050), 22050, rng, 0.3), 22050)
    sf.write(d / "one_window.wav", _sound("3 kHz", SR, SR, rng, 0.3).astype(np.float32), SR)
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR)
    (d / "notes.wav").write_text("not audio")
    return {p.name: str(p) for p in d.iterdir()}


def _class_columns(frame: pd.DataFrame) -> np.ndarray:
    return frame[CLASSES].to_numpy()


def test_windows_follow_the_hop_and_the_last_one_is_partial(model, files):
    out = score_windows(model, files["bursts.wav"])
    assert list(out.columns) == ["file", "start_s", "end_s", *CLASSES, "loudness_db", "peak_db", "floor_db", "partial"]
    assert (out["file"] == files["bursts.wav"]).all()
    assert len(out) == 31  # 30 full windows every 1 s (the default hop for a 1-s window), then 30.0-30.25 s
    np.testing.assert_allclose(out["start_s"], np.arange(31.0))
    np.testing.assert_allclose(out["end_s"], [*np.arange(1.0, 31.0), 30.25])
    assert out["partial"].tolist() == [False] * 30 + [True]
    np.testing.assert_allclose(_class_columns(out).sum(axis=1), 1.0, rtol=1e-6)
    assert out.dtypes["partial"] == np.dtype(bool) and all(out.dtypes[c] == np.float64 for c in CLASSES)

    half = score_windows(model, files["bursts.wav"], hop_s=0.5)
    assert len(half) == 60  # 59 full windows (0 ... 29 s), then 29.5-30.25 s
    np.testing.assert_allclose(half["start_s"], np.arange(60) * 0.5)
    assert half["partial"].tolist() == [False] * 59 + [True] and half["end_s"].iloc[-1] == 30.25
    sparse = score_windows(model, files["bursts.wav"], hop_s=2.5)  # a hop longer than the window leaves gaps
    np.testing.assert_allclose(sparse["start_s"], np.arange(13) * 2.5)
    assert sparse["partial"].tolist() == [False] * 12 + [True]  # 30.0-30.25 s: audio after 27.5-28.5 s
    in_pieces = score_windows(model, files["bursts.wav"], hop_s=2.5, chunk_s=0.37)  # some pieces hold no window
    pd.testing.assert_frame_equal(in_pieces, sparse)


def test_a_tone_burst_scores_highest_in_the_windows_inside_it(model, files):
    out = score_windows(model, files["bursts.wav"], hop_s=0.5)
    best = np.asarray(CLASSES)[_class_columns(out).argmax(axis=1)]
    quiet = np.ones(len(out), bool)
    for a, b in BURSTS.values():
        quiet &= (out["end_s"] <= a) | (out["start_s"] >= b)
    for kind, (a, b) in BURSTS.items():
        inside = (out["start_s"] >= a) & (out["end_s"] <= b)
        assert inside.sum() == 2 * (b - a) - 1 and (best[inside] == kind).all(), out[inside]
        assert (out.loc[inside, "loudness_db"] > out.loc[quiet, "loudness_db"].max() + 10).all()
        assert (out.loc[inside, "peak_db"] > out.loc[quiet, "peak_db"].max() + 10).all()
    assert (out["floor_db"] <= out["loudness_db"] + 1e-4).all() and (out["loudness_db"] <= out["peak_db"] + 1e-4).all()
    assert (best[quiet] == "ruído").mean() > 0.9


@pytest.mark.parametrize(("name", "atol"), [("bursts.wav", 1e-7), ("stereo.flac", 1e-7), ("burst.mp3", 1e-4)])
def test_reading_in_chunks_gives_the_whole_file_scores(two_rates, files, name, atol):
    """Also for the member reading at its own 8 kHz (resampled as one stream across the chunks). An mp3 decoded
    after a seek differs by float32 rounding (~1e-7) from one decoded from the start, which the features amplify."""
    whole = score_windows(two_rates, files[name], hop_s=0.75, chunk_s=1e6)
    for chunk_s in (7.0, 0.37):  # chunks shorter than a window, too
        chunked = score_windows(two_rates, files[name], hop_s=0.75, chunk_s=chunk_s)
        pd.testing.assert_frame_equal(chunked.drop(columns=CLASSES), whole.drop(columns=CLASSES))
        np.testing.assert_allclose(_class_columns(chunked), _class_columns(whole), rtol=1e-6, atol=atol)


def test_an_odd_rate_stereo_file_and_a_file_shorter_than_a_window(model, files):
    out = score_windows(model, files["stereo.flac"])
    np.testing.assert_allclose(out["start_s"], np.arange(13.0))
    assert out["partial"].tolist() == [False] * 12 + [True] and out["end_s"].iloc[-1] == pytest.approx(12.6)
    best = np.asarray(CLASSES)[_class_columns(out).argmax(axis=1)]
    assert (best[3:6] == "220").all()
    short = score_windows(model, files["short.ogg"])
    assert len(short) == 1 and short["partial"].item() and short["start_s"].item() == 0.0
    assert short["end_s"].item() == pytest.approx(0.4)


def test_window_scores_match_predict_on_a_one_window_file(two_rates, files):
    """A file exactly one window long is one window for predict too: the same probabilities, own rates included."""
    out = score_windows(two_rates, files["one_window.wav"])
    assert len(out) == 1 and not out["partial"].item() and out["end_s"].item() == WINDOW_S
    clip = two_rates.predict(None, [files["one_window.wav"]])
    np.testing.assert_allclose(_class_columns(out)[0], clip[[f"p_{c}" for c in CLASSES]].to_numpy()[0], rtol=1e-6)


def test_unusable_files_and_options_say_what_is_wrong(model, files):
    with pytest.raises(AudioDecodeError, match="all-silent"):
        score_windows(model, files["silent.wav"])
    with pytest.raises(AudioDecodeError, match="notes.wav"):
        score_windows(model, files["notes.wav"])
    with pytest.raises(ValueError, match="hop_s"):
        score_windows(model, files["bursts.wav"], hop_s=0.0)
    with pytest.raises(MlflowException, match="'clips'.*'windows'"):
        model.predict(None, [files["bursts.wav"]], params={"output": "frames"})


def test_predict_windows_output_scores_every_row_and_reports_a_bad_one(model, files):
    wave, rate = sf.read(files["stereo.flac"], dtype="float32")
    frame = pd.DataFrame(
        {
            "path": [files["short.ogg"], files["notes.wav"], None],
            "waveform": [None, None, wave.tolist()],
            "sample_rate": [None, None, rate],
        }
    )
    out = model.predict(None, frame, params={"output": "windows", "hop_s": 0.5})
    assert list(out.columns) == [
        "file",
        "start_s",
        "end_s",
        *CLASSES,
        "loudness_db",
        "peak_db",
        "floor_db",
        "partial",
        "error",
    ]
    assert out["file"].tolist() == [files["short.ogg"], files["notes.wav"]] + ["row 2 (waveform)"] * 25
    assert out["error"].iloc[0] == "" and "notes.wav" in out["error"].iloc[1] and (out["error"].iloc[2:] == "").all()
    assert np.isnan(_class_columns(out)[1]).all() and not out["partial"].iloc[1]
    by_path = score_windows(model, files["stereo.flac"], hop_s=0.5)
    np.testing.assert_allclose(_class_columns(out)[2:], _class_columns(by_path), atol=1e-5)
    clips = model.predict(None, frame)  # the default output is unchanged
    assert len(clips) == 3 and "label" in clips and "p_220" in clips


def test_a_logged_model_serves_windows_through_mlflow(fitted, files, tmp_path):
    exp = tracking.client().create_experiment("test-timeline", artifact_location=(tmp_path / "artifacts").as_uri())
    with tracking.run(exp, name="timeline") as run_id:
        info = serving.log_audio_model(
            run_id, fitted["estimator"], config={**fitted["config"], "features": "engineered"}
        )
    params = {p.name: p.default for p in info.signature.params.params}
    assert params == {"output": "clips", "hop_s": 0.0}
    with serving.fluent_store(tracking_uri()):
        loaded = mlflow.pyfunc.load_model(info.model_uri)
    frame = pd.DataFrame({"path": [files["bursts.wav"], files["notes.wav"]]})
    out = loaded.predict(frame, params={"output": "windows"})
    assert len(out) == 32 and out["error"].iloc[:31].eq("").all() and "notes.wav" in out["error"].iloc[31]
    np.testing.assert_allclose(out["start_s"].iloc[:31], np.arange(31.0))
    clips = loaded.predict(frame)
    assert clips["label"].iloc[0] in CLASSES and "notes.wav" in clips["error"].iloc[1]

"""Representations on synthetic signals whose answers are known: a sine's band, a click's column, a ramp's samples."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.figure import Figure

from tasks.errors import SoundflowError
from tasks.features import representations as F


def _sine(freq_hz: float, sr: int, duration_s: float = 5.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * duration_s)) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _click(at_s: float, sr: int, duration_s: float = 5.0) -> np.ndarray:
    y = np.zeros(int(sr * duration_s), np.float32)
    y[int(at_s * sr) : int(at_s * sr) + 32] = 0.9
    return y


@pytest.mark.parametrize("sr, step", [(22050, 50), (44100, 100)])
def test_raw_vector_takes_every_1_441_s_of_the_first_2_s(sr, step):
    y = np.linspace(-1, 1, 5 * sr, dtype=np.float32)
    v = F.raw_vector(y, sr)
    assert v.shape == (882,) and v.dtype == np.float32
    np.testing.assert_allclose(v, (y[: 882 * step : step] + 1) / 2, atol=1e-6)
    assert 0 <= v.min() and v.max() <= 1


def test_raw_vector_spreads_over_a_window_shorter_than_2_s():
    y = np.linspace(-1, 1, 22050, dtype=np.float32)  # a 1-s window: no value of the vector is padding
    v = F.raw_vector(y, 22050)
    assert v[0] == 0.0 and v[-1] > 0.99 and np.all(np.diff(v) > 0)


@pytest.mark.parametrize("sr", [16000, 22050])
def test_engineered_vector_tracks_pitch_and_loudness(sr):
    low, high, quiet = (
        F.engineered_vector(y, sr) for y in (_sine(500, sr, 2), _sine(3000, sr, 2), _sine(500, sr, 2, amp=0.05))
    )
    assert low.shape == (186 + 5 * 128 + 32 * 12,) and low.dtype == np.float32 and np.all(np.isfinite(low))
    centroid, rms = 80, 92  # row order: mfcc 40, delta 40, centroid, bandwidth, rolloff, flatness, contrast 7, zcr, rms
    assert abs(low[centroid] - 500) < 100 and abs(high[centroid] - 3000) < 300
    assert low[rms] > 5 * quiet[rms]
    band_means = slice(186, 186 + 128)  # then the log-mel band statistics: the loudest band follows the pitch
    assert np.argmax(high[band_means]) > np.argmax(low[band_means]) + 20


def test_band_statistics_of_a_steady_and_a_fluctuating_band():
    t = np.arange(200)
    mel_db = np.vstack([np.full(200, -20.0), -40 + 10 * np.sin(t / 3)])
    mean, std, p10, p90, delta = F.band_statistics(mel_db).reshape(5, 2)
    np.testing.assert_allclose(mean, [-20, -40], atol=0.5)
    assert std[0] == 0 and 6 < std[1] < 8 and p10[1] < -45 < -35 < p90[1]
    assert delta[0] < 1e-9 and delta[1] > 1


@pytest.mark.parametrize("rate_hz", [2.0, 8.0, 20.0])
def test_modulation_spectrum_peaks_at_the_amplitude_modulation_rate(rate_hz):
    sr = 22050
    t = np.arange(5 * sr) / sr
    y = (0.5 * (1 + 0.9 * np.sin(2 * np.pi * rate_hz * t)) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    m = F.modulation_spectrum(y, sr).reshape(32, 12)
    edges = np.geomspace(0.5, 40, 13)
    band = int(np.argmin(np.abs(F.librosa.mel_frequencies(34, fmax=sr / 2)[1:-1] - 1000)))  # the carrier's band
    assert edges[np.argmax(m[band])] <= rate_hz < edges[np.argmax(m[band]) + 1]
    steady = F.modulation_spectrum(_sine(1000, sr), sr).reshape(32, 12)
    assert m[band].max() > steady[band].max() + 3  # log magnitude: a steady tone barely fluctuates


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 4000.0])
def test_logmel_peak_band_follows_the_sine(freq_hz):
    sr = 22050
    lm = F.logmel(_sine(freq_hz, sr, 2), sr)
    assert lm.shape == (64, 1 + 2 * sr // 1024) and lm.dtype == np.float32
    centres = F.librosa.mel_frequencies(n_mels=66, fmin=0, fmax=sr / 2)[1:-1]
    peak = int(np.argmax(lm.mean(axis=1)))
    assert abs(np.log2(centres[peak] / freq_hz)) < 0.3


def test_logmel_deltas_channels_and_stationary_delta():
    sr = 22050
    y = _sine(1000, sr, 2)
    cube = F.logmel_deltas(y, sr, n_mels=32)
    assert cube.shape == (32, 1 + 2 * sr // 1024, 3) and cube.dtype == np.float32
    np.testing.assert_array_equal(cube[..., 0], F.logmel(y, sr, n_mels=32))
    assert np.abs(cube[:, 10:-10, 1]).max() < 0.5  # a steady tone barely changes


def test_pcen_fades_a_steady_tone_and_keeps_its_onset():
    sr = 22050
    y = np.concatenate([np.zeros(sr, np.float32), _sine(1000, sr, 3)])  # silence, then a tone from t = 1 s
    P = F.pcen(y, sr)
    assert P.shape == (64, 1 + len(y) // 1024) and P.dtype == np.float32
    band = int(np.argmax(P.sum(axis=1)))
    onset = sr // 1024 + 1
    steady = P[band, -20:].mean()
    assert P[band, onset - 1 : onset + 3].max() > 3 * steady  # the onset stands out of the tone it starts
    lm = F.logmel(y, sr)
    assert lm[band, onset - 1 : onset + 3].max() < lm[band, -20:].mean() + 6  # where the log-mel stays level
    loud, quiet = F.pcen(10 * y, sr), F.pcen(y / 10, sr)
    assert abs(loud[band, -20:].mean() - quiet[band, -20:].mean()) < 0.5 * steady  # and loudness-free


def test_mfcc_shape_and_loudness_in_c0():
    sr = 22050
    loud, quiet = F.mfcc(_sine(800, sr, 1), sr), F.mfcc(_sine(800, sr, 1, amp=0.01), sr)
    assert loud.shape == (40, 1 + sr // 512) and loud.dtype == np.float32
    assert loud[0].mean() > quiet[0].mean() + 20


@pytest.mark.parametrize("sr", [22050, 44100])
def test_book_image_low_sine_bottom_high_sine_top(sr):
    low, high = F.book_image(_sine(sr / 40, sr), sr), F.book_image(_sine(sr / 2.5, sr), sr)
    for img in (low, high):
        assert img.shape == (100, 160, 3) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1
    brightness = lambda img: img.sum(axis=(1, 2))  # noqa: E731
    assert np.argmax(brightness(low)) >= 90  # ~1/20 of Nyquist: bottom rows
    assert np.argmax(brightness(high)) <= 25  # ~4/5 of Nyquist: top rows


@pytest.mark.parametrize("at_s", [1.0, 2.5, 4.0])
def test_book_image_click_lights_its_column(at_s):
    sr = 22050
    img = F.book_image(_click(at_s, sr), sr)
    assert abs(int(np.argmax(img.sum(axis=(0, 2)))) - at_s / 5 * 160) <= 1


def test_book_image_silence_is_black_and_full_scale_is_bright():
    sr = 22050
    assert F.book_image(np.zeros(5 * sr, np.float32), sr).max() == 0
    assert F.book_image(_sine(2000, sr, amp=1.0), sr).max() > 0.9


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed (apt-get install sox)")
def test_book_image_matches_the_sox_png_cropped_and_resized(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    sf = pytest.importorskip("soundfile")
    sr = 44100
    rng = np.random.default_rng(0)
    y = (_sine(700, sr, amp=0.3) + _click(2.0, sr) + 0.01 * rng.standard_normal(5 * sr)).astype(np.float32)
    wav, png = tmp_path / "x.wav", tmp_path / "x.png"
    sf.write(wav, y, sr, subtype="PCM_16")
    subprocess.run(["sox", str(wav), "-n", "spectrogram", "-o", str(png)], check=True)
    crop = np.asarray(PIL.open(png).convert("RGB"))[42:542, 58:858]
    book = np.asarray(PIL.fromarray(crop).resize((160, 100)), np.float32) / 255
    ours = F.book_image(y, sr)
    assert np.abs(book - ours).mean() < 0.02
    assert np.corrcoef(book.ravel(), ours.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("kind", ["raw", "logmel", "book_image"])
def test_compute_keeps_leading_axes_and_matches_per_clip(kind, rng):
    sr = 8000
    clips = (0.3 * rng.standard_normal((2, 3, sr))).astype(np.float32)
    one, two = F.compute(kind, clips, sr, n_jobs=1), F.compute(kind, clips, sr, n_jobs=2)
    single = F.REPRESENTATIONS[kind](clips[1, 2], sr)
    assert one.shape == (2, 3) + single.shape and one.dtype == np.float32
    np.testing.assert_array_equal(one, two)
    # compute runs one BLAS thread per worker; a direct call may use more, which sums in another order (float32)
    np.testing.assert_allclose(one[1, 2], single, rtol=1e-5, atol=1e-6)


def test_compute_passes_options_and_rejects_unknown_kinds(rng):
    clips = (0.3 * rng.standard_normal((2, 8000))).astype(np.float32)
    assert F.compute("logmel", clips, 8000, n_mels=16).shape[1] == 16
    with pytest.raises(SoundflowError, match="unknown representation"):
        F.compute("wavelets", clips, 8000)


def test_features_file_is_cached_by_name_and_options(tmp_path, rng):
    sr = 8000
    clips_path = tmp_path / "clips-abc.npy"
    np.save(clips_path, (0.3 * rng.standard_normal((3, 2, sr))).astype(np.float32))
    first = F.features_file(clips_path, "logmel", sr, {"n_mels": 16}, tmp_path / "features")
    stamp = first.stat().st_mtime_ns
    again = F.features_file(clips_path, "logmel", sr, {"n_mels": 16}, tmp_path / "features")
    other = F.features_file(clips_path, "logmel", sr, {"n_mels": 24}, tmp_path / "features")
    assert again == first and again.stat().st_mtime_ns == stamp and other != first
    array = np.load(first)
    assert array.shape[:3] == (3, 2, 16)
    np.testing.assert_array_equal(array[2, 1], F.logmel(np.load(clips_path)[2, 1], sr, n_mels=16))
    assert not [p for p in (tmp_path / "features").iterdir() if p.name.startswith(".")]  # no temp files left


def test_features_task_returns_the_path(tmp_path, rng):
    clips_path = tmp_path / "clips-xyz.npy"
    np.save(clips_path, (0.3 * rng.standard_normal((2, 22050))).astype(np.float32))
    out = F.features_task.fn(str(clips_path), "raw", 22050, {}, str(tmp_path))
    assert out.startswith(str(tmp_path / "features")) and np.load(out).shape == (2, 882)


def test_example_grid_one_row_per_class(tmp_path, rng):
    images = rng.random((12, 10, 16, 3)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    fig = F.example_grid(images, labels, ["rain", "dog", "clock_tick", "sneezing"], per_class=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 8
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["rain", "dog", "clock_tick", "sneezing"]
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000


@pytest.mark.parametrize("sr, duration_s", [(8000, 0.5), (8000, 0.1), (11025, 1.0), (22050, 0.3)])
def test_engineered_vector_of_short_or_low_rate_audio_has_its_usual_length(sr, duration_s, rng):
    """Short windows (--window-s auto on short clips) and 8-kHz data: same 1,210 finite values, no error."""
    y = (0.1 * rng.standard_normal(round(sr * duration_s))).astype(np.float32)
    v = F.REPRESENTATIONS["engineered"](y, sr)
    assert v.shape == (1210,) and np.isfinite(v).all()


def test_spectral_contrast_is_librosas_where_librosa_has_every_band(rng):
    import librosa

    y = (0.1 * rng.standard_normal(22050)).astype(np.float32)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    np.testing.assert_array_equal(F.spectral_contrast(mag, 22050), librosa.feature.spectral_contrast(S=mag, sr=22050))
    low = F.spectral_contrast(np.abs(librosa.stft(y[:8000], n_fft=2048, hop_length=512)), 8000)
    assert low.shape[0] == 7 and (low[5] == 0).all() and (low[4] != 0).any()  # the band above 4 kHz is left out

"""load_audio converts odd-but-valid files and rejects broken ones with a reason; written as real files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tasks.data.audio import SILENCE_PEAK, fix_length, load_audio, load_checked, probe
from tasks.errors import AudioDecodeError


def _sine(freq_hz: float, *, sr: int, duration_s: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * duration_s)) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("sr_in", [8000, 44100, 48000])
@pytest.mark.parametrize("duration_in_s", [3.0, 5.0, 7.0])
def test_wav_converted_to_rate_and_length(tmp_path, sr_in, duration_in_s):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(440, sr=sr_in, duration_s=duration_in_s), sr_in)
    y = load_audio(path, sr=16000, duration_s=5.0)
    assert y.dtype == np.float32 and y.shape == (80000,)
    kept = min(duration_in_s, 5.0)
    assert _peak_hz(y[: round(16000 * kept)], 16000) == pytest.approx(440, abs=2)
    assert np.abs(y[: round(16000 * kept) - 100]).max() == pytest.approx(0.5, abs=0.02)
    assert np.all(y[round(16000 * kept) + 50 :] == 0)  # zero padding after a short clip


def test_stereo_is_averaged(tmp_path):
    left = _sine(300, sr=16000, duration_s=1.0, amp=0.6)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 16000)
    y = load_audio(path, sr=16000, duration_s=None)
    np.testing.assert_allclose(y, 0.75 * left, atol=1e-4)
    assert probe(path)["channels"] == 2


def test_8bit_pcm_and_ogg_are_read(tmp_path):
    ref = _sine(500, sr=22050, duration_s=1.0)
    sf.write(tmp_path / "u8.wav", ref, 22050, subtype="PCM_U8")
    sf.write(tmp_path / "a.ogg", ref, 22050)
    for name, atol in (("u8.wav", 0.01), ("a.ogg", 0.05)):
        y = load_audio(tmp_path / name, sr=22050, duration_s=1.0)
        assert y.dtype == np.float32 and y.shape == (22050,)
        assert np.abs(y - ref).max() < atol, name
    assert probe(tmp_path / "u8.wav")["subtype"] == "PCM_U8"
    assert probe(tmp_path / "a.ogg")["subtype"] == "VORBIS"


def test_resampling_keeps_pitch(tmp_path):
    sf.write(tmp_path / "hi.wav", _sine(1000, sr=48000, duration_s=2.0), 48000)
    y = load_audio(tmp_path / "hi.wav", sr=8000, duration_s=2.0)
    assert y.shape == (16000,)
    assert _peak_hz(y, 8000) == pytest.approx(1000, abs=2)


def test_duration_none_keeps_everything(tmp_path):
    sf.write(tmp_path / "long.wav", _sine(200, sr=8000, duration_s=7.25), 8000)
    assert load_audio(tmp_path / "long.wav", sr=8000, duration_s=None).shape == (58000,)


def test_quiet_but_not_silent_is_kept(tmp_path):
    sf.write(tmp_path / "quiet.wav", _sine(200, sr=8000, duration_s=1.0, amp=1e-4), 8000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "quiet.wav", sr=8000, duration_s=1.0)).max() > SILENCE_PEAK


def test_probe_reports_header(tmp_path):
    sf.write(tmp_path / "p.wav", np.zeros((24000, 2), np.float32) + 0.1, 48000, subtype="PCM_24")
    assert probe(tmp_path / "p.wav") == {"sample_rate": 48000, "channels": 2, "duration_s": 0.5, "subtype": "PCM_24"}


def _write_bad(tmp_path, kind: str):
    """One broken file of the given kind; returns its path."""
    good = _sine(440, sr=8000, duration_s=1.0)
    if kind == "empty":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
    elif kind == "garbage":
        path = tmp_path / "garbage.wav"
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "truncated_wav":
        path = tmp_path / "cut.wav"
        sf.write(path, good, 8000)
        path.write_bytes(path.read_bytes()[:8000])
    elif kind == "truncated_ogg":
        path = tmp_path / "cut.ogg"
        sf.write(path, good, 8000)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated_quiet_ogg":  # silence first, then the sound: cut short, what is left is silent
        path = tmp_path / "cut_quiet.ogg"
        sf.write(path, np.concatenate([np.zeros(16000, np.float32), good]), 8000)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "silent":
        path = tmp_path / "zeros.wav"
        sf.write(path, np.zeros(8000, np.float32), 8000)
    elif kind in ("nan", "inf"):
        path = tmp_path / f"{kind}.wav"
        bad = good.copy()
        bad[100] = np.nan if kind == "nan" else np.inf
        sf.write(path, bad, 8000, subtype="FLOAT")
    elif kind == "missing":
        path = tmp_path / "nowhere.wav"
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("empty", "empty file"),
        ("garbage", "unreadable"),
        ("truncated_wav", "truncated"),
        ("truncated_ogg", "truncated"),
        ("truncated_quiet_ogg", "truncated"),
        ("silent", "all-silent"),
        ("nan", "non-finite"),
        ("inf", "non-finite"),
        ("missing", "cannot open"),
    ],
)
def test_bad_files_rejected_with_reason(tmp_path, kind, reason):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, sr=8000, duration_s=1.0)
    assert reason in info.value.reason
    assert str(path) in str(info.value)
    clip, meta, why = load_checked(path, sr=8000, duration_s=1.0)
    assert clip is None and meta is None and reason in why


def test_load_checked_returns_clip_and_probe(tmp_path):
    sf.write(tmp_path / "ok.wav", _sine(440, sr=8000, duration_s=2.0), 8000)
    clip, meta, why = load_checked(tmp_path / "ok.wav", sr=4000, duration_s=1.0)
    assert why is None and clip.shape == (4000,) and meta["sample_rate"] == 8000 and meta["duration_s"] == 2.0


@pytest.mark.parametrize("n, n_samples", [(10, 4), (10, 10), (3, 8), (0, 5)])
def test_fix_length(rng, n, n_samples):
    y = rng.standard_normal((2, n)).astype(np.float32)
    out = fix_length(y, n_samples=n_samples)
    assert out.shape == (2, n_samples) and out.dtype == np.float32
    kept = min(n, n_samples)
    np.testing.assert_array_equal(out[:, :kept], y[:, :kept])
    assert not out[:, kept:].any()


def test_bad_options_raise(tmp_path):
    sf.write(tmp_path / "ok.wav", _sine(440, sr=8000, duration_s=1.0), 8000)
    with pytest.raises(ValueError, match="sr"):
        load_audio(tmp_path / "ok.wav", sr=0)
    with pytest.raises(ValueError, match="duration_s"):
        load_audio(tmp_path / "ok.wav", sr=8000, duration_s=-1.0)

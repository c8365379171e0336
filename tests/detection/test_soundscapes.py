"""Synthetic soundscapes: Brownian background, event placement, SNRs measured back, determinism; 8 kHz clips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.detection.metrics import event_metrics, segment_metrics
from tasks.detection.soundscapes import BACKGROUND_RMS, background_only, brownian_noise, make_soundscape

SR = 8000


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


def _tone(*, hz: float = 440.0, tone_s: float = 1.0, pad_s: float = 0.5) -> np.ndarray:
    """A steady sine of tone_s with pad_s of silence on both sides."""
    t = np.arange(int(tone_s * SR)) / SR
    pad = np.zeros(int(pad_s * SR), np.float32)
    return np.concatenate([pad, np.sin(2 * np.pi * hz * t).astype(np.float32), pad])


def _noise_burst(*, burst_s: float = 0.3, pad_s: float = 0.4) -> np.ndarray:
    """White noise of burst_s between pad_s of silence."""
    burst = np.random.default_rng(7).uniform(-0.5, 0.5, int(burst_s * SR)).astype(np.float32)
    pad = np.zeros(int(pad_s * SR), np.float32)
    return np.concatenate([pad, burst, pad])


POOL = [(_tone(), "tone"), (_noise_burst(), "dog bark"), (_tone(hz=1000, tone_s=3.0, pad_s=0.2), "café")]


def test_brownian_noise_is_unit_rms_float32_and_brown():
    y = brownian_noise(10 * SR, rng=np.random.default_rng(0))
    assert y.dtype == np.float32 and len(y) == 10 * SR
    assert _rms(y) == pytest.approx(1.0, rel=1e-4) and abs(float(y.mean())) < 1e-4
    power = np.abs(np.fft.rfft(y)) ** 2
    hz = np.fft.rfftfreq(len(y), 1 / SR)
    assert power[(hz > 20) & (hz < 100)].mean() > 100 * power[hz > 1000].mean()  # falls about 6 dB per octave


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brownian_noise_does_not_drift(seed):
    y = brownian_noise(20 * SR, rng=np.random.default_rng(seed))
    levels = [_rms(part) for part in np.array_split(y, 4)]
    assert max(levels) < 1.5 * min(levels)
    assert all(abs(float(part.mean())) < 0.5 for part in np.array_split(y, 4))


def test_background_only_level_length_and_seed():
    y = background_only(2.5, sr=SR, rng=np.random.default_rng(3))
    assert y.dtype == np.float32 and len(y) == int(2.5 * SR)
    assert _rms(y) == pytest.approx(BACKGROUND_RMS, rel=1e-3)
    assert np.array_equal(y, background_only(2.5, sr=SR, rng=np.random.default_rng(3)))


@pytest.mark.parametrize("seed", range(6))
def test_soundscape_shape_and_events_table(seed):
    y, events = make_soundscape(POOL, sr=SR, duration_s=10.0, rng=np.random.default_rng(seed))
    assert y.dtype == np.float32 and len(y) == 10 * SR and np.abs(y).max() <= 1.0
    assert list(events.columns) == ["onset", "offset", "label", "snr_db"]
    assert 1 <= len(events) <= 9 and events["onset"].is_monotonic_increasing
    assert (events["onset"] >= 0).all() and (events["offset"] <= 10.0).all()
    assert (events["offset"] > events["onset"]).all() and (events["offset"] - events["onset"] <= 4.0 + 1e-9).all()
    assert set(events["label"]) <= {"tone", "dog bark", "café"}
    assert events["snr_db"].between(6, 30).all()


def test_soundscape_is_determined_by_the_seed():
    a = make_soundscape(POOL, sr=SR, duration_s=5.0, rng=np.random.default_rng(11))
    b = make_soundscape(POOL, sr=SR, duration_s=5.0, rng=np.random.default_rng(11))
    c = make_soundscape(POOL, sr=SR, duration_s=5.0, rng=np.random.default_rng(12))
    assert np.array_equal(a[0], b[0]) and a[1].equals(b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("clip", [POOL[0], POOL[1]], ids=["tone", "noise"])
def test_event_snr_measured_back_from_the_components(seed, clip):
    rng = np.random.default_rng(seed)
    background = background_only(6.0, sr=SR, rng=np.random.default_rng(100 + seed))
    y, events = make_soundscape([clip], sr=SR, duration_s=6.0, n_events=(1, 1), rng=rng, background=background)
    (event,) = events.itertuples(index=False)
    start, end = round(event.onset * SR), round(event.offset * SR)
    component = (y.astype(np.float64) - background)[start:end]
    snr = 20 * np.log10(_rms(component) / _rms(background))
    assert snr == pytest.approx(event.snr_db, abs=1.0)
    assert np.allclose(y[:start], background[:start]) and np.allclose(y[end:], background[end:])


def test_event_spans_only_the_sounding_part_of_a_padded_clip():
    _, events = make_soundscape(
        [POOL[0]], sr=SR, duration_s=8.0, n_events=(3, 3), event_duration_s=(3.0, 4.0), rng=np.random.default_rng(5)
    )
    assert np.allclose(events["offset"] - events["onset"], 1.0, atol=0.021)  # the 1-s tone, not its silence


def test_too_loud_mixture_is_scaled_down_keeping_the_snr():
    background = 0.5 * brownian_noise(4 * SR, rng=np.random.default_rng(1))
    y, events = make_soundscape(
        [POOL[0]],
        sr=SR,
        duration_s=4.0,
        n_events=(1, 1),
        snr_db=(30, 30),
        rng=np.random.default_rng(2),
        background=background,
    )
    assert np.abs(y).max() == pytest.approx(1.0)
    start, end = round(events["onset"][0] * SR), round(events["offset"][0] * SR)
    outside = np.r_[0:start, end : len(y)]
    scale = float(np.dot(y[outside], background[outside]) / np.dot(background[outside], background[outside]))
    assert scale < 1
    snr = 20 * np.log10(_rms(y[start:end] / scale - background[start:end]) / _rms(background))
    assert snr == pytest.approx(30.0, abs=1.0)


def test_no_events_is_the_background_alone():
    background = background_only(3.0, sr=SR, rng=np.random.default_rng(0))
    y, events = make_soundscape(POOL, sr=SR, duration_s=3.0, n_events=(0, 0), rng=np.random.default_rng(0))
    assert events.empty and list(events.columns) == ["onset", "offset", "label", "snr_db"]
    assert np.array_equal(y, background)


def test_events_table_scores_perfectly_against_itself():
    _, events = make_soundscape(POOL, sr=SR, duration_s=10.0, rng=np.random.default_rng(4))
    table = events.assign(file="s.wav")
    assert segment_metrics(table, table)["f1"] == 1.0 and event_metrics(table, table)["error_rate"] == 0.0


def test_bad_pool_or_background_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="silent"):
        make_soundscape([(np.zeros(SR, np.float32), "hush")], sr=SR, duration_s=2.0, rng=rng)
    with pytest.raises(ValueError, match="samples"):
        make_soundscape(POOL, sr=SR, duration_s=2.0, rng=rng, background=np.ones(10, np.float32))
    with pytest.raises(ValueError, match="events_pool"):
        make_soundscape([], sr=SR, duration_s=2.0, rng=rng)


def test_events_table_is_a_dataframe_sorted_by_onset():
    _, events = make_soundscape(POOL, sr=SR, duration_s=10.0, n_events=(9, 9), rng=np.random.default_rng(8))
    assert isinstance(events, pd.DataFrame) and len(events) == 9
    assert list(events.index) == list(range(9)) and events["onset"].is_monotonic_increasing

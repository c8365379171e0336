"""The four augmentations move known signals the right way; seeded copies are byte-identical and resumable."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.augment import copies as A

SR = 22050


def _sine(freq_hz: float, duration_s: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq_hz * np.arange(int(sr * duration_s)) / sr)).astype(np.float32)


def _peak_hz(y: np.ndarray, sr: int = SR) -> float:
    mid = y[len(y) // 4 : len(y) // 4 + 8192]
    return float(np.fft.rfftfreq(8192, 1 / sr)[np.argmax(np.abs(np.fft.rfft(mid * np.hanning(8192))))])


def _identity(**changes) -> dict:
    return {
        "shift_s": 0.0,
        "noise_level": 0.0,
        "noise": "zero_mean",
        "noise_seed": 0,
        "pitch_steps": 0.0,
        "stretch_rate": 1.0,
        **changes,
    }


def _small_clips(rng, n: int = 5, sr: int = 8000) -> np.ndarray:
    t = np.arange(sr // 2) / sr  # 0.5 s each
    return np.stack(
        [
            (0.4 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
            for i in range(n)
        ]
    )


def test_params_defaults_are_the_books_and_ranges_are_checked():
    p = A.AugmentParams()
    assert (p.n_copies, p.p_shift, p.max_shift_s, p.noise_level, p.pitch_steps, p.stretch_rate) == (
        19,
        0.5,
        0.125,
        0.1,
        (-10.0, 10.0),
        (0.5, 1.5),
    )
    for bad in (
        {"p_noise": 1.5},
        {"pitch_steps": (5, -5)},
        {"stretch_rate": (0, 1)},
        {"noise": "pink"},
        {"n_copies": 0},
    ):
        with pytest.raises(ValidationError):
            A.AugmentParams(**bad)


def test_copy_seed_depends_only_on_seed_clip_and_copy():
    draws = lambda *k: np.random.default_rng(A.copy_seed(*k)).random(3)  # noqa: E731
    np.testing.assert_array_equal(draws(7, 123456789, 4), draws(7, 123456789, 4))
    distinct = {tuple(draws(*k)) for k in [(7, 1, 0), (7, 1, 1), (7, 2, 0), (8, 1, 0), (7, 2**32 - 1, 0)]}
    assert len(distinct) == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draw_applies_each_change_about_half_the_time_within_its_range(seed):
    rng, p = np.random.default_rng(seed), A.AugmentParams()
    drawn = [A.draw(rng, p) for _ in range(600)]
    shifts = np.array([d["shift_s"] for d in drawn])
    steps = np.array([d["pitch_steps"] for d in drawn])
    rates = np.array([d["stretch_rate"] for d in drawn])
    noise = np.array([d["noise_level"] for d in drawn])
    for applied in (shifts != 0, steps != 0, rates != 1, noise > 0):
        assert 0.42 < applied.mean() < 0.58
    assert np.abs(shifts).max() <= 0.125 and -10 <= steps.min() and steps.max() <= 10
    assert 0.5 <= rates.min() and rates.max() <= 1.5 and set(noise) == {0.0, 0.1}


def test_draw_with_zero_probabilities_is_the_identity(rng):
    p = A.AugmentParams(p_shift=0, p_noise=0, p_pitch=0, p_stretch=0)
    y = _sine(440)
    drawn = A.draw(rng, p)
    assert A.apply(y, SR, drawn).tobytes() == y.tobytes()


@pytest.mark.parametrize("shift_s", [0.1, -0.1, 0.05])
def test_shift_moves_a_clicks_onset_and_fills_with_zeros(shift_s):
    y = np.zeros(SR, np.float32)
    y[SR // 2 : SR // 2 + 10] = 0.8
    out = A.apply(y, SR, _identity(shift_s=shift_s))
    assert int(np.argmax(out > 0.5)) == SR // 2 + round(shift_s * SR)
    edge = A.apply(np.full(SR, 0.3, np.float32), SR, _identity(shift_s=shift_s))
    vacated = edge[: round(shift_s * SR)] if shift_s > 0 else edge[round(shift_s * SR) :]
    assert np.all(vacated == 0) and out.shape == y.shape  # zero fill, no wrap-around


@pytest.mark.parametrize("steps", [-7.0, -3.0, 4.0, 9.0])
def test_pitch_shift_moves_a_sine_by_its_semitones(steps):
    out = A.apply(_sine(600, 2.0), SR, _identity(pitch_steps=steps))
    assert out.shape == (2 * SR,) and out.dtype == np.float32
    assert abs(12 * np.log2(_peak_hz(out) / 600) - steps) < 0.25


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.25, 1.5])
def test_stretch_moves_a_tone_burst_and_keeps_length_and_pitch(rate):
    y = np.zeros(4 * SR, np.float32)
    y[SR : 2 * SR] = _sine(500)  # on from 1 s to 2 s
    out = A.apply(y, SR, _identity(stretch_rate=rate))
    assert out.shape == y.shape and out.dtype == np.float32
    envelope = np.array([np.sqrt(np.mean(out[i : i + 1024] ** 2)) for i in range(0, len(out) - 1024, 1024)])
    on = np.flatnonzero(envelope > 0.5 * envelope.max()) * 1024 / SR
    assert abs(on.min() - 1 / rate) < 0.1 and abs(on.max() + 1024 / SR - 2 / rate) < 0.15
    assert abs(_peak_hz(out[int(SR / rate) : int(SR / rate) + 8192 * 2]) - 500) < 10


def test_pitch_and_stretch_together_give_both_effects():
    out = A.stretch_and_shift_pitch(_sine(440, 2.0), SR, rate=0.7, n_steps=5.0)
    assert abs(len(out) - 2 * SR / 0.7) <= 2
    assert abs(12 * np.log2(_peak_hz(out) / 440) - 5) < 0.25


@pytest.mark.parametrize("kind, mean_sign", [("zero_mean", 0), ("book", 1)])
def test_noise_raises_the_floor_and_book_noise_shifts_the_dc_level(kind, mean_sign):
    y = np.zeros(SR, np.float32)
    y[:100] = [-0.5, 0.5] * 50  # span (max - min) = 1.0
    out = A.apply(y, SR, _identity(noise_level=0.1, noise=kind, noise_seed=3))
    tail = out[1000:]
    assert 0.02 < tail.std() < 0.035  # uniform of width 0.1: std 0.1 / sqrt(12)
    if mean_sign:
        assert 0.045 < tail.mean() < 0.055 and tail.min() >= 0
    else:
        assert abs(tail.mean()) < 0.002
    again = A.apply(y, SR, _identity(noise_level=0.1, noise=kind, noise_seed=3))
    assert again.tobytes() == out.tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_samples", [SR, SR // 2 + 7, 500])
def test_apply_keeps_length_dtype_and_range(seed, n_samples):
    p = A.AugmentParams(p_shift=1, p_noise=1, p_pitch=1, p_stretch=1, noise="book")
    y = (0.95 * np.sign(np.sin(np.arange(n_samples) / 20))).astype(np.float32)  # loud: noise would overflow
    out = A.apply(y, SR, A.draw(np.random.default_rng(seed), p))
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.all(np.abs(out) <= 1.0) and np.all(np.isfinite(out))


def test_augment_clips_identical_for_any_jobs_and_chunking(tmp_path, rng):
    clips, p = _small_clips(rng), A.AugmentParams(n_copies=3)
    keys = [11, 22, 33, 44, 55]
    runs = [
        A.augment_clips(
            clips,
            8000,
            params=p,
            seed=5,
            clip_keys=keys,
            out_path=tmp_path / f"{j}-{c}.npy",
            n_jobs=j,
            chunk_size=c,
            min_copies_per_worker=1,
        )  # a worker even for this tiny job
        for j, c in [(1, 8), (1, 1), (2, 2)]
    ]
    arrays = [np.load(r) for r in runs]
    assert arrays[0].shape == (5, 3, 4000) and arrays[0].dtype == np.float32
    assert all(a.tobytes() == arrays[0].tobytes() for a in arrays[1:])
    assert not np.allclose(arrays[0][:, 0], arrays[0][:, 1])  # copies differ
    backwards = A.augment_clips(
        clips[::-1], 8000, params=p, seed=5, clip_keys=keys[::-1], out_path=tmp_path / "backwards.npy", n_jobs=1
    )
    assert np.load(backwards)[::-1].tobytes() == arrays[0].tobytes()  # copy (c, j) depends on (seed, c, j) only
    other = A.augment_clips(clips, 8000, params=p, seed=6, clip_keys=keys, out_path=tmp_path / "s6.npy", n_jobs=1)
    assert np.load(other).tobytes() != arrays[0].tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r.name for r in [*runs, backwards, other])


def test_rows_written_in_a_spawned_worker_are_byte_identical(tmp_path, rng):
    clips, p, keys = _small_clips(rng, n=3), A.AugmentParams(n_copies=2), [4, 5, 6]
    expected = np.stack([A.augment_clip(c, 8000, params=p, seed=3, clip_key=k) for c, k in zip(clips, keys)])
    partial, markers = tmp_path / "partial.npy", [tmp_path / f"{i}.done" for i in range(3)]
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=expected.shape).flush()
    with ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=A.keep_freed_memory
    ) as pool:  # the workers' tuned malloc, too
        done = pool.submit(A.write_rows, clips, [0, 1, 2], keys, partial, markers, 8000, p, 3).result()
    assert done == [0, 1, 2] and all(m.exists() for m in markers)
    assert np.load(partial).tobytes() == expected.tobytes()


class _Killed(Exception):
    pass


def _kill(index: int) -> None:
    raise _Killed


def test_killed_run_resumes_from_its_shards_with_identical_output(tmp_path, rng):
    clips, p, keys = _small_clips(rng), A.AugmentParams(n_copies=2), [1, 2, 3, 4, 5]
    clean = np.load(
        A.augment_clips(clips, 8000, params=p, seed=9, clip_keys=keys, out_path=tmp_path / "clean.npy", n_jobs=1)
    )
    out_path = tmp_path / "resumed.npy"
    done: list[int] = []

    def kill_after_three(i: int) -> None:
        done.append(i)
        if len(done) == 3:
            raise _Killed

    with pytest.raises(_Killed):
        A.augment_clips(
            clips,
            8000,
            params=p,
            seed=9,
            clip_keys=keys,
            out_path=out_path,
            n_jobs=1,
            chunk_size=2,
            on_clip=kill_after_three,
        )
    markers = sorted((tmp_path / ".resumed.parts").glob("*.done"))
    assert not out_path.exists() and len(markers) == 3
    markers[0].unlink()  # lose one more, as if the kill came earlier
    redone: list[int] = []
    A.augment_clips(
        clips,
        8000,
        params=p,
        seed=9,
        clip_keys=keys,
        out_path=out_path,
        n_jobs=2,
        chunk_size=1,
        min_copies_per_worker=1,
        on_clip=redone.append,
    )
    assert sorted(redone) == sorted({0, 1, 2, 3, 4} - {int(m.name[:5]) for m in markers[1:]})
    assert np.load(out_path).tobytes() == clean.tobytes()
    assert not (tmp_path / ".resumed.parts").exists()
    A.augment_clips(clips, 8000, params=p, seed=9, clip_keys=keys, out_path=out_path, on_clip=redone.append)
    assert len(redone) == 3  # finished file: nothing recomputed


def test_a_damaged_partial_file_is_started_afresh(tmp_path, rng):
    clips, p, keys = _small_clips(rng, n=3), A.AugmentParams(n_copies=2), [7, 8, 9]
    clean = np.load(
        A.augment_clips(clips, 8000, params=p, seed=2, clip_keys=keys, out_path=tmp_path / "clean.npy", n_jobs=1)
    )
    out_path = tmp_path / "damaged.npy"
    with pytest.raises(_Killed):
        A.augment_clips(clips, 8000, params=p, seed=2, clip_keys=keys, out_path=out_path, n_jobs=1, on_clip=_kill)
    partial = tmp_path / ".damaged.parts" / "partial.npy"
    partial.write_bytes(partial.read_bytes()[:50])  # cut short, as by a crash while it was created
    redone: list[int] = []
    A.augment_clips(clips, 8000, params=p, seed=2, clip_keys=keys, out_path=out_path, n_jobs=1, on_clip=redone.append)
    assert redone == [0, 1, 2] and np.load(out_path).tobytes() == clean.tobytes()


def test_augment_clips_checks_keys(tmp_path, rng):
    with pytest.raises(A.SoundflowError, match="clip_keys"):
        A.augment_clips(
            _small_clips(rng),
            8000,
            params=A.AugmentParams(n_copies=1),
            seed=0,
            clip_keys=[1, 2],
            out_path=tmp_path / "x.npy",
        )


def test_augment_file_names_by_inputs_and_task_returns_path(tmp_path, rng):
    clips_path = tmp_path / "clips-test.npy"
    np.save(clips_path, _small_clips(rng, n=2))
    p = A.AugmentParams(n_copies=2)
    first = A.augment_file(clips_path, 8000, p, 1, [10, 20], tmp_path / "interim", n_jobs=1)
    assert first == A.augment_file(clips_path, 8000, p, 1, [10, 20], tmp_path / "interim", n_jobs=1)
    assert first != A.augment_file(clips_path, 8000, p, 2, [10, 20], tmp_path / "interim", n_jobs=1)
    assert np.load(first).shape == (2, 2, 4000)
    manifest = tmp_path / "manifest-test.csv"
    manifest.write_text("content_hash,start_s\n0000000a99,0.0\n00000014ff,0.0\n")  # keys 10 and 20
    assert A.manifest_clip_keys(manifest) == [10, 20]
    windows = tmp_path / "manifest-windows.csv"  # windows of one recording get different keys
    windows.write_text("content_hash,start_s\n0000000a99,0.0\n0000000a99,5.0\n")
    assert A.manifest_clip_keys(windows) == [10, 10 ^ 5000]
    out = A.augment_task.fn(str(clips_path), str(manifest), 8000, p, 1, str(tmp_path), n_jobs=1)
    assert out == str(first)

"""The review loop, end to end: train from annotated recordings (Raven tables), detect on a new recording, review
its table as a person would in Raven (a false detection marked `no`), train again with the reviewed recording, and
the rejected false positive is no longer detected."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tasks.data.annotations import read_raven

SR = 16_000


def _tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))).astype(np.float32)


def _band(lo: float, hi: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(int(seconds * SR)))
    f = np.fft.rfftfreq(int(seconds * SR), 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    y = np.fft.irfft(spec, int(seconds * SR))
    return (0.3 * y / np.abs(y).max() * np.hanning(len(y))).astype(np.float32)


def _recording(path, events, *, seconds: float, rng) -> list[tuple[float, float, str]]:
    """A recording with the given (start, sound, label) events over faint noise; a Raven table of the labelled ones
    (label None: a sound that is no class) beside it. Returns the labelled spans."""
    y = (0.003 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    spans = []
    for start, sound, label in events:
        a = int(start * SR)
        y[a : a + len(sound)] += sound
        if label:
            spans.append((start, start + len(sound) / SR, label))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, SR)
    return spans


def _raven(path, spans) -> None:
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation"]
    lines += [f"{i}\tSpectrogram 1\t1\t{a:.3f}\t{b:.3f}\t{label}" for i, (a, b, label) in enumerate(spans, 1)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_rejected_detection_trains_the_next_model_not_to_detect_it(prefect_harness, tmp_path, capsys):
    from flows.case_study import case_study
    from flows.detect import detect
    from flows.params import DetectParams, preset

    rng = np.random.default_rng(11)
    whistle, buzz = (lambda: _tone(1000, 1.2)), (lambda: _band(3000, 4000, 1.2, rng))
    distractor = lambda: _tone(1250, 1.2)  # noqa: E731 (a whistle-like sound of no class)
    train = tmp_path / "train"
    for i in range(6):  # six 30-s recordings, three whistles and three buzzes each, annotated in Raven
        events = [(2.0 + 9 * k, whistle(), "whistle") for k in range(3)] + [
            (6.0 + 9 * k, buzz(), "buzz") for k in range(3)
        ]
        _raven(train / f"site{i}.selections.txt", _recording(train / f"site{i}.wav", events, seconds=30, rng=rng))

    def champion(name: str):
        params = preset(
            "quick",
            source=str(train),
            experiment=f"review-{name}",
            window_s=1.0,
            hop_s=0.5,
            models=["logreg"],
            features=["engineered"],
            ensembles=[],
            audit=False,
            k=3,
        )
        return case_study(params).champion

    first = champion("first")
    new = tmp_path / "new"
    distractors = [(a, distractor(), None) for a in (8.0, 12.0, 16.0, 20.0)]  # a sound the classes do not cover
    _recording(new / "field.wav", [(3.0, whistle(), "whistle"), *distractors], seconds=25, rng=rng)
    out = tmp_path / "detect1"
    detect(DetectParams(paths=[str(new)], model=first.name, out=str(out), n_jobs=1))
    table = read_raven(out / "field.selections.txt")
    false = (table["label"] == "whistle") & (table["onset"] > 7)
    assert false.any(), table  # the first model takes the distractor for a whistle
    assert ((table["label"] == "whistle") & (table["onset"] < 5)).any(), table  # and finds the real one

    # the review, as in Raven: Verdict yes for the real whistle, no for every detection of the distractor
    raven = pd.read_csv(out / "field.selections.txt", sep="\t", dtype=str, keep_default_na=False)
    raven["Verdict"] = np.where(raven["Begin Time (s)"].astype(float) > 7, "no", "yes")
    raven.to_csv(train / "field.selections.txt", sep="\t", index=False)
    shutil.copy(new / "field.wav", train / "field.wav")
    second = champion("second")
    assert second.alias_moved, second  # other data, other folds: the newer model takes the alias

    again = tmp_path / "new2"
    _recording(
        again / "later.wav",
        [(4.0, distractor(), None), (10.0, whistle(), "whistle"), (16.0, distractor(), None)],
        seconds=20,
        rng=rng,
    )
    out2 = tmp_path / "detect2"
    detect(DetectParams(paths=[str(again)], model=second.name, alias="champion", out=str(out2), n_jobs=1))
    table2 = read_raven(out2 / "later.selections.txt")
    on_distractor = ((table2["onset"] < 5.5) & (table2["offset"] > 4.0)) | (
        (table2["onset"] < 17.5) & (table2["offset"] > 16.0)
    )
    assert not (on_distractor & (table2["label"] == "whistle")).any(), table2  # the rejected detection: gone
    assert ((table2["label"] == "whistle") & (table2["onset"] < 11.5) & (table2["offset"] > 10.0)).any(), table2

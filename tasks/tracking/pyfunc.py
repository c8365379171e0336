"""The deployable model: an MLflow pyfunc that takes audio (files or waveforms) and returns class probabilities.

Input contract: a pandas DataFrame, one row per recording, with either
  - `path`: an audio file (wav, ogg, flac, mp3; any rate, channels and length), or
  - `waveform` (list of floats, mono, or samples x channels) + `sample_rate` (Hz).
A list of paths or a single path is accepted too. Output: one row per input row with `label`,
`probability` (of that label), one `p_<class>` column per class, `n_windows`, `error`
(empty when the row was classified; otherwise names the input and the reason, the other columns empty),
and `warning` (e.g. a file recorded at a lower sample rate than the model was trained on).
With params {"output": "windows", "hop_s": ...}: scores on a timeline instead, one row per window of every input
row (tasks/tracking/timeline.py score_windows: file, start_s, end_s, one column per class named by the class,
loudness_db, peak_db, floor_db, partial, error).

Preprocessing lives in the model: decode and resample to the working rate, cut the recording into
windows exactly as ingestion cut the training recordings (tasks/data/windows.py: `window_s`, hop `hop_s`),
and average the windows' probabilities, near-silent windows (30 dB below the loudest) left out. Per window,
each member computes its own representation with `tasks.features.representations.compute` (engineered
vectors, log-mels, PCEN, raw samples: one sample rate and window for all) and its estimator gives class
probabilities (softmax of decision scores for models without predict_proba, as in cross-validation); the
combiner (average, maximum, vote, searched weights or a stacker, as in CV) merges the members. A single
model is the one-member case. A file recorded below the model's sample rate is classified with a `warning`.

Code: logged as an MLflow model from code (audio_model.py names AudioClassifier; nothing is cloudpickled),
with the `tasks` package stored beside it (code_paths), so it loads in a fresh process that has only the
dependencies installed; a process that already imported `tasks` (the predict flow, tests) uses its own copy.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

from tasks.config import stage_dir, tracking_uri
from tasks.data.audio import SILENCE_PEAK, decode_region
from tasks.data.windows import cut, loudness_db, pool, vote_weights
from tasks.errors import AudioDecodeError, SoundflowError
from tasks.models.persist import load_estimator, save_estimator
from tasks.tracking.timeline import Pieces, score_timeline, score_windows

CONFIG_FILE = "config.json"
COMBINER_FILE = "combiner.joblib"
MODEL_CODE = Path(__file__).with_name("audio_model.py")  # the models-from-code file naming AudioClassifier
_BASE_REQUIREMENTS = (
    "mlflow",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "joblib",
    "soundfile",
    "soxr",
    "librosa",
    "prefect",
    "pydantic",
)
_KERAS_REQUIREMENTS = ("tensorflow", "keras")
OUTPUTS = ("clips", "windows")  # predict(params={"output": ...}): one row per recording, or one per window


class AudioClassifier(mlflow.pyfunc.PythonModel):
    """Audio in, class probabilities out: one or more member estimators, each on its own representation of the
    same windows, and the combiner of their probabilities (a single model is the one-member "average" case).

    Logged as a model from code (audio_model.py names this class); the estimators, the combiner and the
    preprocessing config are the artifacts."""

    def __init__(self, estimators: list | None = None, combiner=None, model_config: dict | None = None):
        # Set directly for in-process use; a logged model loads all three in load_context.
        self.estimators = estimators
        self.combiner = combiner
        self.config = model_config

    def load_context(self, context) -> None:
        cfg = json.loads(Path(context.artifacts["config"]).read_text())
        if "members" in cfg:
            folder = Path(context.artifacts["estimators"])
            self.estimators = [load_estimator(folder / str(i), m) for i, m in enumerate(cfg["members"])]
            self.combiner = _load_combiner(folder, cfg)
        else:  # a single-model pyfunc logged before ensembles: its estimator artifact and top-level features
            cfg["members"] = [
                {
                    "name": cfg.get("configuration", ""),
                    "features": cfg["features"],
                    "feature_opts": cfg.get("feature_opts") or {},
                    "estimator_format": cfg.get("estimator_format"),
                    "estimator_class": cfg.get("estimator_class"),
                }
            ]
            self.estimators = [load_estimator(Path(context.artifacts["estimator"]), cfg)]
            self.combiner = _load_combiner(None, {"combiner": "average"})
        self.config = cfg
        import tasks.evaluation.cv  # noqa: F401  (bind the code predict needs while the model folder is at hand)
        import tasks.features.representations  # noqa: F401

    @property
    def estimator(self):
        """The only member's estimator (single-model champions)."""
        if len(self.estimators or []) != 1:
            raise AttributeError(f"this model has {len(self.estimators or [])} members; use .estimators")
        return self.estimators[0]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One output row per input row (params output "clips", the default), or one per window of each input row
        ("windows", every `hop_s`); a bad row gets an `error`, the others are still classified."""
        output, hop_s = _output_params(params)
        if output == "windows":
            return self._predict_windows(as_input_frame(model_input), hop_s=hop_s)
        cfg = self.config
        sr, names = int(cfg["sample_rate"]), list(cfg["class_names"])
        window_s = float(cfg.get("window_s") or cfg["duration_s"])  # duration_s: models logged before windows
        window, hop = round(sr * window_s), max(1, round(sr * float(cfg.get("hop_s") or window_s / 2)))
        own = sorted({int(m.get("sample_rate") or sr) for m in cfg["members"]} - {sr})  # members' own rates
        frame = as_input_frame(model_input)
        clips: dict[int, list] = {rate: [] for rate in (sr, *own)}
        owner, weights, errors, warnings, n_windows = [], [], [], [], []
        for i, row in enumerate(frame.to_dict("records")):
            try:
                y, rate = _row_audio(row, sr=sr)
                w, starts = cut(y, window=window, hop=hop)
                # the same windows (start times) read from the recording at each member's own rate
                extra = {r: windows_at(_row_audio(row, sr=r)[0], [s / sr for s in starts], window_s, sr=r) for r in own}
            except (SoundflowError, ValueError, TypeError) as exc:
                errors.append(str(exc) if isinstance(exc, AudioDecodeError) else f"{_where(row, i)}: {exc}")
                warnings.append("")
                n_windows.append(0)
                continue
            errors.append("")
            warnings.append(low_rate_warning(rate, sr))
            n_windows.append(len(w))
            for r, windows in ((sr, w), *extra.items()):
                clips[r].append(windows)
            owner.extend([i] * len(w))
            weights.append(vote_weights(loudness_db(w), np.zeros(len(w))))
        proba = np.full((len(frame), len(names)), np.nan)
        if owner:
            p = self.window_proba({r: np.concatenate(c) for r, c in clips.items()}, sr=sr, n_classes=len(names))
            keys, pooled = pool(p, np.asarray(owner), np.concatenate(weights))
            proba[keys.astype(int)] = pooled
        out = result_frame(proba, names, errors, n_windows)
        out["warning"] = warnings
        return out

    def _predict_windows(self, frame: pd.DataFrame, *, hop_s: float | None) -> pd.DataFrame:
        """score_windows of every row, concatenated; a bad row is one row with its `error` (empty for the others)."""
        parts = []
        for i, row in enumerate(frame.to_dict("records")):
            where, path = _where(row, i), row.get("path")
            try:
                if isinstance(path, (str, os.PathLike)) and str(path):
                    part = score_windows(self, path, hop_s=hop_s)
                else:
                    part, _ = score_timeline(self, partial(_waveform_pieces, row), file=where, hop_s=hop_s)
                part["error"] = ""
            except (SoundflowError, ValueError, TypeError) as exc:
                error = str(exc) if isinstance(exc, AudioDecodeError) else f"{where}: {exc}"
                part = pd.DataFrame({"file": [where], "partial": [False], "error": [error]})
            parts.append(part)
        names = [str(c) for c in self.config["class_names"]]
        columns = ["file", "start_s", "end_s", *names, "loudness_db", "peak_db", "floor_db", "partial", "error"]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object if c in ("file", "error") else float) for c in columns})
        out = pd.concat(parts, ignore_index=True).reindex(columns=columns)
        out["partial"] = out["partial"].astype(bool)
        return out

    def window_proba(self, clips: dict[int, np.ndarray], *, sr: int, n_classes: int) -> np.ndarray:
        """Each member's probabilities on its own representation of the windows (read at the member's rate),
        combined (members x windows x C)."""
        from tasks.evaluation.cv import predict_proba
        from tasks.features.representations import compute

        views: dict[str, np.ndarray] = {}  # members sharing a representation compute it once
        P = []
        for member, est in zip(self.config["members"], self.estimators):
            opts = member.get("feature_opts") or {}
            rate = int(member.get("sample_rate") or sr)
            key = json.dumps([member["features"], opts, rate], sort_keys=True, default=str)
            if key not in views:
                views[key] = np.asarray(compute(member["features"], clips[rate], rate, n_jobs=1, **opts))
            P.append(predict_proba(est, views[key], n_classes))
        return self.combiner.predict_proba(np.stack(P))


def _waveform_pieces(row: dict, rates: list[int]) -> Pieces:
    """A waveform row, validated and resampled to each rate as predict does: one piece (it is in memory anyway)."""
    yield {r: _row_audio(row, sr=r)[0] for r in rates}, True


def _output_params(params: dict | None) -> tuple[str, float | None]:
    """(output, hop_s or None for the default hop) from predict's params; a clear error for other values."""
    params = params or {}
    output = params.get("output") or "clips"
    if output not in OUTPUTS:
        raise MlflowException.invalid_parameter_value(
            f"params output={output!r}: use 'clips' (one row per recording, the default) or 'windows' "
            "(one row per window of each recording, every hop_s seconds)"
        )
    hop_s = params.get("hop_s")
    try:
        hop_s = float(hop_s or 0.0)
    except (TypeError, ValueError):
        hop_s = float("nan")
    if not (math.isfinite(hop_s) and hop_s >= 0):
        raise MlflowException.invalid_parameter_value(
            f"params hop_s={params.get('hop_s')!r}: seconds between window starts, > 0 (0: the default hop)"
        )
    return output, hop_s or None


def windows_at(y: np.ndarray, starts_s: list[float], window_s: float, *, sr: int) -> np.ndarray:
    """(n, window) float32 windows of y (at sr Hz) starting at starts_s, zero-padded past the end."""
    width = round(sr * window_s)
    out = np.zeros((len(starts_s), width), np.float32)
    for i, start_s in enumerate(starts_s):
        part = y[round(start_s * sr) : round(start_s * sr) + width]
        out[i, : len(part)] = part
    return out


def low_rate_warning(rate: int, sr: int) -> str:
    """A note for a file recorded below the model's sample rate: its high band is empty, unlike in training."""
    if rate >= sr:
        return ""
    return (
        f"recorded at {rate} Hz, below the model's {sr} Hz: nothing above {rate / 2:.0f} Hz, "
        "so the prediction may be unreliable"
    )


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
        raise TypeError(
            f"unsupported input {type(model_input).__name__}: pass a DataFrame with a 'path' "
            "column, or 'waveform' + 'sample_rate' columns, or a list of file paths"
        )
    if "path" not in frame.columns and "waveform" not in frame.columns:
        raise ValueError(f"input columns {list(frame.columns)}: need 'path', or 'waveform' + 'sample_rate'")
    return frame.reset_index(drop=True)


def result_frame(proba: np.ndarray, names: list[str], errors: list[str], n_windows: list[int]) -> pd.DataFrame:
    """label, probability, p_<class>..., n_windows, error; rows with an error have no label."""
    ok = ~np.isnan(proba).any(axis=1)
    best = np.where(ok, np.nan_to_num(proba, nan=-1.0).argmax(axis=1), 0)
    out = pd.DataFrame(
        {
            "label": [names[b] if k else None for b, k in zip(best, ok)],
            "probability": np.where(ok, proba[np.arange(len(proba)), best], np.nan),
        }
    )
    for c, name in enumerate(names):
        out[f"p_{name}"] = proba[:, c]
    out["n_windows"] = np.asarray(n_windows, dtype=np.int64)
    out["error"] = errors
    return out


def _row_audio(row: dict, *, sr: int) -> tuple[np.ndarray, int]:
    """One row's recording as float32 mono at `sr`, full length, and the rate it was recorded at."""
    path = row.get("path")
    if isinstance(path, (str, os.PathLike)) and str(path):
        y, info = decode_region(path, sr=sr)
        return y, info["sample_rate"]
    wave, rate = row.get("waveform"), row.get("sample_rate")
    if wave is None or (isinstance(wave, float) and np.isnan(wave)):
        raise ValueError("no 'path' and no 'waveform'")
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"'sample_rate' must be a positive number of Hz, got {rate!r}")
    y = np.asarray(list(wave) if not isinstance(wave, np.ndarray) else wave, dtype=np.float32)
    return prepare_waveform(y, int(rate), sr=sr), int(rate)


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


def _load_combiner(folder: Path | None, cfg: dict):
    """The fitted combiner (combiner.joblib) if the model has one, else the fixed combiner named in the config."""
    from tasks.evaluation.ensembles import Combiner

    if folder is not None and (folder / COMBINER_FILE).is_file():
        import joblib

        return joblib.load(folder / COMBINER_FILE)
    return Combiner(cfg.get("combiner", "average"))


def signature(class_names: list[str]) -> ModelSignature:
    """Input: path, or waveform + sample_rate (all optional columns); output: label, probability, p_<class>...
    (params output="windows" and hop_s: score_windows' frame instead)."""
    inputs = Schema(
        [
            ColSpec(DataType.string, "path", required=False),
            ColSpec(Array(DataType.double), "waveform", required=False),
            ColSpec(DataType.long, "sample_rate", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.string, "label", required=False),
            ColSpec(DataType.double, "probability"),
            *[ColSpec(DataType.double, f"p_{c}") for c in class_names],
            ColSpec(DataType.long, "n_windows"),
            ColSpec(DataType.string, "error"),
            ColSpec(DataType.string, "warning", required=False),
        ]
    )
    params = ParamSchema(
        [
            ParamSpec("output", DataType.string, "clips"),  # or "windows"
            ParamSpec("hop_s", DataType.double, 0.0),  # windows: seconds between starts; 0: min(1 s, window_s)
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example(*, sample_rate: int = 8000, duration_s: float = 0.25) -> pd.DataFrame:
    """A self-contained example: a short 440 Hz tone as a waveform (no file needed)."""
    t = np.arange(round(sample_rate * duration_s)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).round(5)
    return pd.DataFrame({"waveform": [tone.tolist()], "sample_rate": [sample_rate]})


def requirements(*estimator_formats: str) -> list[str]:
    """Pinned pip requirements from the running environment (skips inference, which reloads the model)."""
    names = _BASE_REQUIREMENTS + (_KERAS_REQUIREMENTS if "keras" in estimator_formats else ())
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
    """Log one estimator as the pyfunc (a one-member ensemble); returns mlflow's ModelInfo.

    config: sample_rate, window_s, features, class_names, model_name; optional hop_s, feature_opts,
    configuration."""
    missing = {"sample_rate", "window_s", "features", "class_names", "model_name"} - set(config)
    if missing:
        raise ValueError(f"model config is missing {sorted(missing)}")
    member = {
        "name": config.get("configuration", ""),
        "features": config["features"],
        "feature_opts": config.get("feature_opts") or {},
    }
    rest = {k: v for k, v in config.items() if k not in ("features", "feature_opts")}
    return log_ensemble_model(run_id, [estimator], members=[member], combiner=None, config=rest, name=name)


def log_ensemble_model(
    run_id: str, estimators: list, *, members: list[dict], combiner, config: dict, name: str = "model"
):
    """Log member estimators and their combiner as ONE pyfunc (model from code) under an existing run.

    members: per estimator, name, features and feature_opts (its representation of the shared windows);
    combiner: a fitted tasks.evaluation.ensembles.Combiner, or None for one member as is;
    config: sample_rate, window_s, class_names, model_name; optional hop_s, configuration.
    Returns mlflow's ModelInfo (model_uri = models:/<model id>)."""
    missing = {"sample_rate", "window_s", "class_names", "model_name"} - set(config)
    if missing:
        raise ValueError(f"model config is missing {sorted(missing)}")
    if len(estimators) != len(members) or not members:
        raise ValueError(f"{len(estimators)} estimators for {len(members)} members: pass one member config each")
    if any("features" not in m for m in members):
        raise ValueError("every member config needs its 'features' (the representation it was trained on)")
    with tempfile.TemporaryDirectory(prefix="soundflow-model-") as tmp:
        tmp = Path(tmp)
        saved = []
        for i, (est, member) in enumerate(zip(estimators, members)):
            fmt, cls = save_estimator(est, tmp / "estimators" / str(i))
            saved.append({"feature_opts": {}, **member, "estimator_format": fmt, "estimator_class": cls})
        kind = "average" if combiner is None else combiner.kind
        if combiner is not None and kind not in ("average", "maximum", "vote"):
            import joblib

            joblib.dump(combiner, tmp / "estimators" / COMBINER_FILE)
        weights = getattr(combiner, "weights_", None)
        cfg = {
            "hop_s": float(config["window_s"]) / 2,
            **config,
            "class_names": list(config["class_names"]),
            "members": saved,
            "combiner": kind,
            "weights": None if weights is None else [float(w) for w in weights],
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, default=str))
        formats = [m["estimator_format"] for m in saved]
        with fluent_store(tracking_uri()), mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(MODEL_CODE),
                artifacts={"estimators": str(tmp / "estimators"), "config": str(tmp / CONFIG_FILE)},
                code_paths=[str(Path(__file__).resolve().parents[1])],  # the tasks package
                signature=signature(cfg["class_names"]),
                input_example=input_example(),
                pip_requirements=requirements(*formats),
                metadata={
                    "soundflow": {
                        "model_name": cfg["model_name"],
                        "sample_rate": cfg["sample_rate"],
                        "features": [m["features"] for m in saved],
                        "combiner": kind,
                        "members": [m.get("name", "") for m in saved],
                    }
                },
            )


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
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri, dst_path=str(tmp), tracking_uri=uri, registry_uri=uri
    )
    if not (Path(local) / "MLmodel").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise SoundflowError(
            f"{model_uri}: no model files at its artifact location (MLmodel missing); "
            "were the store's artifacts moved or deleted?"
        )
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
        return _version_key(
            store, MlflowClient(tracking_uri=store_uri, registry_uri=store_uri).get_model_version_by_alias(name, alias)
        )
    if "/" in ref:
        name, suffix = ref.split("/", 1)
        if not suffix.isdigit():
            return None
        return _version_key(
            store, MlflowClient(tracking_uri=store_uri, registry_uri=store_uri).get_model_version(name, suffix)
        )
    return f"{store}/{ref}"


def _version_key(store: str, mv) -> str:
    """<store>/<name>/v<version>-<digest of source and creation time>: a recreated store never hits a stale copy."""
    from tasks.cache import digest

    return f"{store}/{mv.name}/v{mv.version}-{digest(mv.source, mv.creation_timestamp, length=8)}"

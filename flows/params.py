"""The case study's parameters: one typed model, and named presets that are plain overrides of it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from tasks.augment.copies import AugmentParams
from tasks.models.classical import BOOK_SUITE


class CaseStudyParams(BaseModel):
    """Everything a case-study run depends on; MLflow logs it flat on the parent run."""

    preset: str = Field(
        "default", description="preset whose values fill every field not given: smoke, quick, default or book"
    )
    source: str | None = Field(
        None, description="dataset folder, CSV manifest, .zip or URL; default: download ESC-50 and keep ESC-10"
    )
    dataset: Literal["auto", "esc10", "esc50", "urbansound8k", "annotations", "folders", "csv"] = Field(
        "auto",
        description="layout to read: auto detects it (esc10 with no source); esc10 on an ESC-50 folder takes its ESC-10 subset",
    )
    group_pattern: str | None = Field(
        None,
        description="folders and annotations layouts: regex whose first capture group, matched against the file name, is the group (speaker, source recording, site)",
    )
    label_column: str | None = Field(
        None,
        description="annotations layout: the Raven selection tables' label column (default: the first of "
        "Annotation, Species, Label, Class)",
    )
    min_label_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="annotations layout: a window takes a class when its events cover at least this share of the "
        "window (or of an event shorter than the window); windows touched by less are dropped",
    )
    background_ratio: float = Field(
        1.0,
        ge=0,
        description="annotations layout: windows no event touches are kept as class 'background', at most this "
        "many times the labelled windows (drawn with the seed; rejected detections' windows are always kept)",
    )
    window_s: Annotated[float, Field(gt=0, le=600)] | Literal["auto"] = Field(
        "auto",
        description="segment length in seconds: longer recordings are cut into windows, shorter ones zero-padded; "
        "auto: the 95th percentile of the recordings' durations rounded up to 0.1 s, at most 5 and at least 0.5 s "
        "(ESC-10/ESC-50: 5 s, UrbanSound8K: 4 s)",
    )
    hop_s: float | None = Field(
        None, gt=0, le=600, description="hop between windows of a long recording (default: window_s, no overlap)"
    )
    min_duration_s: float = Field(
        0.0, ge=0, description="recordings shorter than this are rejected (listed in the rejected-files report)"
    )
    experiment: str | None = Field(None, description="MLflow experiment (default: soundflow-<dataset name>)")
    split: Literal["auto", "official", "group_kfold", "book_holdout"] = Field(
        "auto",
        description="auto: the dataset's own folds if it has them, else StratifiedGroupKFold by group; or official, group_kfold, the book's 8-per-class hold-out",
    )
    k: int = Field(5, ge=2, le=20, description="folds for group_kfold")
    seed: int = Field(0, ge=0, description="seed of every random step (splits, augmentation, models)")
    sample_rate: int = Field(22050, ge=8000, le=96000, description="working sample rate in Hz")
    duration_s: float | None = Field(None, gt=0, le=600, description="old name of window_s (sets it when given)")
    clips_per_class_fold: int | None = Field(
        None, ge=1, description="keep only this many clips per class and fold (quick runs)"
    )
    features: list[str] = Field(["raw", "engineered"], description="representations for the models that accept them")
    feature_opts: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options per representation, e.g. {'logmel': {'hop_length': 1024}} (see tasks/features/representations.py)",
    )
    models: list[str] = Field(
        default_factory=lambda: [*BOOK_SUITE, "rbf_svm", "logreg", "mlp_sklearn"],
        description="models from the catalogue (tasks/models/catalog.py)",
    )
    augmented: list[str] = Field(
        default_factory=list,
        description="'model/features' configurations also trained on augmented folds (model name alone: all its features)",
    )
    augmentation: AugmentParams = Field(
        default_factory=lambda: AugmentParams(n_copies=4),
        description="the four augmentations (book: 19 copies, noise 'book')",
    )
    score_augmented_test: bool = Field(
        False, description="also score augmented copies of test clips (the book's protocol), as aug_test_accuracy"
    )
    repeats: dict[str, int] = Field(
        default_factory=dict, description="trainings per deep model with different seeds, e.g. {'cnn2d_logmel': 3}"
    )
    hyper: dict[str, dict[str, Any]] = Field(default_factory=dict, description="hyper-parameter overrides per model")
    ensembles: list[str] = Field(
        default_factory=lambda: ["average", "maximum", "vote", "weighted", "stacking", "logpool"],
        description="ensemble combiners over the best configurations (logpool: log-linear pool, weights fitted by log loss)",
    )
    ensemble_members: int = Field(
        5,
        ge=2,
        le=20,
        description="how many configurations an ensemble mixes: the best of each representation first, then of each family, then the next best",
    )
    ensemble_pools: dict[str, list[str]] = Field(
        default_factory=dict,
        description="further ensembles, each over the configurations whose names match its shell-style patterns, e.g. {'pretrained': ['*/birdnet*', '*/engineered']} gives pretrained:average...; an empty list drops a preset's pool",
    )
    optimizer: str = Field("jaya", description="weight search for 'weighted': bbpso, jaya, de, ro, gwo, ga")
    register_champion: bool = Field(
        True, description="refit the best configuration on all data and register it as champion if it wins"
    )
    target_precision: float = Field(
        0.9,
        gt=0,
        le=1,
        description="the champion's detection thresholds: per class, the lowest whose precision on the out-of-fold "
        "window scores reaches this",
    )
    background_classes: list[str] = Field(
        default_factory=list,
        description="classes that mean none of the others (besides any named background, noise, silence or other): "
        "detect never reports them",
    )
    audit: bool = Field(
        True,
        description="leakage audit: duplicates across folds, group hints from file names, and what ignoring them costs (never changes the split)",
    )
    n_jobs: int = Field(
        2, ge=1, le=64, description="worker processes for the (configuration, fold) tasks and ingestion"
    )
    runner: Literal["local", "dask"] = Field(
        "local",
        description="where the (configuration, fold) tasks run: a local process pool, or Dask (needs the dask extra)",
    )
    dask_address: str | None = Field(
        None,
        description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (with --runner dask; none: a LocalCluster of n_jobs workers)",
    )
    reuse_results: bool = Field(True, description="reuse finished CV results whose inputs did not change")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """Wherever parameters enter (CLI, serve, prefect.yaml, a custom run in the Prefect UI), the named
        preset (default: "default") gives every field not given explicitly; nested dicts merge."""
        if not isinstance(data, dict):
            return data
        return merge_preset(data.get("preset") or "default", data)

    @model_validator(mode="after")
    def _window_and_default_dataset(self) -> "CaseStudyParams":
        if self.duration_s is not None:
            self.window_s, self.duration_s = self.duration_s, None
        if self.source is None and self.dataset == "auto":
            self.dataset = "esc10"  # the default download is ESC-50; the case study is its ESC-10 subset
        return self

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from tasks.models.catalog import model_entry

        for entry in value:
            model_entry(entry)  # fails before any work starts, naming the entry
        return value

    @field_validator("ensemble_pools")
    @classmethod
    def _pool_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in value:
            if not name or name == "ensemble" or ":" in name or name.endswith("-repeats"):
                raise ValueError(
                    f"ensemble pool name {name!r}: must be non-empty, not 'ensemble', without ':' and not end in -repeats"
                )
        return value

    @field_validator("feature_opts")
    @classmethod
    def _known_feature_opts(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from tasks.errors import SoundflowError
        from tasks.features.representations import resolved_opts

        for kind, opts in value.items():
            try:
                resolved_opts(kind, opts)
            except SoundflowError as exc:
                raise ValueError(str(exc)) from exc  # pydantic reports ValueErrors on the field
        return value


SMOKE: dict[str, Any] = {
    "clips_per_class_fold": 2,
    "features": ["raw", "engineered", "logmel", "pcen"],
    "models": ["nearest_centroid", "gaussian_nb", "rf50", "rbf_svm", "mlp_keras", "cnn1d_shallow_k3", "cnn2d_logmel"],
    "augmented": ["gaussian_nb/engineered", "cnn2d_logmel"],
    "augmentation": {"n_copies": 1},
    "hyper": {
        "mlp_keras": {"epochs": 3},
        "cnn1d_shallow_k3": {"epochs": 2},
        "cnn2d_logmel": {"epochs": 2, "widths": [8, 16, 16, 16]},
    },
    "ensembles": ["average", "weighted"],
    "ensemble_members": 3,
    "register_champion": False,
}

MILD_AUGMENTATION: dict[str, Any] = {
    "n_copies": 2,
    "p_shift": 0.0,
    "p_noise": 0.0,
    "p_pitch": 1.0,
    "pitch_steps": (-2.0, 2.0),
    "p_stretch": 1.0,
    "stretch_rate": (0.85, 1.15),
}

# Every model family, ~10 minutes cold on 2 cores; the measurements behind each choice: docs/benchmarks.md.
DEFAULT: dict[str, Any] = {
    "features": ["raw", "engineered", "logmel", "pcen"],
    # No MLP on raw samples; BirdNET (extra `pretrained`, skipped without it) feeds two models: docs/benchmarks.md.
    "models": [
        *BOOK_SUITE,
        "rbf_svm",
        "logreg",
        "mlp_sklearn/engineered",
        "mlp_keras",
        "cnn1d_deep0_k7",
        "cnn2d_logmel",
        "rbf_svm/birdnet",
        "logreg/birdnet",
    ],
    # BirdNET windows every 0.5 s, from the source audio at 48 kHz (OWN_RATES): docs/benchmarks.md.
    "feature_opts": {"birdnet": {"hop_s": 0.5, "pooling": "mean_std"}},
    # Which configurations also train on copies (not the 1D CNN): docs/benchmarks.md.
    "augmented": ["cnn2d_logmel", "rbf_svm/birdnet", "logreg/birdnet"],
    # Two mild pitch + stretch copies per clip (the book's wide ranges change the class): docs/benchmarks.md.
    "augmentation": MILD_AUGMENTATION,
    # The recipe's 30 epochs, affordable with the narrower early blocks (tasks/models/nets.py): docs/benchmarks.md.
    "hyper": {"cnn2d_logmel": {"learning_rate": 2e-3}},
    # One member per way of seeing a clip; 4 beat 5 (docs/benchmarks.md, "What made the difference").
    "ensemble_members": 4,
    # The quick preset's models plus the BirdNET ones on copies, chosen by bench/pools.py: docs/benchmarks.md.
    "ensemble_pools": {"vectors": ["rbf_svm/birdnet*", "logreg/birdnet*", "rbf_svm/engineered", "logreg/engineered"]},
}

# Fast feedback on a new dataset, no network training (ESC-10: a few minutes cold): docs/benchmarks.md.
QUICK: dict[str, Any] = {
    "features": ["birdnet", "engineered"],
    "feature_opts": {"birdnet": {"hop_s": 0.5, "pooling": "mean_std"}},  # as in DEFAULT
    "models": ["rbf_svm", "logreg"],
    "augmented": [],
    "ensembles": ["average", "vote", "weighted", "stacking", "logpool"],
    "ensemble_members": 3,
}

# The whole book (hours; a night run), Table 12-1's 5 x 8 grid of 1D CNNs included: docs/benchmarks.md.
CNN1D_GRID = [
    f"cnn1d_{a}_k{k}" for a in ("shallow", "medium", "deep0", "deep1", "deep2") for k in (3, 5, 7, 9, 11, 13, 15, 33)
]
BOOK: dict[str, Any] = {
    "split": "book_holdout",
    "sample_rate": 44100,
    "features": ["raw", "book_image"],
    "augmentation": {"n_copies": 19, "noise": "book"},
    "score_augmented_test": True,
    "models": [*BOOK_SUITE, "mlp_sklearn", *CNN1D_GRID, "cnn2d_book_k3"],
    "augmented": [*BOOK_SUITE, "mlp_sklearn", *CNN1D_GRID, "cnn2d_book_k3"],
    "repeats": {"cnn2d_book_k3": 6},
    "ensembles": ["average", "maximum", "vote"],
    "register_champion": False,
}

PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "quick": QUICK, "default": DEFAULT, "book": BOOK}


def merge_preset(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's values under the given ones (a given dict merges into the preset's dict of that name)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    merged = {**PRESETS[name], "preset": name}
    for key, value in given.items():
        if key == "preset":
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def preset(name: str, **overrides: Any) -> CaseStudyParams:
    """A preset's parameters with user overrides on top (nested dicts merge)."""
    return CaseStudyParams(**{**overrides, "preset": name})


class DetectParams(BaseModel):
    """What a detection run over long recordings depends on; MLflow logs it flat on the analysis run."""

    paths: list[str] = Field(description="recordings, or folders of them")
    recursive: bool = Field(False, description="also look for recordings in sub-folders of the folders given")
    model: str | None = Field(None, description="registered model (default: the champion registered last)")
    alias: str = Field("champion", description="alias of the registered model's version to use")
    out: str | None = Field(
        None,
        description="output folder: tables, window scores and the journal (default: data/detections/<model>); "
        "a second run into the same folder skips what is done",
    )
    hop_s: float | None = Field(
        None, gt=0, le=60, description="seconds between window starts (default: the model's window, at most 1 s)"
    )
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="one threshold for every class instead of the model's calibrated per-class thresholds",
    )
    merge_gap_s: float = Field(
        0.0, ge=0, le=600, description="windows of one class this far apart or closer become one event"
    )
    event_score: Literal["max", "mean"] = Field("max", description="an event's score: its windows' maximum or mean")
    min_snr_db: float | None = Field(
        6.0,
        description="a window no louder than this many dB above its recording's background detects nothing "
        "(None: no gate)",
    )
    background_classes: list[str] = Field(
        default_factory=list,
        description="classes never reported (besides any the model was trained with, e.g. 'background', 'noise')",
    )
    n_jobs: int = Field(2, ge=1, le=64, description="recordings scored side by side in worker processes")
    runner: Literal["local", "dask"] = Field("local", description="a local process pool, or Dask (the dask extra)")
    dask_address: str | None = Field(None, description="an existing Dask scheduler (with --runner dask)")
    experiment: str = Field("soundflow-detect", description="MLflow experiment of the analysis runs")

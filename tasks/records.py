"""The records that cross stage boundaries: frozen and typed, so no stage recovers structure from a name or a dict.

ingest -> Dataset; plan -> Config; the flow -> CVInputs; a fold task -> FoldResult; tracking -> ConfigResult and
EnsembleResult (a result carries its Config, or its members and combiner); the registry -> Registration; the flow
-> RunSummary. Detection: the registry -> DetectModel; a scoring task -> Scored (also the journal's line).
Core layer: nothing here imports a stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AugmentParams(BaseModel):
    """The book's recipe: each copy applies each change with its probability (Kneusel ch. 12)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_copies: int = Field(19, ge=1, le=1000)
    p_shift: float = Field(0.5, ge=0, le=1)
    max_shift_s: float = Field(0.125, ge=0, le=5)  # book: +-sr/8 samples
    p_noise: float = Field(0.5, ge=0, le=1)
    noise_level: float = Field(0.1, ge=0, le=1)  # fraction of the clip's (max - min)
    noise: Literal["zero_mean", "book"] = "zero_mean"  # book: uniform in [0, level), shifts the DC level
    p_pitch: float = Field(0.5, ge=0, le=1)
    pitch_steps: tuple[float, float] = (-10.0, 10.0)  # semitones
    p_stretch: float = Field(0.5, ge=0, le=1)
    stretch_rate: tuple[float, float] = (0.5, 1.5)  # >1 is faster (shorter)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentParams:
        lo, hi = self.pitch_steps
        if not -24 <= lo <= hi <= 24:
            raise ValueError(f"pitch_steps must be (lo, hi) with -24 <= lo <= hi <= 24, got {self.pitch_steps}")
        lo, hi = self.stretch_rate
        if not 0.1 <= lo <= hi <= 10:
            raise ValueError(f"stretch_rate must be (lo, hi) with 0.1 <= lo <= hi <= 10, got {self.stretch_rate}")
        return self


@dataclass(frozen=True)
class Dataset:
    """An ingested dataset: its manifest (the one table later stages read), decoded segments and counts."""

    name: str  # esc10, urbansound8k, a folder's or CSV's name
    layout: str
    manifest: str  # path of the manifest CSV
    clips: str  # path of the decoded segments (n, samples) .npy
    rejected: str  # path of the rejected-files CSV
    info: str  # path of dataset.json (layout, classes, notes, rates)
    digest: str  # content key of the manifest and segments
    n_clips: int
    n_recordings: int
    sample_rate: int
    window_s: float
    hop_s: float
    n_rejected: int = 0
    has_folds: bool = False
    notes: tuple[str, ...] = ()

    @property
    def has_groups(self) -> bool:
        """False when each file had to be its own group (no group column, pattern or layout rule)."""
        return not any(n.startswith("no group information") for n in self.notes)


def run_name(model: str, features: str, augmented: bool, repeat: int | None = None) -> str:
    """The name a configuration carries everywhere (MLflow run, tables, ensembles): a label, never parsed."""
    name = f"{model}/{features}{'+aug' if augmented else ''}"
    return f"{name}#{repeat}" if repeat is not None else name


@dataclass(frozen=True)
class Config:
    """One configuration to cross-validate and, if it wins, to refit: a model on one representation."""

    model: str
    features: str
    family: str  # classical, mlp, cnn1d, cnn2d (the catalogue's)
    augmented: bool = False  # trained with the augmented copies of its training clips too
    seed: int = 0
    repeat: int | None = None  # which of a model's repeated trainings (seed = run seed + repeat)
    hyper: Mapping[str, Any] = field(default_factory=dict)
    n_jobs: int = 1
    score_aug_test: bool = False
    augmentation: AugmentParams | None = None  # the copies' recipe (augmented configurations only)

    @property
    def name(self) -> str:
        return run_name(self.model, self.features, self.augmented, self.repeat)

    def key(self) -> dict[str, Any]:
        """What its fold results depend on, for their cache key (JSON-able)."""
        return {
            "name": self.name,
            "model": self.model,
            "features": self.features,
            "augmented": self.augmented,
            "seed": self.seed,
            "hyper": dict(self.hyper),
            "n_jobs": self.n_jobs,
            "score_aug_test": self.score_aug_test,
            "augmentation": self.augmentation.model_dump() if self.augmentation else None,
        }

    def params(self) -> dict[str, Any]:
        """The parameters its MLflow run carries (the compare view lines them up)."""
        out = {
            "model": self.model,
            "features": self.features,
            "augmented": self.augmented,
            "seed": self.seed,
            "family": self.family,
            "hyper": dict(self.hyper),
        }
        if self.augmentation is not None:
            out["augmentation"] = self.augmentation.model_dump()
        return out


@dataclass(frozen=True)
class CVInputs:
    """What every fold task reads: paths of the manifest, the splits and each representation's features."""

    manifest: str
    splits: str
    features: Mapping[str, str]  # representation -> (n, ...) .npy
    aug_features: Mapping[str, str] = field(default_factory=dict)  # representation -> (n, copies, ...) .npy
    feature_opts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # as features_task got them
    feature_rates: Mapping[str, int] = field(default_factory=dict)  # the rate each was computed at
    reuse: bool = True  # reuse fold results on disk (False: --no-reuse-results)

    def features_of(self, config: Config) -> tuple[str, str | None]:
        """(features path, augmented copies' features path or None) of a configuration."""
        aug = self.aug_features.get(config.features) if config.augmented else None
        return self.features[config.features], aug


@dataclass(frozen=True)
class FoldResult:
    """One (configuration, fold) task's outcome: its fold file, or the error that stopped it."""

    name: str
    fold: int
    path: str = ""
    fit_seconds: float = 0.0
    n_test: int = 0
    reused: bool = False
    pid: int = 0
    error: str = ""


@dataclass(frozen=True)
class ConfigResult:
    """A configuration's cross-validated result, logged as its nested MLflow run."""

    config: Config
    run_id: str
    proba: str  # out-of-fold probabilities (n, C) .npy, NaN where never tested
    cv_accuracy_mean: float
    cv_accuracy_sem: float
    macro_f1_mean: float
    fit_seconds: float = 0.0
    history: str | None = None  # per-fold learning curves (deep models)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def features(self) -> str:
        return self.config.features

    @property
    def augmented(self) -> bool:
        return self.config.augmented


@dataclass(frozen=True)
class EnsembleResult:
    """A fold-safe ensemble's result: its combiner and the members it would deploy (chosen on all folds)."""

    group: str  # "ensemble", a named pool, or "<model>-repeats"
    combiner: str  # average, vote, maximum, weighted, stacking, logpool
    optimizer: str  # the weight search of a weighted combiner
    seed: int
    members: tuple[str, ...]  # every configuration that was a member in some fold
    final_members: tuple[ConfigResult, ...]  # the members a deployed ensemble uses
    run_id: str
    proba: str
    cv_accuracy_mean: float
    cv_accuracy_sem: float
    macro_f1_mean: float
    fit_seconds: float = 0.0
    history: str | None = None

    family = "ensemble"
    features = "probabilities"
    augmented = False

    @property
    def name(self) -> str:
        return f"{self.group}:{self.combiner}"


Result = ConfigResult | EnsembleResult


@dataclass(frozen=True)
class Registration:
    """What the registry did with a champion candidate."""

    name: str  # the registered model
    version: str
    alias_moved: bool
    uri: str
    reason: str
    configuration: str  # the result's name (+ an ensemble's members)
    run_id: str | None = None  # the champion-refit run (None when nothing changed)


@dataclass(frozen=True)
class AuditVerdict:
    """The leakage audit's outcome (tasks/data/audit.py), as the run summary and the report show it."""

    verdict: str
    leak: bool
    gap_points: float  # NaN when the audit did not measure it
    group_pattern: str  # a --group-pattern the audit proposes ("" if none)
    summary: str  # path of its markdown summary


@dataclass(frozen=True)
class RunSummary:
    """What a case-study run did: the CLI prints it, MLflow's description and the HTML report show it."""

    dataset: str
    source: str
    preset: str
    n_clips: int
    n_recordings: int
    protocol: str
    results: tuple[Result, ...]
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    run_url: str
    registered_model: str
    champion: Registration | None = None
    failed: tuple[str, ...] = ()
    audit: AuditVerdict | None = None
    report: str | None = None
    seconds: float = 0.0  # the run's wall time

    @property
    def best(self) -> Result:
        """The best result; on a tie the one listed first (single models precede ensembles)."""
        return max(self.results, key=lambda r: round(float(r.cv_accuracy_mean), 9))

    def accuracies(self) -> dict[str, float]:
        """Each configuration's and ensemble's CV accuracy (rounded to 4 places)."""
        return {r.name: round(r.cv_accuracy_mean, 4) for r in self.results}


@dataclass(frozen=True)
class DetectModel:
    """The registered model version a detection run uses (pinned: an alias moved mid-run changes nothing)."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>
    class_names: tuple[str, ...]
    window_s: float
    sample_rate: int
    thresholds: Mapping[str, float] = field(default_factory=dict)  # calibrated per class; empty for older models
    target_precision: float | None = None
    background: tuple[str, ...] = ()  # classes it never reports

    def default_hop_s(self) -> float:
        return min(1.0, self.window_s)


@dataclass(frozen=True)
class Scored:
    """One recording's analysis (a line of the detection journal): where its window scores are, or why it failed."""

    file: str  # the recording's path as given
    sha256: str  # its content hash (a moved or renamed file is still done; an edited one is not)
    model_key: str  # the model version and the scoring options (hop) the scores depend on
    status: str  # "ok" or "error"
    duration_s: float = 0.0
    n_windows: int = 0
    scores: str = ""  # path of its window scores (Parquet)
    error: str = ""
    seconds: float = 0.0  # wall time of the analysis
    size: int = 0  # the file's size and mtime when hashed (a journal hit skips hashing it again)
    mtime_ns: int = 0
    finished_at: float = 0.0  # time.time()

    @property
    def key(self) -> tuple[str, str]:
        return self.sha256, self.model_key


@dataclass(frozen=True)
class DetectSummary:
    """What a detection run did: the CLI prints its lines, `--json` all of it."""

    out: str  # the output folder (tables, scores, journal)
    detections: str  # detections.csv
    model_uri: str
    n_files: int
    n_scored: int  # analysed by this run
    n_skipped: int  # already in the journal
    n_failed: int
    n_detections: int
    audio_hours: float
    seconds: float
    run_id: str  # the MLflow run of the analysis
    lines: tuple[str, ...] = ()  # detections per class, busiest recordings, where the tables are, failures

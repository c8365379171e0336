"""What cross-validation reads: every representation the configurations need, of the clips and of their
augmented copies, as paths in one CVInputs record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.augment.copies import augment_task
from tasks.features.representations import features_task, rate_of
from tasks.records import AugmentParams, Config, CVInputs, Dataset


def cv_inputs(
    data: Dataset,
    configs: Sequence[Config],
    splits: str,
    *,
    feature_opts: Mapping[str, Mapping[str, Any]],
    augmentation: AugmentParams,
    seed: int,
    data_dir: str,
    n_jobs: int,
    reuse: bool = True,
    also: Sequence[str] = (),
) -> CVInputs:
    """Compute (or reuse) the features of every representation the configurations use (and `also` these), and of
    the augmented copies of the clips for the configurations trained with them."""
    sr = data.sample_rate
    kinds = sorted({c.features for c in configs} | set(also))
    aug_kinds = sorted({c.features for c in configs if c.augmented})
    feats = {k: features_task(data.clips, k, sr, dict(feature_opts.get(k, {})), data_dir, data.manifest) for k in kinds}
    aug_feats = {}
    if aug_kinds:
        copies = augment_task(data.clips, data.manifest, sr, augmentation, seed, data_dir, n_jobs)
        # copies exist only as clips: a representation with its own rate is computed from them at the pipeline's
        aug_feats = {k: features_task(copies, k, sr, dict(feature_opts.get(k, {})), data_dir) for k in aug_kinds}
    return CVInputs(
        manifest=data.manifest,
        splits=splits,
        features=feats,
        aug_features=aug_feats,
        feature_opts={k: dict(v) for k, v in feature_opts.items()},
        feature_rates={k: rate_of(k, sr) for k in kinds},
        reuse=reuse,
    )

"""Publish the leakage audit (tasks/data/audit.py) of a run: MLflow artifacts and tags, a warning when it leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.cache import save_text
from tasks.data.audit import audit, duplicates_csv, summary_markdown
from tasks.data.manifest import read_manifest
from tasks.logs import run_logger
from tasks.records import AuditVerdict, Dataset
from tasks.tracking import runs as tracking


def run_audit(data: Dataset, features_path: str, *, seed: int):
    """The audit of an ingested dataset (its manifest and clips) with its engineered vectors."""
    manifest = read_manifest(data.manifest)
    clips = np.load(data.clips, mmap_mode="r")
    return audit(manifest, clips, data.sample_rate, np.load(features_path, mmap_mode="r"), seed=seed)


@task(cache_policy=NO_CACHE)
def audit_task(data: Dataset, features_path: str, seed: int, parent_id: str, reports_dir: str) -> AuditVerdict:
    """Audit, then log audit/summary.md, audit/duplicates.csv and soundflow.audit.* tags; never changes the split."""
    log = run_logger(__name__)
    result = run_audit(data, features_path, seed=seed)
    md = summary_markdown(result)
    tracking.log_text(parent_id, md, "audit/summary.md")
    tracking.log_frame(parent_id, duplicates_csv(result), "audit/duplicates.csv")
    tracking.tag_run(parent_id, result.tags())
    create_markdown_artifact(markdown=md, key="leakage-audit", description="soundflow leakage audit")
    path = save_text(Path(reports_dir) / "audit.md", md)
    if result.leak:
        log.warning("leakage audit: %s", result.verdict)
    else:
        log.info("leakage audit: %s (%.1f s)", result.verdict, result.timings.get("total_s", 0.0))
    return AuditVerdict(
        verdict=result.verdict,
        leak=result.leak,
        gap_points=result.gap_points,
        group_pattern=result.proposed_pattern,
        summary=str(path),
    )

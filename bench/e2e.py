"""The whole case study on ESC-10 for each preset (default: quick, then default), cold then warm, with wall time
per stage. Cold = empty caches in a temp data dir; warm = the same parameters again (nothing changed).
Usage: .venv/bin/python bench/e2e.py [--presets quick,default] [--source ../shared/datasets/esc10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stage_times(parent_run_id: str) -> dict[str, float]:
    """Seconds per model family (summed over its nested MLflow runs) of one flow run."""
    from tasks.tracking import runs as tracking

    c = tracking.client()
    exp = c.get_run(parent_run_id).info.experiment_id
    out: dict[str, float] = defaultdict(float)
    for r in c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_run_id}'"):
        family = r.data.params.get("family") or r.data.tags.get("soundflow.kind", "other")
        out[family] += ((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000
    return dict(out)


def run_preset(name: str, source: str, tmp: Path, *, warm_only: bool) -> dict[str, float]:
    """One preset cold (empty caches under tmp) then warm; its figures."""
    os.environ["SOUNDFLOW_DATA"] = str(tmp / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    from flows.case_study import case_study
    from flows.params import preset

    params = preset(name, source=source, experiment=f"bench-e2e-{name}")
    figures: dict[str, float] = {}
    for label in ("warm",) if warm_only else ("cold", "warm"):
        t0 = time.perf_counter()
        state = case_study(params, return_state=True)
        wall = time.perf_counter() - t0
        result = state.result()
        figures[f"{label}_min"] = wall / 60
        print(
            f"\n{name} {label}: {wall / 60:.1f} min; best {result.best.name} {100 * result.best.cv_accuracy_mean:.2f}%"
        )
        for stage, seconds in sorted(stage_times(result.parent_run_id).items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<28} {seconds:8.1f} s (nested runs' time, summed over parallel runs)")
    # every ensemble (mixed, named pools, repeats) has family "ensemble"
    accuracies = result.accuracies()
    single = {r.name: accuracies[r.name] for r in result.results if r.family != "ensemble"}
    ens = {r.name: accuracies[r.name] for r in result.results if r.family == "ensemble"}
    for res_name, acc in sorted(accuracies.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * acc:6.2f}%  {res_name}")
    figures["best_single"] = 100 * max(single.values())
    if ens:
        figures["best_ensemble"] = 100 * max(ens.values())
    if result.champion:
        print(f"  champion: {result.champion.configuration} ({result.champion.reason})")
    if "cold_min" in figures:
        figures["ratio"] = figures["cold_min"] / figures["warm_min"]
    return figures


def main() -> None:
    from tasks.config import SHARED_ESC10
    from tasks.runtime import quiet_defaults

    quiet_defaults()  # as `soundflow run` does: no telemetry from the temporary Prefect server

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default="quick,default", help="comma-separated presets, each cold then warm")
    ap.add_argument("--source", default=str(SHARED_ESC10))
    ap.add_argument("--reuse", help="an earlier run's temp folder: measure the warm runs only")
    args = ap.parse_args()
    root = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="soundflow-e2e-"))
    out: dict[str, float] = {}
    for name in args.presets.split(","):
        figures = run_preset(name, args.source, root / name, warm_only=bool(args.reuse))
        out.update({f"{name}_{k}": v for k, v in figures.items()})
    print()
    for key, value in out.items():
        print(f"{key}={value:.2f}")


if __name__ == "__main__":
    main()

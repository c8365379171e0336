"""The whole case study (a preset, default: "default") on ESC-10 cold, then warm, with wall time per stage.

Cold = empty caches in a temp data dir; warm = the same parameters again (nothing changed).
Usage: .venv/bin/python bench/e2e.py [--preset default] [--source ../shared/datasets/esc10]
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


def stage_times(flow_run_id) -> dict[str, float]:
    """Seconds per stage (task name prefix) of one flow run, summed over its task runs, from Prefect's API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    import asyncio

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    out: dict[str, float] = defaultdict(float)
    for tr in asyncio.run(read()):
        stage = tr.name.split("-")[0].split(" ")[0]
        out[stage] += tr.total_run_time.total_seconds()
    return dict(out)


def main() -> None:
    from tasks.config import SHARED_ESC10

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--source", default=str(SHARED_ESC10))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soundflow-e2e-"))
    os.environ["SOUNDFLOW_DATA"] = str(tmp / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"

    from flows.case_study import case_study
    from flows.params import preset

    params = preset(args.preset, source=args.source, experiment="bench-e2e")
    figures: dict[str, float] = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        state = case_study(params, return_state=True)
        wall = time.perf_counter() - t0
        result = state.result()
        figures[f"{label}_s"] = wall
        print(f"\n{label}: {wall / 60:.1f} min; best {result['best']} {100 * result['best_accuracy']:.2f}%")
        for stage, seconds in sorted(stage_times(state.state_details.flow_run_id).items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<28} {seconds:8.1f} s (task time, summed over parallel tasks)")
    single = {k: v for k, v in result["results"].items() if not k.startswith(("ensemble", "cnn2d_logmel-repeats"))}
    ens = {k: v for k, v in result["results"].items() if k not in single}
    print()
    for name, acc in sorted(result["results"].items(), key=lambda kv: -kv[1]):
        print(f"  {100 * acc:6.2f}%  {name}")
    print(f"cold_min={figures['cold_s'] / 60:.2f}")
    print(f"warm_min={figures['warm_s'] / 60:.2f}")
    print(f"best_single={100 * max(single.values()):.2f}")
    if ens:
        print(f"best_ensemble={100 * max(ens.values()):.2f}")
    print(f"ratio={figures['cold_s'] / figures['warm_s']:.1f}")


if __name__ == "__main__":
    main()

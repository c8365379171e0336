"""Where users wait: the whole case study, cold (empty caches, empty Prefect home) and warm (the same run again,
nothing changed), with the time of each stage.

Runs, each in a fresh process (as `make run` is), in one temp folder:
  quick      on ESC-10, cold then warm
  quick_3k   on a generated 3,000-clip dataset (UrbanSound8K layout: 1,000 twelve-second source recordings, three
             4-s slices each, 10 classes, 4 folds by recording), cold
  default    on ESC-10, cold then warm
Flow time is the case_study call's wall time (the process's imports and the temporary Prefect server's start are
reported apart as process_s). The stage table comes from the flow's Prefect task runs: before CV (ingest, features,
copies, audit), cross-validation (first fold start to last fold end), after CV (ensembles, report, champion).

Usage: .venv/bin/python bench/e2e.py [--runs quick,quick_3k,default] [--source ../shared/datasets/esc10]
       [--dir /tmp/e2e --keep]
Ends with key=value lines: default_cold_s, default_warm_s, quick_cold_s, quick_warm_s, quick_3k_cold_s, the
stages' seconds and the figures (best single, best from scratch, champion; quick_3k's best).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT_TAG = "E2E_RESULT "
US8K_CLASSES = [f"sound {c}" for c in range(10)]
PRETRAINED = ("birdnet",)


def write_us8k(root: Path, n_recordings: int = 1000, *, slices: int = 3, folds: int = 4, seed: int = 0) -> Path:
    """An UrbanSound8K-layout dataset of generated audio (bench/scale.py's learnable classes at 16 kHz): each
    source recording (fsID) cut into `slices` 4-s slice files in one fold; metadata/UrbanSound8K.csv lists them."""
    import pandas as pd
    from joblib import Parallel, delayed

    chunks = [list(range(a, min(a + 50, n_recordings))) for a in range(0, n_recordings, 50)]
    rows = Parallel(n_jobs=2, backend="loky")(delayed(_write_us8k_chunk)(root, c, slices, folds, seed) for c in chunks)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pd.DataFrame([r for chunk in rows for r in chunk]).to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    return root


def _write_us8k_chunk(root: Path, ids: list[int], slices: int, folds: int, seed: int) -> list[dict]:
    import soundfile as sf
    from scale import recording

    sr, rows = 16000, []
    for fs_id in ids:
        label, fold = fs_id % 10, (fs_id // 10) % folds + 1
        y = recording(label, fs_id, sr=sr, duration_s=4.0 * slices, seed=seed)
        for k in range(slices):
            name = f"{1000 + fs_id}-{label}-0-{k}.wav"
            path = root / "audio" / f"fold{fold}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y[k * 4 * sr : (k + 1) * 4 * sr], sr, subtype="PCM_16")
            row = {"slice_file_name": name, "fsID": 1000 + fs_id, "start": 4.0 * k, "end": 4.0 * (k + 1)}
            rows.append({**row, "salience": 1, "fold": fold, "classID": label, "class": US8K_CLASSES[label]})
    return rows


def stage_table(t0: float, t1: float) -> dict[str, float]:
    """Seconds of the flow run between wall-clock t0 and t1, from its Prefect task runs: before_cv, cv, after_cv,
    and each task's run time summed by name (folds by model family; a name's numbers and fold dropped)."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    after = datetime.fromtimestamp(t0, timezone.utc)
    flt = TaskRunFilter(start_time=TaskRunFilterStartTime(after_=after))
    runs: list = []
    with get_client(sync_client=True) as client:  # the API answers at most 200 a call: page through them all
        while page := client.read_task_runs(task_run_filter=flt, limit=200, offset=len(runs)):
            runs += page
    runs = [r for r in runs if r.start_time and r.end_time]
    out: dict[str, float] = defaultdict(float)
    folds = [r for r in runs if r.name.startswith("fit ")]
    if folds:
        first = min(r.start_time.timestamp() for r in folds)
        last = max(r.end_time.timestamp() for r in folds)
        out["before_cv"], out["cv"], out["after_cv"] = first - t0, last - first, t1 - last
    for r in runs:
        if r.name.startswith("cross-validation"):  # the subflow's own task run: its span is "cv"
            continue
        if r.name.startswith("fit "):
            name = "folds " + r.name.split()[1]  # fit <configuration> fold <k>
        else:
            name = re.sub(r"-[0-9a-f]{3}$", "", r.name)
        out[name] += (r.end_time - r.start_time).total_seconds()
    return dict(out)


def child(run: str, phase: str, folder: Path, source: str) -> None:
    """One flow run in this fresh process; prints RESULT_TAG + JSON."""
    t_process = time.perf_counter()
    os.environ["SOUNDFLOW_DATA"] = str(folder / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["PREFECT_HOME"] = str(folder / "prefect")
    from tasks.runtime import quiet_defaults, start_prefect_api

    quiet_defaults()
    api_ready = start_prefect_api()  # as `soundflow run` does: beside the imports, and apart from the flow's time
    from flows.case_study import case_study
    from flows.params import preset

    api_ready()

    name = run.split("_")[0]
    params = preset(name, source=source, experiment=f"bench-e2e-{run}")
    t0_wall, t0 = time.time(), time.perf_counter()
    summary = case_study(params)
    flow_s = time.perf_counter() - t0
    stages = stage_table(t0_wall, t0_wall + flow_s)
    acc = summary.accuracies()
    singles = {r.name: 100 * acc[r.name] for r in summary.results if r.family != "ensemble"}
    scratch = {n: a for n, a in singles.items() if not any(p in n.split("/")[-1] for p in PRETRAINED)}
    ens = {r.name: 100 * acc[r.name] for r in summary.results if r.family == "ensemble"}
    champion = summary.champion
    result = {
        "run": run,
        "phase": phase,
        "flow_s": flow_s,
        "process_s": time.perf_counter() - t_process,
        "stages": stages,
        "accuracies": {**singles, **ens},
        "best": max({**singles, **ens}.items(), key=lambda kv: kv[1]),
        "best_single": max(singles.items(), key=lambda kv: kv[1]),
        "best_scratch": max(scratch.items(), key=lambda kv: kv[1]) if scratch else None,
        "best_ensemble": max(ens.items(), key=lambda kv: kv[1]) if ens else None,
        "champion": champion.configuration if champion else None,
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(run: str, phase: str, folder: Path, source: str) -> dict:
    log = folder / f"{phase}.log"
    cmd = [sys.executable, __file__, "--child", run, "--phase", phase, "--dir", str(folder), "--source", source]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        raise SystemExit(f"{run} {phase} failed (exit {proc.returncode}); see {log}")
    text = log.read_text()
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    result["wall_s"] = wall
    result["tracebacks"] = text.count("Traceback")
    result["errors"] = len(re.findall(r"\| ERROR|^ERROR", text, re.M))
    return result


def report(r: dict) -> None:
    print(
        f"\n{r['run']} {r['phase']}: flow {r['flow_s']:.1f} s (process {r['wall_s']:.1f} s), "
        f"{r['tracebacks']} Tracebacks, {r['errors']} ERROR lines"
    )
    for key in ("best", "best_single", "best_scratch", "best_ensemble"):
        if r.get(key):
            print(f"  {key:<14} {r[key][1]:6.2f}%  {r[key][0]}")
    print(f"  champion       {r['champion']}")
    for stage, seconds in sorted(r["stages"].items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<34} {seconds:8.1f} s")


def main() -> None:
    from tasks.config import SHARED_ESC10

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="quick,quick_3k,default")
    ap.add_argument("--source", default=str(SHARED_ESC10))
    ap.add_argument("--dir", help="work folder (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.phase, Path(args.dir), args.source)
    root = Path(args.dir or tempfile.mkdtemp(prefix="soundflow-e2e-"))
    out: dict[str, float | str] = {}
    for run in args.runs.split(","):
        folder = root / run
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        source = args.source
        if run == "quick_3k":
            t0 = time.perf_counter()
            source = str(write_us8k(root / "us8k-3k"))
            print(f"generated 3,000 clips in {time.perf_counter() - t0:.0f} s: {source}", flush=True)
        for phase in ("cold",) if run == "quick_3k" else ("cold", "warm"):
            r = run_child(run, phase, folder, source)
            report(r)
            out[f"{run}_{phase}_s"] = round(r["flow_s"], 1)
            if phase == "cold":
                for stage in ("before_cv", "cv", "after_cv"):
                    if stage in r["stages"]:
                        out[f"{run}_{stage}_s"] = round(r["stages"][stage], 1)
                for key in ("best", "best_single", "best_scratch", "best_ensemble"):
                    if r.get(key):
                        out[f"{run}_{key}"] = round(r[key][1], 2)
                if r["champion"]:
                    out[f"{run}_champion"] = r["champion"]
            out[f"{run}_{phase}_tracebacks"] = r["tracebacks"]
    if not args.keep and not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    print()
    for key, value in out.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()

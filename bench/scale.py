"""Scale-out: does the pipeline stay flat in memory and linear in time from 400 to 40,000 segments?

For each N (default 400, 4,000, 40,000 two-second segments) it writes a generated dataset of real 16-bit WAV files
(10-s recordings, 10 classes "class 0".."class 9", each class a noise band centre, a tone and an amplitude-modulation
rate, with jitter, gain, background noise and distractors: learnable, not trivial), then runs the project's own
stages on it, each in a fresh process so each peak is its own: ingestion (folders layout, 2-s windows, 16 kHz,
group 5-fold split), the engineered and log-mel features, four classical models under 5-fold CV on the engineered
vectors (fit_fold, folds one after another), and at 40,000 the log-mel CNN for a few epochs on fold 0 (fit_fold).
The generated audio and data of one N are removed before the next (unless --keep).

Usage: .venv/bin/python bench/scale.py [--sizes 400,4000,40000] [--cnn-sizes 40000] [--cnn-hyper '{"epochs": 2}']
       [--stages ingest,features_engineered,features_logmel,cv_classical,cnn] [--dir /tmp/x --keep]

Figures (per stage and N): wall_s = the stage's work in its process (imports excluded); clips_s = N / wall_s;
rss_mb = the process's peak RSS (getrusage ru_maxrss: counts pages of memory-mapped files it touched, which the
kernel may reclaim); anon_mb = peak anonymous memory (RssAnon of the process and its worker processes, sampled
every 50 ms: what the stage really holds). Key lines: rss_growth_4k_to_40k = max pipeline-stage peak RSS at 40,000
over 4,000 (flat: well under 2; holding everything: 10), anon_growth_4k_to_40k the same for anonymous memory,
throughput_ratio_40k_vs_4k = end-to-end clips/s (ingest + features + CV) at 40,000 over 4,000 (linear: ~1),
cnn_samples_per_s = training samples per second of the CNN (epochs x training rows / fit seconds),
accuracy_<N> = best classical model's 5-fold CV accuracy (chance 0.1), disk_peak_gb = largest disk use of one N.
A stage that streams through np.memmap keeps its anon memory flat but its peak RSS grows with the files it maps
(ingest writes the clip array through one: 10 GB at 40,000); madvise(MADV_DONTNEED) after each block keeps it flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16_000
RECORDING_S = 10.0
WINDOW_S = 2.0
N_CLASSES = 10
K = 5
SEED = 0
LOGMEL_OPTS = {"n_mels": 64, "n_fft": 1024, "hop_length": 512}  # 63 frames per 2-s window; CNN crop 50
CLASSICAL_MODELS = ["nearest_centroid", "gaussian_nb", "logreg", "rf50"]  # linear-ish in rows (no SVM, no kNN)
PIPELINE = ["ingest", "features_engineered", "features_logmel", "cv_classical"]
STAGES = ["generate", *PIPELINE, "cnn"]
RESULT_TAG = "SCALE_RESULT "
ENGINEERED_DIM = 1210


def class_table(n_classes: int = N_CLASSES, seed: int = SEED) -> dict[str, np.ndarray]:
    """Each class's noise-band centre, tone and modulation rate (Hz), neighbours close enough to be confused."""
    rng = np.random.default_rng([seed, 12])
    return {
        "band_hz": np.geomspace(300.0, 5000.0, n_classes)[rng.permutation(n_classes)],
        "tone_hz": np.geomspace(400.0, 3200.0, n_classes)[rng.permutation(n_classes)],
        "am_hz": np.linspace(1.5, 12.0, n_classes)[rng.permutation(n_classes)],
    }


def _band_noise(rng: np.random.Generator, n: int, sr: int, centre_hz: float, rel_width: float) -> np.ndarray:
    """White noise shaped in frequency by a Gaussian bump around centre_hz, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec *= np.exp(-0.5 * ((f - centre_hz) / (rel_width * centre_hz)) ** 2)
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f background noise, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.arange(len(spec)) + 1.0)
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def recording(label: int, index: int, *, sr: int = SR, duration_s: float = RECORDING_S, seed: int = SEED) -> np.ndarray:
    """One recording of class `label`: jittered noise band + tone bursts under an amplitude modulation at the
    class's rate, a distractor band of another class now and then, pink background; float32 in [-1, 1]."""
    table = class_table(seed=seed)
    rng = np.random.default_rng([seed, index])
    n = round(sr * duration_s)
    t = np.arange(n) / sr
    centre = table["band_hz"][label] * np.exp(rng.normal(0, 0.25))
    band = _band_noise(rng, n, sr, centre, rng.uniform(0.1, 0.4))
    am = table["am_hz"][label] * np.exp(rng.normal(0, 0.2))
    envelope = 1.0 - rng.uniform(0.2, 0.9) * 0.5 * (1 + np.sin(2 * np.pi * am * t + rng.uniform(0, 2 * np.pi)))
    tone_hz = table["tone_hz"][label] * np.exp(rng.normal(0, 0.08))
    gate = np.repeat(rng.random(int(np.ceil(duration_s * 4))) < rng.uniform(0.2, 0.9), sr // 4)[:n]
    tone = np.sqrt(2) * np.sin(2 * np.pi * tone_hz * t + rng.uniform(0, 2 * np.pi)) * gate
    y = envelope * (band + rng.uniform(0.2, 0.8) * tone)
    if rng.random() < 0.4:
        other = rng.choice([c for c in range(len(table["band_hz"])) if c != label])
        y += rng.uniform(0.3, 0.8) * _band_noise(rng, n, sr, table["band_hz"][other], 0.25)
    y += rng.uniform(0.5, 1.5) * _pink(rng, n)
    return (y * rng.uniform(0.05, 0.9) / (np.abs(y).max() + 1e-12)).astype(np.float32)


def write_dataset(root: Path, n_recordings: int, *, seed: int = SEED, n_jobs: int = 2) -> list[Path]:
    """n_recordings 16-bit WAV files under root/'class c'/ (classes in turn), written in parallel chunks."""
    from joblib import Parallel, delayed

    chunks = [range(a, min(a + 64, n_recordings)) for a in range(0, n_recordings, 64)]
    done = Parallel(n_jobs=n_jobs, backend="loky")(delayed(_write_chunk)(root, list(c), seed) for c in chunks)
    return [p for chunk in done for p in chunk]


def _write_chunk(root: Path, indices: list[int], seed: int) -> list[Path]:
    import soundfile as sf

    paths = []
    for i in indices:
        label = i % N_CLASSES
        path = Path(root) / f"class {label}" / f"rec{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, recording(label, i, seed=seed), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def disk_needed_bytes(n_segments: int) -> int:
    """Disk one N needs at its peak: WAVs, the clip array twice (ingest's scratch file + .npy), features, 10%."""
    per_rec = round(RECORDING_S / WINDOW_S)
    wav = (n_segments // per_rec) * RECORDING_S * SR * 2
    clips = n_segments * WINDOW_S * SR * 4
    frames = 1 + int(WINDOW_S * SR) // LOGMEL_OPTS["hop_length"]
    feats = n_segments * (ENGINEERED_DIM + LOGMEL_OPTS["n_mels"] * frames) * 4
    return int(1.1 * (wav + 2 * clips + feats))


def dir_bytes(path: Path) -> int:
    """Bytes of the files under path."""
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_size
            except OSError:
                pass
    return total


class AnonPeak:
    """Peak anonymous memory (RssAnon, MB) of this process and its descendants, sampled in a thread."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.peak_mb, self._stop = every_s, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def _sample(self) -> None:
        import psutil

        try:
            pids = [os.getpid()] + [c.pid for c in psutil.Process().children(recursive=True)]
        except psutil.Error:
            pids = [os.getpid()]
        self.peak_mb = max(self.peak_mb, sum(_rss_anon_kb(p) for p in pids) / 1024)


def _rss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _state(d: Path) -> dict:
    path = d / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _needs(d: Path, *keys: str) -> dict:
    """The state earlier stages left in d; an error naming the stage to run first if a key is missing."""
    state, first = _state(d), {"data": "ingest", "splits": "ingest", "features": "features_*"}
    missing = [k for k in keys if k not in state]
    if missing:
        raise RuntimeError(f"{d / 'state.json'}: no {missing} yet; run the {first[missing[0]]} stage first")
    return state


def _save_state(d: Path, **kw) -> None:
    (d / "state.json").write_text(json.dumps({**_state(d), **kw}, indent=1))


def _inputs(state: dict, kind: str):
    """The fold functions' inputs (one representation), as flows/case_study.py builds them."""
    from tasks.records import CVInputs

    return CVInputs(
        manifest=state["data"]["manifest"],
        splits=state["splits"],
        features={kind: state["features"][kind]},
        feature_opts={"logmel": LOGMEL_OPTS},
        reuse=False,
    )


def _stage_generate(d: Path, n: int) -> dict:
    n_rec = -(-n // round(RECORDING_S / WINDOW_S))
    paths = write_dataset(d / "audio" / f"scale{n}", n_rec)
    return {"n_recordings": len(paths), "audio_gb": dir_bytes(d / "audio") / 1e9}


def _stage_ingest(d: Path, n: int) -> dict:
    from tasks.data.ingest import build
    from tasks.data.split import split_task

    data = build(d / "audio" / f"scale{n}", dataset="folders", sr=SR, window_s=WINDOW_S, hop_s=WINDOW_S,
                 out_dir=d / "data" / "interim", n_jobs=2)  # fmt: skip
    t0 = time.perf_counter()
    splits = split_task.fn(data, "group_kfold", K, SEED, str(d / "data" / "interim"))
    _save_state(d, data=asdict(data), splits=splits)
    return {"n_clips": data.n_clips, "n_recordings": data.n_recordings, "split_s": time.perf_counter() - t0}


def _stage_features(d: Path, n: int, kind: str) -> dict:
    from tasks.features.representations import features_file

    state = _needs(d, "data")
    opts = LOGMEL_OPTS if kind == "logmel" else {}
    path = features_file(Path(state["data"]["clips"]), kind, SR, opts, d / "data" / "features", n_jobs=2)
    _save_state(d, features={**state.get("features", {}), kind: str(path)})
    shape = np.load(path, mmap_mode="r").shape
    return {"shape": list(shape), "gb": path.stat().st_size / 1e9}


def _accuracy(config, inputs, results_dir: Path, folds: list[int]) -> float:
    from tasks.data.manifest import read_manifest
    from tasks.evaluation.train import assemble, config_dir

    y = read_manifest(inputs.manifest)["class_id"].to_numpy()
    paths = [str(config_dir(config, inputs, results_dir) / f"fold-{k}.npz") for k in folds]
    proba, _, _ = assemble(paths, len(y), N_CLASSES, y)
    tested = ~np.isnan(proba).any(axis=1)
    return float((proba[tested].argmax(1) == y[tested]).mean())


def _stage_cv_classical(d: Path, n: int) -> dict:
    from threadpoolctl import threadpool_limits

    from tasks.data.split import n_folds
    from tasks.evaluation.train import fit_fold, plan

    state = _needs(d, "data", "splits", "features")
    inputs = _inputs(state, "engineered")
    specs = plan(CLASSICAL_MODELS, ["engineered"], [], seed=SEED, repeats={}, hyper={}, n_jobs=2)
    results_dir, out = d / "data" / "results", {"models": {}}
    for spec in specs:
        t0 = time.perf_counter()
        # one BLAS thread, as the flow's fold workers have (train.init_worker): two OpenBLAS threads on a busy
        # 2-core machine spin (logreg measured 50x slower)
        with threadpool_limits(limits=1, user_api="blas"):
            for fold in range(n_folds(inputs.splits)):
                fit_fold(spec, inputs, fold, str(results_dir))
        acc = _accuracy(spec, inputs, results_dir, list(range(n_folds(inputs.splits))))
        out["models"][spec.model] = {"accuracy": acc, "seconds": time.perf_counter() - t0}
    best = max(out["models"], key=lambda m: out["models"][m]["accuracy"])
    return {**out, "best_model": best, "best_accuracy": out["models"][best]["accuracy"]}


def _stage_cnn(d: Path, n: int, hyper: dict) -> dict:
    from tasks.data.split import load_splits
    from tasks.evaluation.train import fit_fold, plan
    from tasks.models.catalog import info

    state = _needs(d, "data", "splits", "features")
    inputs = _inputs(state, "logmel")
    (spec,) = plan(["cnn2d_logmel"], ["logmel"], [], seed=SEED, repeats={}, hyper={"cnn2d_logmel": hyper}, n_jobs=1)
    fold = fit_fold(spec, inputs, 0, str(d / "data" / "results"))
    n_train = len(load_splits(inputs.splits)[0][0])
    epochs = int({**info("cnn2d_logmel").defaults, **hyper}["epochs"])
    return {
        "n_train": n_train,
        "epochs": epochs,
        "fit_seconds": fold.fit_seconds,
        "samples_per_s": n_train * epochs / fold.fit_seconds,
        "fold0_accuracy": _accuracy(spec, inputs, d / "data" / "results", [0]),
    }


def child(stage: str, n: int, d: Path, cnn_hyper: dict) -> None:
    """Run one stage in this (fresh) process; print its figures as one tagged JSON line."""
    import logging

    from prefect.logging import disable_run_logger

    logging.basicConfig(level=logging.WARNING)
    jobs = {
        "generate": lambda: _stage_generate(d, n),
        "ingest": lambda: _stage_ingest(d, n),
        "features_engineered": lambda: _stage_features(d, n, "engineered"),
        "features_logmel": lambda: _stage_features(d, n, "logmel"),
        "cv_classical": lambda: _stage_cv_classical(d, n),
        "cnn": lambda: _stage_cnn(d, n, cnn_hyper),
    }
    if stage == "cnn":  # TensorFlow's import is not part of the training's cost
        import tasks.models.keras_model  # noqa: F401
    with disable_run_logger(), AnonPeak() as anon:
        t0 = time.perf_counter()
        extra = jobs[stage]()
        wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_TAG + json.dumps({"stage": stage, "n": n, "wall_s": wall, "rss_mb": rss_mb,
                                   "anon_mb": anon.peak_mb, **extra}), flush=True)  # fmt: skip


def run_stage(stage: str, n: int, d: Path, cnn_hyper: dict, logs: Path) -> dict:
    """One stage in a fresh process: its figures (+ the disk use of d sampled every 2 s while it ran), or
    {"error": ...} with the tail of its stderr."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--n", str(n), "--dir", str(d),
           "--cnn-hyper", json.dumps(cnn_hyper)]  # fmt: skip
    out_path, err_path = logs / f"{n}-{stage}.stdout", logs / f"{n}-{stage}.stderr"
    t0, disk = time.perf_counter(), dir_bytes(d)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=Path(__file__).parents[1])
        while proc.poll() is None:
            disk = max(disk, dir_bytes(d))
            time.sleep(2.0)
    disk = max(disk, dir_bytes(d))
    process_s = time.perf_counter() - t0
    lines = [ln for ln in out_path.read_text(errors="replace").splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(err_path.read_text(errors="replace").splitlines()[-15:])
        return {"stage": stage, "n": n, "disk_gb": disk / 1e9,
                "error": f"exit {proc.returncode}; stderr tail ({err_path}):\n{tail}"}  # fmt: skip
    return {**json.loads(lines[-1][len(RESULT_TAG) :]), "process_s": process_s, "disk_gb": disk / 1e9}


def run_size(n: int, root: Path, stages: list[str], cnn_hyper: dict, keep: bool) -> list[dict]:
    """Every stage asked for at one N (a stage whose input failed is skipped); removes the N's files after."""
    d = root / f"n{n}"
    need, free = disk_needed_bytes(n), shutil.disk_usage(root).free
    if need > free:
        return [{"stage": "generate", "n": n, "error": f"{root}: N={n} needs ~{need / 1e9:.1f} GB of disk, "
                 f"{free / 1e9:.1f} GB free; pass --dir on a larger disk or drop {n} from --sizes"}]  # fmt: skip
    d.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    needs = {"ingest": "generate", "features_engineered": "ingest", "features_logmel": "ingest",
             "cv_classical": "features_engineered", "cnn": "features_logmel"}  # fmt: skip
    done: dict[str, dict] = {}
    for stage in stages:
        if stage in needs and "error" in done.get(needs[stage], {"error": "not run"}):
            done[stage] = {"stage": stage, "n": n, "error": f"skipped: {needs[stage]} did not finish"}
        else:
            print(f"N={n}: {stage} ...", flush=True)
            done[stage] = run_stage(stage, n, d, cnn_hyper, logs)
        res = done[stage]
        if "error" in res:
            print(f"N={n}: {stage} FAILED: {res['error']}", flush=True)
        else:
            print(f"N={n}: {stage} {res['wall_s']:.1f} s, peak RSS {res['rss_mb']:.0f} MB, "
                  f"anon {res['anon_mb']:.0f} MB", flush=True)  # fmt: skip
    if not keep:
        shutil.rmtree(d, ignore_errors=True)
    return list(done.values())


def summary(results: list[dict], sizes: list[int]) -> dict[str, float | str]:
    """The key=value figures from every stage's result (missing ones left out)."""
    ok = {(r["n"], r["stage"]): r for r in results if "error" not in r}
    out: dict[str, float | str] = {"n_values": ",".join(str(s) for s in sizes)}
    for (n, stage), r in sorted(ok.items()):
        out[f"{stage}_wall_s_{n}"] = round(r["wall_s"], 2)
        out[f"{stage}_rss_mb_{n}"] = round(r["rss_mb"], 1)
        out[f"{stage}_anon_mb_{n}"] = round(r["anon_mb"], 1)
    for n in sizes:
        if (n, "cv_classical") in ok:
            out[f"accuracy_{n}"] = round(ok[(n, "cv_classical")]["best_accuracy"], 4)
            out[f"best_model_{n}"] = ok[(n, "cv_classical")]["best_model"]
    small, big = 4000, 40000
    for metric, key in (("rss_mb", "rss_growth"), ("anon_mb", "anon_growth")):
        for stage in PIPELINE:
            if (small, stage) in ok and (big, stage) in ok:
                out[f"{key}_4k_to_40k_{stage}"] = round(ok[(big, stage)][metric] / ok[(small, stage)][metric], 3)
        if all((m, s) in ok for m in (small, big) for s in PIPELINE):
            peak = {m: max(ok[(m, s)][metric] for s in PIPELINE) for m in (small, big)}
            out[f"{key}_4k_to_40k"] = round(peak[big] / peak[small], 3)
    rates = {}
    for m in sizes:
        if all((m, s) in ok for s in PIPELINE):
            rates[m] = m / sum(ok[(m, s)]["wall_s"] for s in PIPELINE)
            out[f"clips_per_s_{m}"] = round(rates[m], 2)
    if small in rates and big in rates:
        out["throughput_ratio_40k_vs_4k"] = round(rates[big] / rates[small], 3)
    cnn = [r for r in results if r["stage"] == "cnn" and "error" not in r]
    if cnn:
        last = max(cnn, key=lambda r: r["n"])
        out.update(cnn_n=last["n"], cnn_samples_per_s=round(last["samples_per_s"], 1),
                   cnn_peak_rss_mb=round(last["rss_mb"], 1), cnn_anon_mb=round(last["anon_mb"], 1),
                   cnn_fold0_accuracy=round(last["fold0_accuracy"], 4))  # fmt: skip
    if results:
        out["disk_peak_gb"] = round(max(r.get("disk_gb", 0.0) for r in results), 2)
    out["failed_stages"] = sum("error" in r for r in results)
    return out


def table(results: list[dict]) -> str:
    """One row per N and stage: wall seconds, clips/s, peak RSS and anonymous MB (or the failure)."""
    rows = [f"{'N':>6}  {'stage':<20} {'wall s':>8} {'clips/s':>9} {'peak RSS MB':>12} {'anon MB':>9}  note"]
    for r in results:
        if "error" in r:
            rows.append(f"{r['n']:>6}  {r['stage']:<20} {'-':>8} {'-':>9} {'-':>12} {'-':>9}  "
                        f"{r['error'].splitlines()[0]}")  # fmt: skip
            continue
        note = ""
        if r["stage"] == "cv_classical":
            note = ", ".join(f"{m} {v['accuracy']:.3f} ({v['seconds']:.0f} s)" for m, v in r["models"].items())
        elif r["stage"] == "cnn":
            note = f"{r['epochs']} epochs on {r['n_train']} rows, {r['samples_per_s']:.0f} samples/s"
        elif r["stage"] == "generate":
            note = f"{r['n_recordings']} WAV files, {r['audio_gb']:.2f} GB (not a pipeline stage)"
        elif r["stage"].startswith("features"):
            note = f"shape {tuple(r['shape'])}, {r['gb']:.2f} GB"
        elif r["stage"] == "ingest":
            note = f"{r['n_clips']} segments of {r['n_recordings']} recordings (split {r['split_s']:.1f} s)"
        rate = r["n"] / r["wall_s"] if r["wall_s"] else float("nan")
        rows.append(f"{r['n']:>6}  {r['stage']:<20} {r['wall_s']:>8.1f} {rate:>9.1f} {r['rss_mb']:>12.0f} "
                    f"{r['anon_mb']:>9.0f}  {note}")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="400,4000,40000", help="segments per dataset (5 per 10-s recording)")
    ap.add_argument("--cnn-sizes", default="40000", help="sizes at which to train the CNN ('' = never)")
    ap.add_argument("--cnn-hyper", default='{"epochs": 2}', help="JSON overrides of cnn2d_logmel's recipe")
    ap.add_argument("--stages", default=",".join(STAGES[1:]), help="pipeline stages to run (generate always runs)")
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir under /tmp, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the generated audio and data of every N")
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cnn_hyper = json.loads(args.cnn_hyper)
    if args.child:
        child(args.child, args.n, Path(args.dir), cnn_hyper)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cnn_sizes = {int(s) for s in args.cnn_sizes.split(",") if s}
    asked = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(asked) - set(STAGES))
    if unknown:
        ap.error(f"unknown stages {unknown}; choose from {STAGES[1:]}")
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="soundflow-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["SOUNDFLOW_DATA"] = str(root / "soundflow-data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    print(f"scale bench in {root}: sizes {sizes}, CNN at {sorted(cnn_sizes)}", flush=True)
    results: list[dict] = []
    try:
        for n in sizes:
            stages = ["generate"] + [s for s in STAGES[1:] if s in asked and (s != "cnn" or n in cnn_sizes)]
            results += run_size(n, root, stages, cnn_hyper, args.keep)
    finally:
        print("\n" + table(results))
        print("peak RSS counts the pages of memory-mapped clip and feature files a stage touched (the kernel can\n"
              "reclaim them); anon MB is the memory the stage and its workers hold themselves\n")  # fmt: skip
        for r in results:
            if "error" in r and not r["error"].startswith("skipped"):
                print(f"N={r['n']} {r['stage']} failed: {r['error']}\n")
        for key, value in summary(results, sizes).items():
            print(f"{key}={value}")
        if not args.dir and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

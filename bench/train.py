"""Time one training epoch of every Keras net on one ESC-10 fold, or calibrate a net by 5-fold CV.

    python bench/train.py                       # samples/s per architecture (fold 1 held out)
    python bench/train.py --cv                  # 5-fold CV of cnn2d_logmel with the default recipe
    python bench/train.py --cv --arch cnn1d_deep0 --kernel 7 --copies 0 --epochs 16 --batch 32

Reads the real ESC-10 (official folds = first character of the file name, Freesound source =
second field) without copying it; features are cached under data/interim/bench/. Ends with
key=value lines. The book's sox spectrogram images are approximated by a resized STFT
(same 100x160x3 shape, so the timing is the book net's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tasks.cache import digest, save_json  # noqa: E402
from tasks.config import SHARED_ESC10, stage_dir  # noqa: E402
from tasks.data.layouts.esc10 import BOOK_CLASSES  # noqa: E402
from tasks.data.layouts.esc10 import FOLDERS as ESC10_FOLDERS  # noqa: E402

SR = 22_050
CLIP_S = 5.0
N_MELS, N_FFT, HOP = 64, 2048, 1024  # the catalogue's log-mel (tasks/features/representations.py)


def list_clips(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """Sorted clip paths with book label ids, official folds and Freesound source ids."""
    paths, labels, folds, sources = [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = BOOK_CLASSES.index(ESC10_FOLDERS[folder.name.split(" - ", 1)[1]])
        for path in sorted(folder.glob("*.ogg")):
            fold, source, _ = path.stem.split("-")
            paths.append(path)
            labels.append(label)
            folds.append(int(fold))
            sources.append(int(source))
    return paths, np.array(labels), np.array(folds), np.array(sources)


def _fix_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _clip_views(
    path: str, n_copies: int, seed: int, hop: int = HOP, n_mels: int = N_MELS
) -> tuple[np.ndarray, np.ndarray]:
    """(1 + n_copies) log-mels of one clip (original first; copies pitch-shifted and stretched) and its 882-vector."""
    import librosa
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    raw = _fix_length(y, int(2 * sr))[:: sr // 441].astype(np.float32) / 2 + 0.5  # book: 2 s, every 100th at 44.1 kHz
    y = _fix_length(librosa.resample(y, orig_sr=sr, target_sr=SR), int(CLIP_S * SR))
    rng = np.random.default_rng(seed)
    views = [y]
    for _ in range(n_copies):
        n_steps, rate = rng.uniform(-2.0, 2.0), rng.uniform(0.85, 1.15)
        z = librosa.effects.pitch_shift(y, sr=SR, n_steps=n_steps)
        views.append(_fix_length(librosa.effects.time_stretch(z, rate=rate), len(y)))
    mels = [
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=v, sr=SR, n_fft=N_FFT, hop_length=hop, n_mels=n_mels),
            ref=1.0,
            amin=1e-10,
            top_db=80.0,
        )
        for v in views
    ]
    return np.stack(mels).astype(np.float32), raw


def load_features(n_copies: int, *, hop: int = HOP, n_mels: int = N_MELS, seed: int = 0, workers: int = 2) -> dict:
    """Log-mels (n, 1 + n_copies, 64, frames), raw 882-vectors, labels, folds, sources; cached by settings."""
    paths, labels, folds, sources = list_clips(SHARED_ESC10)
    cache = stage_dir("interim") / "bench" / f"esc10_{digest(n_mels, N_FFT, hop, SR, n_copies, seed, 'v1')}.npz"
    start = time.perf_counter()
    if cache.is_file():
        data = dict(np.load(cache))
    else:
        with ProcessPoolExecutor(workers) as pool:
            out = list(
                pool.map(
                    _clip_views,
                    map(str, paths),
                    [n_copies] * len(paths),
                    [seed * 100_000 + i for i in range(len(paths))],
                    [hop] * len(paths),
                    [n_mels] * len(paths),
                    chunksize=8,
                )
            )
        data = {"mels": np.stack([m for m, _ in out]), "raw": np.stack([r for _, r in out])}
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **data)
    data.update(labels=labels, folds=folds, sources=sources, seconds=time.perf_counter() - start)
    return data


def _book_images(mels: np.ndarray) -> np.ndarray:
    """Stand-in for the book's sox images: each log-mel resized to 100x160, scaled to [0, 1], 3 channels."""
    import tensorflow as tf

    x = (mels - mels.min()) / (mels.max() - mels.min())
    img = tf.image.resize(x[..., None], (100, 160)).numpy()
    return np.repeat(img, 3, axis=-1).astype(np.float32)


def _catalogue_pooling() -> str:
    """The head the catalogue's cnn2d_logmel recipe uses (tasks/models/deep.py)."""
    from tasks.models import catalog

    return catalog.info("cnn2d_logmel").defaults["pooling"]


def time_epochs(data: dict, *, test_fold: int = 1, epochs: int = 6) -> dict[str, float]:
    """Training samples per second of each architecture (median over epochs after the first)."""
    import keras

    from tasks.models.nets import MODEL_NAMES, build_model

    train = data["folds"] != test_fold
    y = keras.utils.to_categorical(data["labels"][train], len(BOOK_CLASSES))
    mels = data["mels"][train, 0]
    inputs = {"raw": data["raw"][train][..., None], "logmel": mels[:, :, :86, None], "book": _book_images(mels)}
    results = {}
    for name in MODEL_NAMES:
        x = inputs["logmel" if name == "cnn2d_logmel" else "book" if name == "cnn2d_book" else "raw"]
        batch = 16 if name.startswith("cnn2d") else 32
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        hyper = {"pooling": _catalogue_pooling()} if name == "cnn2d_logmel" else {}
        model = build_model(name, x.shape[1:], len(BOOK_CLASSES), **hyper)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        stamps = []
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=epochs,
            verbose=0,
            callbacks=[
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda *_, stamps=stamps: stamps.append(time.perf_counter())
                )
            ],
        )
        seconds = statistics.median(np.diff(stamps))
        results[name] = len(x) / seconds
        print(
            f"{name:14s} params={model.count_params():>9,d} batch={batch:2d} epoch={seconds:6.2f}s "
            f"samples/s={len(x) / seconds:8.1f}",
            flush=True,
        )
    return results


def cross_validate(data: dict, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[float]]:
    """Official 5-fold CV: train on the other folds' clips (+ copies), score the held-out originals.

    cnn2d_logmel with crops is built length-agnostic, so each fold scores both the full clip
    ("full") and the mean softmax of evenly spaced crops ("crops").
    """
    from tasks.models.keras_model import KerasClassifier

    is_2d = args.arch.startswith("cnn2d")
    both = args.arch == "cnn2d_logmel" and bool(args.crop)
    mels = data["mels"] - data["mels"].max(axis=(-2, -1), keepdims=True) if args.clip_norm else data["mels"]
    accs: dict[str, list[float]] = {}
    fit_seconds: list[float] = []
    recipe = {k: v for k, v in vars(args).items() if k not in ("folds", "verbose")}
    for fold in args.folds:
        done = stage_dir("interim") / "bench" / f"cv_{digest(recipe, fold)}.json"
        if done.is_file():  # a killed run resumes at the first unfinished fold
            result = json.loads(done.read_text())
            for mode, acc in result["accuracy"].items():
                accs.setdefault(mode, []).append(acc)
            fit_seconds.append(result["fit_seconds"])
            print(f"fold {fold}: {result['line']} (cached)", flush=True)
            continue
        train, test = data["folds"] != fold, data["folds"] == fold
        views = 1 + args.copies if is_2d else 1  # 1D: originals only
        if is_2d:
            x_train, x_test = mels[train, :views].reshape(-1, *mels.shape[2:]), mels[test, 0]
        else:
            x_train, x_test = data["raw"][train], data["raw"][test]
        est = KerasClassifier(
            args.arch,
            {
                **({"kernel": args.kernel} if args.kernel else {}),
                **({"pooling": args.pooling} if args.arch == "cnn2d_logmel" else {}),
                **({"dropout": args.dropout} if args.dropout is not None else {}),
            }
            or None,
            epochs=args.epochs,
            batch_size=args.batch,
            learning_rate=args.lr,
            schedule=args.schedule,
            seed=args.seed + fold,
            validation=args.validation,
            spec_augment={} if (args.spec_augment and is_2d) else None,
            mixup_alpha=args.mixup,
            random_crop_frames=args.crop if is_2d else None,
            predict_crops=0 if both else args.predict_crops,
            verbose=args.verbose,
        ).fit(x_train, np.repeat(data["labels"][train], views), groups=np.repeat(data["sources"][train], views))
        modes = {"crops": args.predict_crops, "full": 0} if both else {"crops": args.predict_crops}
        fold_acc, fold_proba = {}, {}
        if is_2d and args.copies:  # test-time augmentation: mean over the test clip and its own copies
            modes["tta"] = 0 if both else args.predict_crops
        for mode, n_crops in modes.items():
            est.set_params(predict_crops=n_crops)
            if mode == "tta":
                proba = np.mean([est.predict_proba(mels[test, v]) for v in range(1 + args.copies)], axis=0)
            else:
                proba = est.predict_proba(x_test)
            fold_proba[mode] = proba.round(5).tolist()
            fold_acc[mode] = float(np.mean(est.classes_[proba.argmax(1)] == data["labels"][test]))
            accs.setdefault(mode, []).append(fold_acc[mode])
        line = (
            " ".join(f"accuracy_{m}={a:.4f}" for m, a in fold_acc.items())
            + f" train_samples={len(x_train)} fit={est.fit_seconds_:.0f}s final_loss={est.history_['loss'][-1]:.3f}"
            + f" final_train_acc={est.history_['accuracy'][-1]:.3f}"
        )
        fit_seconds.append(est.fit_seconds_)
        save_json(
            done,
            {
                "accuracy": fold_acc,
                "line": line,
                "fit_seconds": est.fit_seconds_,
                "test_index": np.flatnonzero(test).tolist(),
                "proba": fold_proba,
            },
        )  # for ensemble trials
        print(f"fold {fold}: {line}", flush=True)
    return accs, fit_seconds


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children: wall time on a shared machine overstates cost."""
    return sum(
        r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv", action="store_true", help="run the 5-fold CV calibration instead of the epoch timing")
    p.add_argument("--arch", default="cnn2d_logmel")
    p.add_argument("--kernel", type=int, default=None)
    p.add_argument("--pooling", default=_catalogue_pooling(), help="cnn2d_logmel head: time_stats | global")
    p.add_argument("--dropout", type=float, default=None, help="cnn2d_logmel dropout before the classifier")
    p.add_argument("--copies", type=int, default=2, help="pitch/stretch copies per training clip (2D)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--mixup", type=float, default=0.3)
    p.add_argument("--spec-augment", type=int, default=1)
    p.add_argument("--hop", type=int, default=HOP, help="log-mel hop in samples at 22,050 Hz")
    p.add_argument("--mels", type=int, default=N_MELS, help="mel bands")
    p.add_argument("--crop", type=int, default=86, help="training crop in frames (86 = 4 s at hop 1024)")
    p.add_argument("--predict-crops", type=int, default=5)
    p.add_argument("--clip-norm", type=int, default=0, help="1: subtract each clip's max dB (loudness-free)")
    p.add_argument("--validation", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--verbose", type=int, default=0)
    args = p.parse_args(argv)

    start = time.perf_counter()
    data = load_features(args.copies if args.cv else 0, hop=args.hop, n_mels=args.mels)
    print(f"features: {data['mels'].shape} in {data['seconds']:.0f}s", flush=True)
    if not args.cv:
        rates = time_epochs(data)
        for name, rate in rates.items():
            print(f"samples_per_s_{name}={rate:.1f}")
        print(f"book_vs_logmel_time_ratio={rates['cnn2d_logmel'] / rates['cnn2d_book']:.2f}")
        return 0
    accs, fit_seconds = cross_validate(data, args)
    wall = time.perf_counter() - start
    print(f"recipe={vars(args)}")
    print(f"arch={args.arch}")
    for mode, values in accs.items():
        print(f"fold_accuracies_{mode}=" + ",".join(f"{a:.4f}" for a in values))
        print(f"mean_accuracy_{mode}={np.mean(values):.4f}")
        print(f"std_error_{mode}={np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0:.4f}")
    print(
        f"mean_accuracy={np.mean(accs['full' if 'full' in accs else 'crops']):.4f}"
    )  # whole clip, as the catalogue scores
    print(f"feature_seconds={data['seconds']:.0f}")
    print(f"fit_seconds_total={sum(fit_seconds):.0f}")
    print(f"wall_seconds={wall:.0f}")
    print(f"cpu_seconds={_cpu_seconds():.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Process set-up: telemetry off, TensorFlow's start-up noise filtered out, worker thread caps."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Callable, Iterator

# Lines native TensorFlow prints on every start on a CPU-only machine; they say nothing is wrong.
TF_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|computation placer already registered|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|This TensorFlow binary is optimized to use available CPU instructions|To enable the following instructions"
    r"|Created TensorFlow Lite XNNPACK delegate for CPU"
)


def quiet_defaults(environ=os.environ) -> dict[str, str]:
    """Settings a run starts with unless the user set them (environment or Prefect profile); returns those set.

    Call it before anything imports prefect: Prefect reads its settings once, at import, so a variable set
    afterwards changes nothing in this process (only in the processes it spawns). `soundflow` calls it first.

    - PREFECT_SERVER_ANALYTICS_ENABLED=false: the temporary Prefect server's telemetry service, which offline
      logs "ERROR ... Failed to send telemetry" and, under load, a "database is locked" traceback.
    - PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90: the temporary server's start-up wait (20 s by default;
      the first start in an empty PREFECT_HOME creates and migrates its database, which took longer here).
    - TF_CPP_MIN_LOG_LEVEL=3: TensorFlow's native INFO/WARNING/ERROR log lines (a real failure still raises).
    """
    wanted = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    in_profile = prefect_profile_settings(environ)
    chosen = {k: v for k, v in wanted.items() if k not in environ and k not in in_profile}
    environ.update(chosen)
    return chosen


def start_prefect_api() -> Callable[[], None]:
    """Start Prefect's temporary server now, in a thread, when the run will need one (no PREFECT_API_URL): Prefect
    would start it at the first flow call and wait for it there (3-6 s here); begun before the flow's imports, the
    server process starts beside them. Call the returned function before the first flow runs: it waits until the
    server answers (Prefect marks it running as soon as it launches the process). If the start fails, the flow's
    own attempt reports why. Call quiet_defaults() first."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with contextlib.suppress(Exception):  # a failed start is left to the flow's own attempt, which says why
            SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-api-start", daemon=True)
    thread.start()
    return thread.join


def prefect_profile_settings(environ=os.environ) -> dict[str, str]:
    """The settings of the active Prefect profile, read from its TOML file without importing prefect
    (importing it would freeze its settings before ours are set); {} when there is no readable profile."""
    home = Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    name = environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    found = profiles.get("profiles", {}).get(name, {})
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


@contextlib.contextmanager
def filtered_native_stderr(noise: re.Pattern = TF_STARTUP_NOISE) -> Iterator[None]:
    """Capture file descriptor 2 (where C++ libraries write) and replay every line but the known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line for line in tmp.read().decode(errors="replace").splitlines(keepends=True) if not noise.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def start_tensorflow_quietly() -> None:
    """Import TensorFlow/Keras and run one op (which loads the rest of the runtime) with the start-up noise
    filtered out; modules that import keras call this first."""
    if "tensorflow" in sys.modules:
        return
    with filtered_native_stderr():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.constant(0.0) + 1.0


# Where a run's process lives, as MLflow run tags: a later run closes runs whose process is gone (tracking/ghosts.py).
HOST_TAG, PID_TAG, PID_START_TAG = "soundflow.host", "soundflow.pid", "soundflow.pid_start"


def pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tags() -> dict[str, str]:
    """Where this process runs, as run tags."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    start = pid_start(pid)
    if start:
        tags[PID_START_TAG] = start
    return tags


def init_worker(n_workers: int) -> None:
    """Process-pool initializer: split the cores between the workers before TensorFlow starts.

    Two one-thread Keras trainings side by side finish sooner than the same two in turn on two threads
    each (bench/train.py)."""
    limit_threads(max(1, (os.cpu_count() or 1) // max(1, n_workers)))


def limit_threads(default: int) -> None:
    """Cap this process's TensorFlow and BLAS threads: at OMP_NUM_THREADS if something set it (a Dask nanny sets
    1), else at `default`. Runs in the local pool's initializer and again at the start of every fold task, so a
    Dask worker started without a nanny gets the same cap (too late for a TensorFlow already started there)."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(default)
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's native log lines (see quiet_defaults)
    # The variables come too late for BLAS: unpickling the initializer (or the task) in the worker imported NumPy,
    # whose OpenBLAS sized its pool from the core count. Set it now: two workers x two spinning BLAS threads on 2
    # cores ran the logistic regression's small products 40x slower (12-25 s per ESC-10 fold against 0.3 s).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")

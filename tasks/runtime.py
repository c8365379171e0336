"""Process set-up for a quiet, healthy terminal: telemetry off, TensorFlow's start-up noise filtered out."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

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

    - PREFECT_SERVER_ANALYTICS_ENABLED=false: the temporary Prefect server's telemetry service, which offline
      logs "ERROR ... Failed to send telemetry" and, under load, a "database is locked" traceback.
    - PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90: the temporary server's start-up wait (20 s by default,
      which a busy 2-core machine exceeded here: the run died with "Timed out ... ephemeral Prefect API server").
    - TF_CPP_MIN_LOG_LEVEL=3: TensorFlow's native INFO/WARNING/ERROR log lines (a real failure still raises).
    """
    wanted = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    chosen = {k: v for k, v in wanted.items() if k not in environ and not _in_prefect_profile(k)}
    environ.update(chosen)
    return chosen


def _in_prefect_profile(name: str) -> bool:
    if not name.startswith("PREFECT_"):
        return False
    try:
        from prefect.settings import load_current_profile

        return any(getattr(s, "name", str(s)) == name for s in load_current_profile().settings)
    except Exception:  # no readable profile: nothing set there
        return False


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

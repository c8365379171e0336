"""Classify audio files with a registered model (default: the dataset's champion)."""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.tracking.registry import ALIAS, default_model_name


@task(cache_policy=NO_CACHE)
def classify_task(files: list[str], model_uri: str) -> list[dict]:
    """Load the pyfunc and classify every file; rows keep the input order, a bad file gets an error row."""
    from mlflow.exceptions import MlflowException

    from tasks import config
    from tasks.errors import SoundflowError
    from tasks.tracking.pyfunc import load_model

    try:
        model = load_model(model_uri)
    except MlflowException as exc:
        raise SoundflowError(
            f"cannot load {model_uri} from {config.tracking_uri()}: {exc.message.splitlines()[0]}. "
            "Register a champion first (`soundflow run` with --register-champion), or pass "
            "--model/--alias of an existing registered model."
        ) from exc
    frame = model.predict(pd.DataFrame({"path": [str(f) for f in files]}))
    rows = []
    for file, rec in zip(files, frame.to_dict("records")):
        row = {"file": str(file), **{k: (None if _missing(v) else v) for k, v in rec.items()}}
        row["error"] = row.get("error") or None
        row["warning"] = row.get("warning") or None
        rows.append(row)
    return rows


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def format_row(row: dict) -> str:
    """file<TAB>label<TAB>probability[<TAB>warning], or file<TAB>ERROR<TAB>reason."""
    if row.get("error"):
        return f"{row['file']}\tERROR\t{row['error']}"
    warning = f"\tWARNING: {row['warning']}" if row.get("warning") else ""
    return f"{row['file']}\t{row['label']}\t{row['probability']:.3f}{warning}"


@flow(name="predict", validate_parameters=True)
def predict(files: list[str], model_name: str | None = None, alias: str = ALIAS) -> list[dict]:
    """models:/<model_name>@<alias> on each file (default: the champion registered last); one line per file."""
    uri = f"models:/{model_name or default_model_name()}@{alias}"
    rows = classify_task(list(files), uri)
    log = get_run_logger()
    for row in rows:
        print(format_row(row), flush=True)
    n_bad = sum(1 for r in rows if r["error"])
    log.info("%s: %d file(s) classified, %d failed", uri, len(rows) - n_bad, n_bad)
    return rows

"""One logger for task code: Prefect's run logger inside a flow or task run, the module logger elsewhere."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger in a run (shown in the UI), else logging.getLogger(name) (tests, benches)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)

"""Fixtures shared by the flow tests: the real Prefect and MLflow servers (defined with the serve tests)."""

from tests.flows.test_serve import servers  # noqa: F401

"""Fixtures for the operations tests (import them from tests/conftest.py or per module)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.source_server import SAMPLE


@pytest.fixture
def sample_sources(settings, tmp_path):
    """The committed sample data as the sources; AP batches land in a temporary directory."""
    settings.SALES_SOURCE_URL = f"file://{SAMPLE / 'sales'}"
    settings.TIMECLOCK_SOURCE_URL = f"file://{SAMPLE / 'timeclock'}"
    settings.INVOICE_SOURCE_URL = f"file://{SAMPLE / 'invoices'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"
    return tmp_path / "accounting"


def run_job(operation: str, params: dict[str, Any] | None = None) -> Any:
    """Launch as the API does, but run the job here, synchronously, through the runner."""
    from operations import registry, runner
    from tasks.selectors import get_task

    clean = registry.validate_params(operation, params or {})
    from tasks import tracker

    handle = tracker.create_task(operation, params=clean, launched_by="test")
    runner.run_task(operation, handle.task_id, clean)
    return get_task(handle.task_id)

"""Running a job the way a launch does, but here and synchronously (tests of the jobs)."""

from __future__ import annotations

from typing import Any

from operations import registry, runner
from tasks import tracker
from tasks.selectors import get_task


def run_job(operation: str, params: dict[str, Any] | None = None) -> Any:
    """Launch as the API does, but run the job here, synchronously, through the runner."""
    clean = registry.validate_params(operation, params or {})
    handle = tracker.create_task(operation, params=clean, launched_by="test")
    runner.run_task(operation, handle.task_id, clean)
    return get_task(handle.task_id)

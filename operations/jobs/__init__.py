"""The jobs. Each is ``run(task: TaskHandle, params: dict) -> result`` and reports only
through the handle; ``operations.runner`` opens the task and completes it."""

from __future__ import annotations


class JobFailed(Exception):
    """The job cannot do its work at all (bad date, no data, source down): the task fails
    with this message. Per-item problems are ``task.error()`` instead, and the job goes on."""

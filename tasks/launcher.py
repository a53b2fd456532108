"""The launcher: what the status store's doors ask of whoever runs the jobs.

``tasks`` stores, reports, reads and delivers task statuses and knows nothing of
the jobs; ``operations`` (the jobs, launching, schedules) depends on it, never
the reverse. Where a door of ``tasks`` needs the jobs' side (the launch and
cancel endpoints, the admin's cancel, the monitor's Run bar and header, a task
page's notes) it asks the ``Launcher`` that ``operations`` registers at start-up
(``OperationsConfig.ready``). Without one, launching is refused and the pages
offer nothing to run.

The refusals are defined here, so that ``tasks.exceptions`` maps them to HTTP in
one table without knowing who raised them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import TaskStatus


class ServiceError(Exception):
    """A launch or cancel refused; the message is safe to show."""


class NotAllowed(ServiceError):
    """The user may not do this to this operation (its reader role is missing)."""


class NoSuchTask(ServiceError):
    """Unknown, malformed, expired, or hidden from this user: the same answer for all."""


class LaunchInProgress(ServiceError):
    """An Idempotency-Key whose first launch has not finished yet."""


class KeyReused(ServiceError):
    """An Idempotency-Key used before for a different launch."""


class QueueUnavailable(ServiceError):
    """The job queue (the broker) could not take the job; the task ended ``failed``."""


@dataclass(frozen=True)
class Launched:
    task: TaskStatus
    # False when an Idempotency-Key named an earlier launch, which is returned instead.
    created: bool


@dataclass(frozen=True)
class LaunchRequest:
    """``POST /task-status`` as the launcher takes it (parameters not yet validated)."""

    operation: str
    params: dict[str, Any] | None
    user: AbstractBaseUser | AnonymousUser
    hidden: frozenset[str]
    request_id: str | None = None
    idempotency_key: str | None = None
    rerun_of: str | None = None
    notify: bool = False


class Launcher(Protocol):
    def launch(self, request: LaunchRequest) -> Launched:
        """Validate, create the task and send its job; ``ServiceError`` or DRF's
        ``ValidationError`` when refused."""

    def cancel(self, task_id: str, *, by: str, hidden: frozenset[str]) -> TaskStatus:
        """Stop a run (queued: now; running: at its next step)."""

    def run_bar(self, hidden: frozenset[str]) -> list[dict[str, Any]]:
        """The operations of the monitor's Run form: name, label, description,
        available, fields (``hidden`` left out)."""

    def can_run_again(self, operation: str) -> bool:
        """Whether a run of ``operation`` can be launched again from its page."""

    def monitor_notes(self, hidden: frozenset[str]) -> dict[str, Any]:
        """The monitor header's lines: ``runner_problems`` (words) and ``unacknowledged``."""

    def task_notes(
        self, task: TaskStatus, user: AbstractBaseUser | AnonymousUser
    ) -> dict[str, Any]:
        """What a task page says beyond the document (retries, running long, …)."""


class NoLauncher:
    """No job runner installed: nothing to launch, run or say."""

    def launch(self, request: LaunchRequest) -> Launched:
        raise NotAllowed("no job runner is installed: nothing can be launched here")

    def cancel(self, task_id: str, *, by: str, hidden: frozenset[str]) -> TaskStatus:
        raise NoSuchTask(f"no task {task_id} is run here")

    def run_bar(self, hidden: frozenset[str]) -> list[dict[str, Any]]:
        return []

    def can_run_again(self, operation: str) -> bool:
        return False

    def monitor_notes(self, hidden: frozenset[str]) -> dict[str, Any]:
        return {"runner_problems": [], "unacknowledged": 0}

    def task_notes(
        self, task: TaskStatus, user: AbstractBaseUser | AnonymousUser
    ) -> dict[str, Any]:
        return {}


_launcher: Launcher = NoLauncher()


def register(launcher: Launcher) -> None:
    """Install the job runner's launcher (once, at start-up)."""
    global _launcher
    _launcher = launcher


def launcher() -> Launcher:
    return _launcher

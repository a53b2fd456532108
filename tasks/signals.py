"""Signals of the task status service.

``task_finished`` is sent once a change that ended a task (``completed``,
``completed_with_errors`` or ``failed``) has been committed, with the row as it
was written (``task``). It is sent by ``tasks.tracker`` only, exactly once per
task (a terminal task cannot change again), for every way a task ends: its
job, the worker-lost reaper, the stale check, a cancel, a failed enqueue.

Receivers run in the writer's process and thread right after its commit: they
must be quick (enqueue work, never do network I/O themselves). A receiver that
raises is logged, never raised into the writer: the change is already stored.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

from .models import TaskStatus

logger = logging.getLogger(__name__)

task_finished = Signal()  # kwargs: task (the TaskStatus row as written)


def send_task_finished(task: TaskStatus) -> None:
    """Send ``task_finished``; whatever a receiver does, this never raises."""
    try:
        responses = task_finished.send_robust(sender=TaskStatus, task=task)
    except Exception:  # send_robust catches receivers' errors; this is for the rest
        logger.exception("task %s: task_finished not sent", task.task_id)
        return
    for receiver, response in responses:
        if isinstance(response, BaseException):
            logger.error(
                "task %s: task_finished receiver %s failed: %r",
                task.task_id,
                getattr(receiver, "__qualname__", receiver),
                response,
                exc_info=response,
            )

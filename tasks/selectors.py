"""Reads of TaskStatus. The one place that knows expired tasks are invisible, and that a
task of a personal-data operation does not exist for someone without its reader role
(``hidden``: the operations hidden from the reader, from ``auth.permissions``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from django.db.models import Q, QuerySet

from .models import TaskEvent, TaskStatus

NOTHING_HIDDEN: frozenset[str] = frozenset()
ALL_COLUMNS: tuple[str, ...] = ()


def visible_tasks(
    *, now: float | None = None, hidden: frozenset[str] = NOTHING_HIDDEN
) -> QuerySet[TaskStatus]:
    """Every task that has not expired, whether or not the purge has run yet."""
    qs = TaskStatus.objects.filter(expires_at__gt=time.time() if now is None else now)
    return qs.exclude(operation__in=hidden) if hidden else qs


def get_task(
    task_id: str, *, hidden: frozenset[str] = NOTHING_HIDDEN, only: tuple[str, ...] = ALL_COLUMNS
) -> TaskStatus | None:
    """The task, or None for an unknown, malformed, expired or hidden id.

    ``only``: the columns to read (the REST document needs 11 of 20); others
    are read on first access, one query each.
    """
    try:
        key = uuid.UUID(str(task_id))
    except (ValueError, TypeError, AttributeError):
        return None
    # get(), not first(): a primary-key read needs no ORDER BY.
    try:
        tasks = visible_tasks(hidden=hidden)
        return (tasks.only(*only) if only else tasks).get(pk=key)
    except TaskStatus.DoesNotExist:
        return None


def latest_run(operation: str, **params: str) -> TaskStatus | None:
    """The newest unexpired task of ``operation`` launched with these parameter values."""
    match = {f"params__{name}": value for name, value in params.items()}
    return visible_tasks().filter(operation=operation, **match).order_by("-created_at").first()


def task_events(task: TaskStatus, *, after_version: int = 0) -> list[TaskEvent]:
    """A task's timeline, oldest first, from after ``after_version`` (read only for a
    task the reader may see): a page that has the timeline asks for what is new."""
    return list(
        TaskEvent.objects.filter(task_id=task.task_id, version__gt=after_version).order_by(
            "version", "id"
        )
    )


def _listed(
    *,
    operation: str | None,
    statuses: Iterable[str] | None,
    updated_since: float | None,
    after: tuple[float, str] | None,
    limit: int,
    hidden: frozenset[str],
) -> QuerySet[TaskStatus]:
    qs = visible_tasks(hidden=hidden)
    if operation:
        qs = qs.filter(operation=operation)
    if statuses:
        qs = qs.filter(status__in=list(statuses))
    if updated_since is not None:
        qs = qs.filter(updated_at__gte=updated_since)
    if after is not None:
        created_at, task_id = after
        qs = qs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, task_id__lt=task_id))
    return qs.order_by("-created_at", "-task_id")[:limit]


def list_tasks(
    *,
    operation: str | None = None,
    statuses: Iterable[str] | None = None,
    updated_since: float | None = None,
    after: tuple[float, str] | None = None,
    limit: int = 500,
    hidden: frozenset[str] = NOTHING_HIDDEN,
) -> list[TaskStatus]:
    """Newest ``created_at`` first; ``after`` is the (created_at, task_id) keyset position."""
    return list(
        _listed(
            operation=operation,
            statuses=statuses,
            updated_since=updated_since,
            after=after,
            limit=limit,
            hidden=hidden,
        )
    )


class DocumentRow(NamedTuple):
    """The columns of a task its document shows, without a model instance.

    ``tasks.serializers.task_document`` takes it as it takes a ``TaskStatus``
    (same attributes, the model's own ``progress``): a list page of a hundred
    tasks spent more on building model instances than on its query.
    """

    task_id: uuid.UUID
    operation: str
    status: str
    progress_current: int | None
    progress_total: int | None
    progress_message: str
    result: Any
    error: str | None
    created_at: float
    updated_at: float
    version: int

    @property
    def progress(self) -> dict | None:
        return _MODEL_PROGRESS(self)


# the model's own property, so that a row and a model give the same progress object
_MODEL_PROGRESS: Callable[[Any], dict | None] = vars(TaskStatus)["progress"].fget
# What a task's document reads (``tasks.serializers.task_document``): 11 of its 20 columns.
DOCUMENT_COLUMNS: tuple[str, ...] = DocumentRow._fields


def list_document_rows(
    *,
    operation: str | None = None,
    statuses: Iterable[str] | None = None,
    updated_since: float | None = None,
    after: tuple[float, str] | None = None,
    limit: int = 500,
    hidden: frozenset[str] = NOTHING_HIDDEN,
) -> list[DocumentRow]:
    """``list_tasks`` for the REST list: the document's columns only, as ``DocumentRow``."""
    rows = _listed(
        operation=operation,
        statuses=statuses,
        updated_since=updated_since,
        after=after,
        limit=limit,
        hidden=hidden,
    ).values_list(*DocumentRow._fields)
    return [DocumentRow._make(row) for row in rows]


def changed_since(
    since: float,
    *,
    operations: Iterable[str] = (),
    task_ids: Iterable[str] = (),
    everything: bool = False,
    hidden: frozenset[str] = NOTHING_HIDDEN,
) -> list[TaskStatus]:
    """Catch-up: current documents of matching tasks updated at or after ``since``, oldest first.

    ``since`` is whole Unix seconds on the wire, so the comparison is against the
    start of that second: a client that sends the ``updated_at`` it last saw gets
    that change again rather than missing a later one in the same second.
    """
    qs = visible_tasks(hidden=hidden).filter(updated_at__gte=float(int(since)))
    if not everything:
        match = Q(pk__in=[])
        ops = list(operations)
        ids = list(task_ids)
        if ops:
            match |= Q(operation__in=ops)
        if ids:
            match |= Q(pk__in=ids)
        qs = qs.filter(match)
    return list(qs.order_by("updated_at", "task_id"))

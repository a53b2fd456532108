"""The staff pages: the live monitor at ``/`` and one task's detail.

Both are thin: the server renders the frame and the current documents (the
same ``task_document`` as REST and WebSocket), and the browser client keeps
them live. Launch and cancel go through the REST endpoints, so the pages hold
no rule of their own about who may do what.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse

from . import selectors
from .auth.permissions import can_read, can_run, hidden_operations
from .filters import page_filters
from .launcher import launcher
from .models import Operation, Status
from .serializers import event_document, task_document

INITIAL_ROWS = 200
# Catch-up starts a little before the snapshot was read, so a change committed
# while the page was rendered reaches the browser (the client drops repeats).
SINCE_MARGIN_SECONDS = 2


def status_word(value: str) -> str:
    """The contract's status word as staff read it: underscores as spaces."""
    return value.replace("_", " ")


def _logout_url() -> str:
    return reverse("django_auth_adfs:logout") if settings.ENTRA_MODE else reverse("logout")


def _page_config(request: HttpRequest, hidden: frozenset[str], **extra: Any) -> dict[str, Any]:
    return {
        "wsUrl": "/ws/task-status",
        "csrfToken": get_token(request),
        "canRun": can_run(request.user),
        "operations": {value: label for value, label in Operation.choices if value not in hidden},
        **extra,
    }


@login_required
def monitor(request: HttpRequest) -> HttpResponse:
    """``/``: every task, newest first, live; filters come from the URL."""
    if not can_read(request.user):
        return HttpResponseForbidden()
    operation, wanted = page_filters(request.GET)
    hidden = hidden_operations(request.user)
    if operation in hidden:
        operation = None
    since = int(time.time()) - SINCE_MARGIN_SECONDS
    tasks = selectors.list_tasks(
        operation=operation, statuses=wanted, limit=INITIAL_ROWS, hidden=hidden
    )
    extra: dict[str, Any] = {}
    repeat = selectors.get_task(request.GET.get("rerun", ""), hidden=hidden)
    if repeat is not None and repeat.is_terminal and can_run(request.user):
        # "Run again": the Run form opens with the run's parameters, to check or edit.
        extra["rerun"] = {
            "taskId": str(repeat.task_id),
            "operation": repeat.operation,
            "params": repeat.params or {},
        }
    operations = launcher().run_bar(hidden)
    opening = request.GET.get("run", "")
    if can_run(request.user) and any(
        op["name"] == opening and op["available"] for op in operations
    ):
        extra["run"] = opening  # the schedule page's "Run": this operation's form, open
    context = {
        "operations": operations,
        "runnable": [op for op in operations if op["available"]],
        "statuses": [{"value": s, "word": status_word(s)} for s in Status.values],
        "filter_operation": operation or "",
        "filter_statuses": wanted or [],
        "can_run": can_run(request.user),
        "logout_url": _logout_url(),
        # Said plainly in the header: a started task is not going to move without a worker,
        # runs running long, failures nobody has acknowledged.
        **launcher().monitor_notes(hidden),
        "documents": [task_document(task) for task in tasks],
        "config": _page_config(request, hidden, since=since, **extra),
    }
    return render(request, "tasks/monitor.html", context)


@login_required
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    """``/tasks/{task_id}``: one task's document, its result and error, live."""
    if not can_read(request.user):
        return HttpResponseForbidden()
    hidden = hidden_operations(request.user)
    task = selectors.get_task(task_id, hidden=hidden)
    context: dict[str, Any] = {"logout_url": _logout_url(), "task_id": task_id}
    if task is None:
        return render(request, "tasks/detail.html", context, status=404)
    document = task_document(task)
    events = [event_document(event) for event in selectors.task_events(task)]
    since = int(time.time()) - SINCE_MARGIN_SECONDS
    notes = launcher().task_notes(task, request.user)
    context.update(
        {
            "task": task,
            "document": document,
            "events": events,
            "operation_label": Operation(task.operation).label,
            "status_word": status_word(task.status),
            "result_json": json.dumps(task.result, indent=2, ensure_ascii=False),
            "params_json": json.dumps(task.params, indent=2, ensure_ascii=False)
            if task.params
            else "",
            "can_run": can_run(request.user),
            "can_run_again": can_run(request.user) and launcher().can_run_again(task.operation),
            "user_email": getattr(request.user, "email", ""),
            **notes,
            # "Notify me": the open page also tells the browser when the task ends.
            "config": _page_config(
                request,
                hidden,
                since=since,
                taskId=str(task.task_id),
                notifyWanted=bool(notes.get("notify_wanted")),
            ),
        }
    )
    return render(request, "tasks/detail.html", context)

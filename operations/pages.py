"""The staff page of the operations: schedules, job runners and each one's history.

Server-rendered, with each history drawn as a small SVG chart (no front-end
library): the same figures as ``GET /operations`` and ``/operations/{op}/stats``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from tasks import selectors, tracker
from tasks.auth.permissions import can_read, can_run, hidden_operations
from tasks.models import Status, TaskStatus

from . import alerts, notify, overview, retries, services, triage

CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 300, 60, 2


def chart(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bars for the last runs, oldest on the left, heights scaled to the longest."""
    ordered = list(reversed(runs))
    longest = max((run["duration"] for run in ordered), default=0) or 1
    width = CHART_WIDTH / max(len(ordered), 1)
    bars = []
    for i, run in enumerate(ordered):
        height = max(2.0, CHART_HEIGHT * run["duration"] / longest)
        bars.append(
            {
                "x": round(i * width, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(max(width - BAR_GAP, 1), 1),
                "height": round(height, 1),
                "status": run["status"],
                "url": run["url"],
                "label": f"{status_word(run['status'])}, {run['duration']} s, "
                f"{alerts.local_time(run['created_at'])}",
            }
        )
    return bars


def status_word(value: str) -> str:
    """A status as staff read it: "completed with errors"."""
    return value.replace("_", " ")


def since_words(when: float, *, now: float) -> str:
    """ "2026-12-07 16:05 (3 h 10 min ago)": a moment in TIME_ZONE and how long ago."""
    return f"{alerts.local_time(when)} ({alerts.duration(now - when)} ago)"


def _in_words(row: dict[str, Any], now: float) -> None:
    """Every time and status of the page in words, as staff read them (not Unix numbers)."""
    if row.get("next_run"):
        row["next_run_words"] = alerts.local_time(
            datetime.fromisoformat(row["next_run"]).timestamp()
        )
    if row.get("late_since"):
        row["late_words"] = since_words(row["late_since"], now=now)
    if row.get("last_run"):
        row["last_run"]["status_word"] = status_word(row["last_run"]["status"])
    for group in (row.get("stats") or {}).get("failure_groups", []):
        group["last_seen_words"] = since_words(group["last_seen"], now=now)


@login_required
def schedule_page(request: HttpRequest) -> HttpResponse:
    """``/schedule``: every operation's schedule, next and last run, history; the runners."""
    if not can_read(request.user):
        return HttpResponseForbidden()
    hidden = hidden_operations(request.user)
    rows = overview.operations(hidden, can_run=can_run(request.user))
    runners = overview.runners_for(hidden)
    now = time.time()
    for worker in runners["workers"]:
        worker["since_words"] = since_words(worker["since"], now=now) if worker["since"] else None
    for row in rows:
        row["stats"] = overview.stats(row["operation"], hidden=hidden)
        row["bars"] = chart(row["stats"]["runs"])
        _in_words(row, now)
    logout = reverse("django_auth_adfs:logout") if settings.ENTRA_MODE else reverse("logout")
    return render(
        request,
        "operations/schedule.html",
        {
            "operations": rows,
            "runners": runners,
            "history_runs": overview.HISTORY_RUNS,
            "logout_url": logout,
            "time_zone": settings.TIME_ZONE,
            "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
        },
    )


@login_required
@require_POST
def cancel_retry(request: HttpRequest, task_id: str) -> HttpResponse:
    """The failed task page's "Cancel retry": cancel its pending retry, back to the page."""
    if not can_run(request.user):
        return HttpResponseForbidden()
    hidden = hidden_operations(request.user)
    task = selectors.get_task(task_id, hidden=hidden)
    if task is None:
        raise Http404
    pending = TaskStatus.objects.filter(
        rerun_of=task.task_id, launched_by=retries.RETRY, status=Status.STARTED
    ).first()
    if pending is not None:
        try:
            services.cancel_task(
                str(pending.task_id), by=request.user.get_username(), hidden=hidden
            )
        except tracker.TaskAlreadyFinished:
            pass  # it ended meanwhile: nothing to cancel
    return redirect(f"/tasks/{task.task_id}")


@login_required
@require_POST
def notify_me(request: HttpRequest, task_id: str) -> HttpResponse:
    """The task page's "Notify me when it ends": a mail to this user, back to the page."""
    if not can_read(request.user):
        return HttpResponseForbidden()
    hidden = hidden_operations(request.user)
    if selectors.get_task(task_id, hidden=hidden) is None:
        raise Http404
    notify.request(task_id, request.user, hidden=hidden)
    return redirect(f"/tasks/{task_id}")


@login_required
@require_POST
def acknowledge(request: HttpRequest, task_id: str) -> HttpResponse:
    """A failed task page's "Acknowledge": who looked at it, when, and a note."""
    if not can_run(request.user):
        return HttpResponseForbidden()
    task = selectors.get_task(task_id, hidden=hidden_operations(request.user))
    if task is None:
        raise Http404
    if task.status == Status.FAILED:
        note = str(request.POST.get("note", "")).strip()
        triage.acknowledge(task, by=request.user.get_username(), note=note)
    return redirect(f"/tasks/{task.task_id}")

"""The staff page of the operations: schedules, job runners and each one's history.

Server-rendered, with each history drawn as a small SVG chart (no front-end
library): the same figures as ``GET /operations`` and ``/operations/{op}/stats``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import render
from django.urls import reverse

from tasks.auth.permissions import can_read, can_run, hidden_operations

from . import overview

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
                "label": f"{run['status'].replace('_', ' ')}, {run['duration']} s",
            }
        )
    return bars


@login_required
def schedule_page(request: HttpRequest) -> HttpResponse:
    """``/schedule``: every operation's schedule, next and last run, history; the runners."""
    if not can_read(request.user):
        return HttpResponseForbidden()
    hidden = hidden_operations(request.user)
    rows = overview.operations(hidden, can_run=can_run(request.user))
    for row in rows:
        row["stats"] = overview.stats(row["operation"], hidden=hidden)
        row["bars"] = chart(row["stats"]["runs"])
    logout = reverse("django_auth_adfs:logout") if settings.ENTRA_MODE else reverse("logout")
    return render(
        request,
        "operations/schedule.html",
        {
            "operations": rows,
            "runners": overview.runners_for(hidden),
            "logout_url": logout,
            "time_zone": settings.TIME_ZONE,
            "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
        },
    )

"""The REST benchmark's URLs: two bare views (the ceiling of the stack), then the project's."""

from __future__ import annotations

import time

from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path

FIELDS = (
    "task_id",
    "operation",
    "status",
    "progress_current",
    "progress_total",
    "progress_message",
    "result",
    "error",
    "created_at",
    "updated_at",
    "version",
)


def bare_get(request: HttpRequest, task_id: str) -> JsonResponse:
    """The ceiling of GET by id: the same visible row, one query, no DRF."""
    from tasks.models import TaskStatus

    row = TaskStatus.objects.filter(pk=task_id, expires_at__gt=time.time()).values(*FIELDS).first()
    if row is None:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse(row)


def bare_list(request: HttpRequest) -> JsonResponse:
    """The ceiling of a list page: the same keyset query, one query, no DRF."""
    from django.db.models import Q

    from tasks.models import TaskStatus

    query = request.GET
    qs = TaskStatus.objects.filter(operation=query["operation"], expires_at__gt=time.time())
    if "created" in query:
        created, key = float(query["created"]), query["task"]
        qs = qs.filter(Q(created_at__lt=created) | Q(created_at=created, task_id__lt=key))
    rows = list(qs.order_by("-created_at", "-task_id").values(*FIELDS)[: int(query["limit"])])
    return JsonResponse(rows, safe=False)


urlpatterns = [
    re_path(r"^bare/task/(?P<task_id>[^/]+)$", bare_get),
    re_path(r"^bare/list$", bare_list),
    path("", include("tasksite.urls")),
]

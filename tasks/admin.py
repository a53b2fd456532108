"""The records in the Django admin: tasks are read-only, since only the tracker writes them.

Staff can look, filter and search; the one write offered is the cancel action,
which goes through the launcher's cancel (``tasks.launcher``) like the REST endpoint does.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import tracker
from .auth.bearer import forget_local_tokens
from .auth.permissions import can_run, hidden_operations
from .launcher import NoSuchTask, launcher
from .models import ApiToken, TaskStatus
from .serializers import task_document


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


class UpdatedWithin(admin.SimpleListFilter):
    """By date of the last change; ``updated_at`` is Unix seconds, not a DateTimeField."""

    title = "updated"
    parameter_name = "updated_within"
    SPANS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}

    def lookups(self, request, model_admin):
        return [
            ("1h", "Past hour"),
            ("24h", "Past 24 hours"),
            ("7d", "Past 7 days"),
            ("30d", "Past 30 days"),
        ]

    def queryset(self, request, queryset):
        span = self.SPANS.get(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(updated_at__gte=time.time() - span)


@admin.register(TaskStatus)
class TaskStatusAdmin(admin.ModelAdmin):
    list_display = ("task_id", "operation", "status", "progress_display", "updated_display")
    list_filter = ("operation", "status", UpdatedWithin)
    search_fields = ("task_id",)
    show_full_result_count = False
    list_per_page = 50
    actions = ["cancel_tasks"]
    fields = (
        "task_id",
        "operation",
        "status",
        "progress_display",
        "error",
        "result_display",
        "params",
        "created_display",
        "updated_display",
        "expires_display",
        "version",
        "launched_by",
        "request_id",
        "cancel_requested_by",
        "document_display",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskStatus]:
        # Staff see everything; should the admin ever open to others, the rule holds here too.
        hidden = hidden_operations(request.user)
        queryset = super().get_queryset(request)
        return queryset.exclude(operation__in=hidden) if hidden else queryset

    def get_search_results(self, request, queryset, search_term):
        # task_id is a UUID: an exact match on a valid one, nothing on anything else
        # (a LIKE over a uuid column would cast every row).
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(task_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.none(), False

    @admin.display(description="progress")
    def progress_display(self, task: TaskStatus) -> str:
        progress = task.progress
        if progress is None:
            return "-"
        text = f"{progress['current']}/{progress['total']}"
        return f"{text} {progress['message']}".strip()

    @admin.display(description="updated", ordering="updated_at")
    def updated_display(self, task: TaskStatus) -> str:
        return _when(task.updated_at)

    @admin.display(description="created", ordering="created_at")
    def created_display(self, task: TaskStatus) -> str:
        return _when(task.created_at)

    @admin.display(description="expires")
    def expires_display(self, task: TaskStatus) -> str:
        return _when(task.expires_at)

    @admin.display(description="result")
    def result_display(self, task: TaskStatus) -> str:
        return format_html("<pre>{}</pre>", json.dumps(task.result, indent=2, sort_keys=True))

    @admin.display(description="document (as REST and WebSocket send it)")
    def document_display(self, task: TaskStatus) -> str:
        return format_html("<pre>{}</pre>", json.dumps(task_document(task), indent=2))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Expired tasks go with the purge; deleting a live one would hide it from
        # its watchers without a final state.
        return False

    def has_run_permission(self, request: HttpRequest) -> bool:
        return can_run(request.user)

    @admin.action(description="Cancel selected running tasks", permissions=["run"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[TaskStatus]) -> None:
        by = request.user.get_username()
        hidden = hidden_operations(request.user)
        asked, finished = 0, 0
        for task in queryset:
            if task.is_terminal:
                finished += 1
                continue
            try:
                launcher().cancel(str(task.task_id), by=by, hidden=hidden)
                asked += 1
            except tracker.TaskAlreadyFinished:
                finished += 1
            except (tracker.TaskNotFound, NoSuchTask):
                continue
        if asked:
            self.message_user(
                request,
                f"Cancelled {asked} task(s): a queued one ends now, a running one at its "
                "next progress step.",
            )
        if finished:
            self.message_user(
                request, f"{finished} task(s) had already finished.", messages.WARNING
            )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Local-mode tokens: listed and revoked here, created by ``create_api_token``."""

    list_display = ("name", "user", "created")
    search_fields = ("user__username", "name")
    readonly_fields = ("user", "name", "key_hash", "created")

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        super().delete_model(request, obj)
        forget_local_tokens()  # revoked here at once; other processes within the cache time

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        super().delete_queryset(request, queryset)
        forget_local_tokens()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

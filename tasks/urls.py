"""The contract's paths, each with and without a trailing slash, never redirected."""

from django.urls import re_path

from . import views

urlpatterns = [
    re_path(r"^task-status/?$", views.TaskListView.as_view(), name="task-list"),
    re_path(
        r"^task-status/(?P<task_id>[^/]+)/cancel/?$",
        views.TaskCancelView.as_view(),
        name="task-cancel",
    ),
    re_path(
        r"^task-status/(?P<task_id>[^/]+)/events/?$",
        views.TaskEventsView.as_view(),
        name="task-events",
    ),
    re_path(
        r"^task-status/(?P<task_id>[^/]+)/?$", views.TaskDetailView.as_view(), name="task-detail"
    ),
    re_path(r"^healthz/?$", views.healthz, name="healthz"),
    re_path(r"^readyz/?$", views.readyz, name="readyz"),
]

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from operations import pages as operation_pages
from operations.views import DocumentView, OperationStatsView, OperationsView
from tasks.views import ApiDocsView, metrics_view

urlpatterns = [
    path("", include("tasks.urls")),
    path("", include("tasks.page_urls")),  # the staff pages: / and /tasks/<id>
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", ApiDocsView.as_view(url_name="schema"), name="docs"),
    # Signed, expiring links of get_food_handler_links (operations/documents.py).
    path("documents/<str:token>", DocumentView.as_view(), name="document-download"),
    # What runs next, what ran last, who is working (operations/overview.py).
    re_path(r"^operations/?$", OperationsView.as_view(), name="operations"),
    re_path(
        r"^operations/(?P<operation>[a-z_]+)/stats/?$",
        OperationStatsView.as_view(),
        name="operation-stats",
    ),
    re_path(r"^schedule/?$", operation_pages.schedule_page, name="schedule-page"),
    path(
        "tasks/<str:task_id>/cancel-retry", operation_pages.cancel_retry, name="task-cancel-retry"
    ),
    path("tasks/<str:task_id>/notify", operation_pages.notify_me, name="task-notify"),
    path("tasks/<str:task_id>/acknowledge", operation_pages.acknowledge, name="task-acknowledge"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Prometheus, scraped on loopback only: nginx never proxies it (README, "Metrics").
    path("metrics", metrics_view, name="metrics"),
    # Entra ID sign-in for the staff pages (/oauth2/..., in Entra ID mode only).
    path("", include("accounts.urls")),
]

handler400 = "tasks.exceptions.handler400"
handler403 = "tasks.exceptions.handler403"
handler404 = "tasks.exceptions.handler404"
handler500 = "tasks.exceptions.handler500"

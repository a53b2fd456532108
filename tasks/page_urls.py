"""The staff pages, included at the site root next to ``tasks.urls``.

``APPEND_SLASH`` is off (the REST paths never redirect), so each pattern takes
its trailing slash as optional itself.
"""

from django.urls import re_path

from . import pages

urlpatterns = [
    re_path(r"^$", pages.monitor, name="monitor"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", pages.task_page, name="task-page"),
]

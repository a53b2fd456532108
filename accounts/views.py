"""In Entra ID mode the admin's password form cannot work: send the browser to Entra ID."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode


def entra_admin_login(request: HttpRequest, extra_context: Any = None) -> HttpResponseRedirect:
    """Replaces ``admin.site.login``: sign in through Entra ID, then back to the admin."""
    target = request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("admin:index")
    login = reverse("django_auth_adfs:login")
    return HttpResponseRedirect(f"{login}?{urlencode({REDIRECT_FIELD_NAME: target})}")

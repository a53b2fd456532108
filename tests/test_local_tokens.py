"""Local API tokens: a validated token is trusted briefly, so a busy client costs no lookup."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tasks import tracker
from tasks.auth.bearer import forget_local_tokens, issue_local_token
from tasks.models import ApiToken

pytestmark = pytest.mark.django_db


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_repeated_request_costs_only_the_read(user, django_assert_num_queries):
    task = tracker.create_task("daily_sales")
    client = bearer(issue_local_token(user))
    assert client.get(f"/task-status/{task.task_id}").status_code == 200
    with django_assert_num_queries(1):  # the task itself; no token or user lookup
        assert client.get(f"/task-status/{task.task_id}").status_code == 200


def test_a_revoked_token_is_refused_once_the_cache_time_is_up(user, settings):
    settings.API_TOKEN_CACHE_SECONDS = 0
    token = issue_local_token(user)
    client = bearer(token)
    assert client.get("/task-status").status_code == 200
    ApiToken.objects.all().delete()
    assert client.get("/task-status").status_code == 401


def test_revoking_in_the_admin_takes_effect_at_once(user, django_user_model):
    token = issue_local_token(user)
    client = bearer(token)
    assert client.get("/task-status").status_code == 200
    django_user_model.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True)
    staff = Client()
    staff.login(username="boss", password="pw")
    row = ApiToken.objects.get()
    response = staff.post(f"/admin/tasks/apitoken/{row.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert client.get("/task-status").status_code == 401


def test_a_deactivated_user_is_refused_after_the_cache_is_dropped(user):
    client = bearer(issue_local_token(user))
    assert client.get("/task-status").status_code == 200
    user.is_active = False
    user.save()
    forget_local_tokens()
    assert client.get("/task-status").status_code == 401

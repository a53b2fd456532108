"""Notify me when it ends: one mail to the user who asked, only about a task they may see.

A real worker runs the job; a real SMTP server on loopback receives the mail.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from operations import notify
from operations.celery_tasks import send_notifications
from operations.models import AlertDelivery, NotifyRequest
from tasks import tracker
from tasks.auth.bearer import issue_local_token
from tests.support.celery_processes import celery_process, env_for, wait_for
from tests.support.smtp_server import smtp_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue(settings):
    name = f"test-notify-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    settings.ALERT_QUEUE = f"{name}-alerts"
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(name, f"{name}-alerts")


@pytest.fixture
def smtp(settings):
    with smtp_server() as server:
        server.configure(settings, backoff=0.01, retries=1)
        yield server


@pytest.fixture
def launcher(django_user_model, settings):
    user = django_user_model.objects.create_user("carol", password="pw", email="carol@example.com")
    user.groups.add(Group.objects.get_or_create(name=settings.TASK_RUNNER_ROLE)[0])
    return user


@pytest.mark.slow
def test_a_launch_with_notify_mails_the_launcher_once_when_it_ends(queue, smtp, launcher, tmp_path):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(launcher)}")
    env = env_for(
        queue,
        EMAIL_HOST=smtp.host,
        EMAIL_PORT=str(smtp.port),
        EMAIL_USE_TLS="0",
        EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="",
        EMAIL_URL="",
        PUBLIC_BASE_URL="https://tasks.example.com",
    )
    with celery_process("worker", env, tmp_path, "ready."):
        response = api.post(
            "/task-status",
            {"operation": "daily_sales", "params": {"business_date": "2025-06-05"}, "notify": True},
            format="json",
        )
        assert response.status_code == 202, response.content
        task_id = response.json()["task_id"]
        wait_for(lambda: smtp.received, 60, "the notification")
        time.sleep(1)  # nothing more comes
    [mail] = smtp.received
    assert mail.rcpt_tos == ("carol@example.com",)
    assert mail.message["Subject"] == "[tasks] your daily_sales run ended: completed"
    body = mail.message.get_content()
    assert "Daily sales processing (daily_sales), which you asked to hear about, ended" in body
    assert f"Link: https://tasks.example.com/tasks/{task_id}" in body
    assert AlertDelivery.objects.get(task_id=task_id, event="notify").state == "sent"


def test_the_task_page_offers_it_and_only_a_reader_of_the_task_is_told(
    queue, smtp, launcher, client, django_user_model
):
    task = tracker.create_task("daily_sales", launched_by="carol")
    client.force_login(launcher)
    page = client.get(f"/tasks/{task.task_id}").content.decode()
    assert "Notify me when it ends" in page
    assert client.post(f"/tasks/{task.task_id}/notify").status_code == 302
    assert client.post(f"/tasks/{task.task_id}/notify").status_code == 302  # once is enough
    page = client.get(f"/tasks/{task.task_id}").content.decode()
    assert "You will get a mail at carol@example.com when it ends." in page
    assert NotifyRequest.objects.filter(task_id=task.task_id).count() == 1

    # Personal data: a task carol may not see does not exist for her, here either.
    tips = tracker.create_task("transform_tips", launched_by="boss")
    assert client.post(f"/tasks/{tips.task_id}/notify").status_code == 404
    # A staff user who asked, and lost staff before it ended, is not told.
    boss = django_user_model.objects.create_user(
        "boss", password="pw", email="boss@example.com", is_staff=True
    )
    assert notify.request(tips.task_id, boss, hidden=frozenset())
    boss.is_staff = False
    boss.save()

    task.complete({})
    tips.fail("no tip policy for L09")
    assert send_notifications(task.task_id) == 1
    assert send_notifications(task.task_id) == 0  # a redelivery sends nothing
    assert send_notifications(tips.task_id) == 0
    assert [m.rcpt_tos for m in smtp.received] == [("carol@example.com",)]
    # Asking about a task that is over does nothing.
    assert not notify.request(task.task_id, launcher, hidden=frozenset())

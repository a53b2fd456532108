"""The purge takes what outlived its task: job runs, alert deliveries, idempotency keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from operations.jobs import purge
from operations.models import AlertDelivery, JobRun
from tasks.models import IdempotencyKey

pytestmark = pytest.mark.django_db


def rows(age: timedelta, n: int) -> None:
    when = timezone.now() - age
    for i in range(n):
        task_id = f"00000000-0000-0000-0000-{int(age.total_seconds()):06d}{i:06d}"
        JobRun.objects.create(
            task_id=task_id, operation="daily_sales", worker="w:1", lease_until=when
        )
        JobRun.objects.filter(task_id=task_id).update(finished_at=when, started_at=when)
        AlertDelivery.objects.create(
            task_id=task_id,
            operation="daily_sales",
            event="finished",
            target=f"email:{i}",
            channel="email",
            destination="ops@example.com",
        )
        AlertDelivery.objects.filter(task_id=task_id).update(created_at=when)
        key = IdempotencyKey.objects.create(user_id=1, key=f"k-{task_id}")
        IdempotencyKey.objects.filter(pk=key.pk).update(created=when)


def test_bookkeeping_older_than_its_tasks_goes_and_the_rest_stays(settings, monkeypatch):
    settings.TASK_STATUS_TTL = 3600
    monkeypatch.setattr(purge, "BATCH_SIZE", 2)  # several batches
    rows(timedelta(days=2), 5)  # past TTL + a day: gone
    rows(timedelta(hours=2), 3)  # past the TTL, within the margin: kept
    running = timezone.now() - timedelta(days=3)
    JobRun.objects.create(
        task_id="still-running", operation="daily_sales", worker="w:2", lease_until=running
    )  # unfinished: the reaper's, never purged
    purge.run()
    assert JobRun.objects.count() == 3 + 1
    assert JobRun.objects.filter(task_id="still-running").exists()
    assert AlertDelivery.objects.count() == 3
    assert IdempotencyKey.objects.count() == 3

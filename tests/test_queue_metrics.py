"""The queues' depth and the build, as Prometheus reads them (deploy/prometheus rules)."""

from __future__ import annotations

import platform
import uuid

import pytest
import redis

from operations import watch
from tasks import metrics

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with these labels in an exposition, or None."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_watchdog_exports_the_depth_of_the_jobs_and_the_alerts_queues(settings):
    name = f"test-depth-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE, settings.ALERT_QUEUE = name, f"{name}-alerts"
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.rpush(name, "a", "b", "c")
        client.rpush(f"{name}-alerts", "x")
        watch.export_queue_depths()
        text = metrics.render(None)[0].decode()
        assert sample(text, "tasksite_queue_depth", queue=name) == 3
        assert sample(text, "tasksite_queue_depth", queue=f"{name}-alerts") == 1
        client.lpop(name)
        watch.export_queue_depths()
        text = metrics.render(None)[0].decode()
        assert sample(text, "tasksite_queue_depth", queue=name) == 2
    finally:
        client.delete(name, f"{name}-alerts")


def test_the_build_is_one_series_with_its_version(settings):
    text = metrics.render(None)[0].decode()
    assert (
        sample(
            text,
            "tasksite_build_info",
            version=settings.TASKSITE_VERSION,
            python=platform.python_version(),
        )
        == 1
    )

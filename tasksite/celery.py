"""The Celery app: broker ``REDIS_URL`` (or ``memory://`` for the embedded worker).

Configuration comes from Django settings with the ``CELERY_`` prefix (the "Jobs"
block of settings.py); the beat schedule is built from the schedule settings
in ``operations.schedule`` once the configuration is read.
"""

from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksite.settings")

app = Celery("tasksite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(lambda: ["operations"], related_name="celery_tasks")


@app.on_after_configure.connect
def _configure(sender: Celery, **_: object) -> None:
    """Crontabs run in the project's TIME_ZONE; the schedule follows the settings."""
    from django.conf import settings

    from operations.schedule import beat_schedule

    sender.conf.timezone = settings.TIME_ZONE
    sender.conf.enable_utc = True
    sender.conf.beat_schedule = beat_schedule()


# Metrics (tasks/metrics.py; README, "Metrics"): a worker serves its own and its pool
# children's on WORKER_METRICS_PORT, beat its own on BEAT_METRICS_PORT.
@signals.celeryd_init.connect
def _worker_metrics(**kwargs: object) -> None:
    from tasks.metrics import worker_metrics

    worker_metrics(**kwargs)


@signals.beat_init.connect
def _beat_metrics(**kwargs: object) -> None:
    from tasks.metrics import beat_metrics

    beat_metrics(**kwargs)

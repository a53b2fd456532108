"""The beat schedule, from settings: purge, the worker-lost reaper, daily_sales, invoice_sync.

daily_sales and invoice_sync go through ``operations.scheduled_launch``, which
launches exactly as the REST API does (a task in the status service, default
parameters: for daily_sales that is the previous business date in TIME_ZONE,
computed when the entry fires, not when beat started).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab
from django.conf import settings


def cron(expression: str) -> crontab:
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expression!r} must have five fields")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month_of_year, day_of_week=day_of_week)


def beat_schedule() -> dict[str, dict[str, Any]]:
    return {
        "purge-expired-tasks": {
            "task": "operations.purge",
            "schedule": float(settings.PURGE_SCHEDULE_SECONDS),
            "options": {"expires": float(settings.PURGE_SCHEDULE_SECONDS)},
        },
        "reap-lost-jobs": {
            "task": "operations.reap_lost_jobs",
            "schedule": float(settings.WORKER_LOST_CHECK_SECONDS),
            "options": {"expires": float(settings.WORKER_LOST_CHECK_SECONDS)},
        },
        "daily-sales": {
            "task": "operations.scheduled_launch",
            "schedule": cron(settings.DAILY_SALES_SCHEDULE),
            "args": ("daily_sales",),
        },
        "invoice-sync": {
            "task": "operations.scheduled_launch",
            "schedule": cron(settings.INVOICE_SYNC_SCHEDULE),
            "args": ("invoice_sync",),
        },
    }

"""The beat schedule, from settings: purge, the worker-lost reaper, the not-started
alert check, and the operations.

Operations go through ``operations.scheduled_launch``, which launches exactly
as the REST API does (a task in the status service, default parameters: for
daily_sales the previous business date in TIME_ZONE, for the tips the previous
pay week, computed when the entry fires, not when beat started).
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
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


# Beat entry -> (operation, the setting holding its cron expression).
SCHEDULED_OPERATIONS = {
    "daily-sales": ("daily_sales", "DAILY_SALES_SCHEDULE"),
    "invoice-sync": ("invoice_sync", "INVOICE_SYNC_SCHEDULE"),
    "transform-tips": ("transform_tips", "TRANSFORM_TIPS_SCHEDULE"),
    "email-tips": ("email_tips", "EMAIL_TIPS_SCHEDULE"),
    "food-handler-pdfs": ("update_food_handler_pdfs", "FOOD_HANDLER_PDFS_SCHEDULE"),
    "food-handler-links": ("get_food_handler_links", "FOOD_HANDLER_LINKS_SCHEDULE"),
}


def _scheduled() -> dict[str, tuple[str, str]]:
    return {
        entry: (operation, getattr(settings, name))
        for entry, (operation, name) in SCHEDULED_OPERATIONS.items()
    }


def operation_schedules() -> dict[str, str]:
    """Each scheduled operation's cron expression, as beat sends it."""
    return dict(_scheduled().values())


def beat_schedule() -> dict[str, dict[str, Any]]:
    return {
        "purge-expired-tasks": {
            "task": "operations.purge",
            "schedule": float(settings.PURGE_SCHEDULE_SECONDS),
            "options": {"expires": float(settings.PURGE_SCHEDULE_SECONDS)},
        },
        "fail-stale-tasks": {
            "task": "operations.fail_stale_tasks",
            "schedule": float(settings.TASK_STALE_CHECK_SECONDS),
            "options": {"expires": float(settings.TASK_STALE_CHECK_SECONDS)},
        },
        "reap-lost-jobs": {
            "task": "operations.reap_lost_jobs",
            "schedule": float(settings.WORKER_LOST_CHECK_SECONDS),
            "options": {"expires": float(settings.WORKER_LOST_CHECK_SECONDS)},
        },
        # Run by the beat itself (operations/beat.py), not sent to the workers: it must
        # tell when no worker takes the scheduled runs.
        "alert-not-started": {
            "task": "operations.alert_not_started",
            "schedule": float(settings.ALERT_CHECK_SECONDS),
        },
        **{
            entry: {
                "task": "operations.scheduled_launch",
                "schedule": cron(expression),
                "args": (operation,),
            }
            for entry, (operation, expression) in _scheduled().items()
        },
    }

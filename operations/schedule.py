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
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month_of_year, day_of_week=day_of_week)


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
        "transform-tips": {
            "task": "operations.scheduled_launch",
            "schedule": cron(settings.TRANSFORM_TIPS_SCHEDULE),
            "args": ("transform_tips",),
        },
        "email-tips": {
            "task": "operations.scheduled_launch",
            "schedule": cron(settings.EMAIL_TIPS_SCHEDULE),
            "args": ("email_tips",),
        },
        "food-handler-pdfs": {
            "task": "operations.scheduled_launch",
            "schedule": cron(settings.FOOD_HANDLER_PDFS_SCHEDULE),
            "args": ("update_food_handler_pdfs",),
        },
        "food-handler-links": {
            "task": "operations.scheduled_launch",
            "schedule": cron(settings.FOOD_HANDLER_LINKS_SCHEDULE),
            "args": ("get_food_handler_links",),
        },
    }

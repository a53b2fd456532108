"""The beat schedule follows the settings, in the project's TIME_ZONE."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from operations.schedule import beat_schedule, cron
from tasksite.celery import app


def entry_at(name: str, now: datetime):
    schedule = beat_schedule()[name]["schedule"]
    schedule.app = app
    schedule.nowfun = lambda: now
    return schedule


def test_daily_sales_fires_at_0430_local_time_by_default(settings):
    tz = ZoneInfo(settings.TIME_ZONE)
    last_run = datetime(2025, 6, 10, 4, 30, tzinfo=tz)
    due, wait = entry_at("daily-sales", datetime(2025, 6, 11, 4, 29, tzinfo=tz)).is_due(last_run)
    assert not due
    assert 55 <= wait <= 65
    due, _ = entry_at("daily-sales", datetime(2025, 6, 11, 4, 30, 1, tzinfo=tz)).is_due(last_run)
    assert due


def test_beat_runs_in_the_configured_time_zone(settings):
    app.loader.import_default_modules()
    assert app.conf.timezone == settings.TIME_ZONE
    assert app.timezone.key == settings.TIME_ZONE


def test_a_configured_cron_expression_is_honoured(settings):
    settings.DAILY_SALES_SCHEDULE = "15 6 * * 1-5"
    tz = ZoneInfo(settings.TIME_ZONE)
    last_run = datetime(2025, 6, 13, 6, 15, tzinfo=tz)  # a Friday
    # Saturday and Sunday are skipped: the next run is Monday 06:15 local time.
    due, wait = entry_at("daily-sales", datetime(2025, 6, 14, 6, 16, tzinfo=tz)).is_due(last_run)
    assert not due
    assert abs(wait - (2 * 86400 - 60)) < 5


def test_invoice_sync_every_30_minutes_by_default(settings):
    tz = ZoneInfo(settings.TIME_ZONE)
    last_run = datetime(2025, 6, 11, 10, 0, tzinfo=tz)
    due, wait = entry_at("invoice-sync", datetime(2025, 6, 11, 10, 10, tzinfo=tz)).is_due(last_run)
    assert not due and abs(wait - 1200) < 5


@pytest.mark.parametrize("expression", ["30 4 * *", "every day", ""])
def test_a_malformed_cron_expression_is_refused(expression):
    with pytest.raises(ValueError):
        cron(expression)


@pytest.mark.parametrize(
    ("entry", "operation", "fires_at", "not_yet"),
    [
        # Monday 2025-06-09: tips for the week before at 05:00, statements at 09:00.
        ("transform-tips", "transform_tips", datetime(2025, 6, 9, 5, 0, 1), (2025, 6, 8, 5, 0, 1)),
        ("email-tips", "email_tips", datetime(2025, 6, 9, 9, 0, 1), (2025, 6, 9, 8, 59)),
        # Nightly: certificates at 03:00, fresh links at 03:30.
        (
            "food-handler-pdfs",
            "update_food_handler_pdfs",
            datetime(2025, 6, 11, 3, 0, 1),
            (2025, 6, 11, 2, 59),
        ),
        (
            "food-handler-links",
            "get_food_handler_links",
            datetime(2025, 6, 11, 3, 30, 1),
            (2025, 6, 11, 3, 29),
        ),
    ],
)
def test_the_four_newer_operations_fire_when_a_back_office_wants_them(
    settings, entry, operation, fires_at, not_yet
):
    tz = ZoneInfo(settings.TIME_ZONE)
    assert beat_schedule()[entry]["task"] == "operations.scheduled_launch"
    assert beat_schedule()[entry]["args"] == (operation,)
    # the previous run: a week before for the weekly ones, the day before for the nightly
    weekly = entry.endswith("tips")
    last_run = fires_at.replace(tzinfo=tz) - timedelta(days=7 if weekly else 1)
    due, _ = entry_at(entry, fires_at.replace(tzinfo=tz)).is_due(last_run)
    assert due
    due, _ = entry_at(entry, datetime(*not_yet, tzinfo=tz)).is_due(last_run)
    assert not due

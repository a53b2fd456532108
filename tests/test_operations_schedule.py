"""The beat schedule follows the settings, in the project's TIME_ZONE."""

from __future__ import annotations

from datetime import datetime
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

"""Each of the four newer operations stops at its first step once a cancel is asked,
before it writes anything: no shares, no payroll file, no mail, no certificate."""

from __future__ import annotations

import pytest

from operations import registry, runner
from operations.models import FoodHandlerCertificate, TipShare, TipStatementDelivery
from tasks import tracker
from tasks.selectors import get_task
from tests.support.jobs import run_job
from tests.support.source_server import SAMPLE

pytestmark = pytest.mark.django_db(transaction=True)
WEEK1 = {"period_start": "2025-06-02", "period_end": "2025-06-08"}


@pytest.fixture
def all_sources(sample_sources, settings):
    settings.ROSTER_SOURCE_URL = f"file://{SAMPLE / 'roster'}"
    settings.TIP_POLICY_FILE = SAMPLE / "tips" / "policies.json"
    return sample_sources


def cancelled_run(operation: str, params: dict) -> tuple[str, str]:
    """A run whose cancel came in as it started: the runner's outcome and the task's error."""
    clean = registry.validate_params(operation, params)
    handle = tracker.create_task(operation, params=clean, launched_by="test")
    tracker.request_cancel(str(handle.task_id), by="payroll lead")
    outcome = runner.run_task(operation, str(handle.task_id), clean)
    task = get_task(str(handle.task_id))
    assert task is not None and task.status == "failed" and task.result is None
    return outcome, task.error or ""


def test_transform_tips_cancelled_writes_no_share_and_no_payroll_file(all_sources):
    outcome, error = cancelled_run("transform_tips", {**WEEK1, "locations": ["L01"]})
    assert (outcome, error) == ("cancelled", "cancelled by payroll lead")
    assert not TipShare.objects.exists()
    assert not list(all_sources.glob("**/*.csv"))


def test_email_tips_cancelled_sends_nothing(all_sources):
    done = run_job("transform_tips", {**WEEK1, "locations": ["L01"]})
    assert done.status in ("completed", "completed_with_errors"), done.error
    outcome, error = cancelled_run("email_tips", WEEK1)
    assert (outcome, error) == ("cancelled", "cancelled by payroll lead")
    assert not TipStatementDelivery.objects.exists()


def test_food_handler_pdfs_cancelled_stores_no_certificate(all_sources):
    outcome, error = cancelled_run("update_food_handler_pdfs", {"locations": ["L01"]})
    assert (outcome, error) == ("cancelled", "cancelled by payroll lead")
    assert not FoodHandlerCertificate.objects.exists()


def test_food_handler_links_cancelled_has_no_links(all_sources):
    done = run_job("update_food_handler_pdfs", {"locations": ["L01"]})
    assert done.status in ("completed", "completed_with_errors"), done.error
    outcome, error = cancelled_run("get_food_handler_links", {"locations": ["L01"]})
    assert (outcome, error) == ("cancelled", "cancelled by payroll lead")

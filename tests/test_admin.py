"""The admin: tasks and job outputs browsable, read-only, with a cancel action."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from django.contrib import admin as django_admin
from django.test import Client

from operations.models import DailySalesSummary, Invoice
from operations.runner import claim
from tasks import tracker
from tasks.models import TaskStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(django_user_model) -> Client:
    django_user_model.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True)
    client = Client()
    client.login(username="boss", password="pw")
    return client


def test_list_shows_operation_status_progress_and_filters_by_operation(staff):
    sales = tracker.create_task("daily_sales", total=12)
    sales.progress(3, "Location 3 of 12")
    invoices = tracker.create_task("invoice_sync")
    response = staff.get("/admin/tasks/taskstatus/", {"operation": "daily_sales"})
    assert response.status_code == 200
    page = response.content.decode()
    assert sales.task_id in page and "3/12 Location 3 of 12" in page
    assert invoices.task_id not in page


def test_status_and_updated_filters(staff):
    done = tracker.create_task("daily_sales")
    done.complete({"ok": True})
    running = tracker.create_task("daily_sales")
    page = staff.get("/admin/tasks/taskstatus/", {"status": "completed"}).content.decode()
    assert done.task_id in page and running.task_id not in page
    old = tracker.create_task("invoice_sync")
    TaskStatus.objects.filter(pk=old.task_id).update(updated_at=1_000_000)
    page = staff.get("/admin/tasks/taskstatus/", {"updated_within": "24h"}).content.decode()
    assert running.task_id in page and old.task_id not in page


def test_search_by_task_id_is_exact_and_garbage_finds_nothing(staff):
    wanted = tracker.create_task("daily_sales")
    other = tracker.create_task("daily_sales")
    page = staff.get("/admin/tasks/taskstatus/", {"q": wanted.task_id}).content.decode()
    assert wanted.task_id in page and other.task_id not in page
    response = staff.get("/admin/tasks/taskstatus/", {"q": "not-a-uuid' OR 1=1"})
    assert response.status_code == 200
    assert wanted.task_id not in response.content.decode()


def test_document_is_read_only(staff):
    task = tracker.create_task("daily_sales")
    detail = staff.get(f"/admin/tasks/taskstatus/{task.task_id}/change/")
    assert detail.status_code == 200
    assert b'name="status"' not in detail.content  # shown, never an input
    assert staff.get("/admin/tasks/taskstatus/add/").status_code == 403
    response = staff.post(f"/admin/tasks/taskstatus/{task.task_id}/change/", {"status": "failed"})
    assert response.status_code == 403
    assert staff.post(f"/admin/tasks/taskstatus/{task.task_id}/delete/").status_code == 403
    row = TaskStatus.objects.get(pk=task.task_id)
    assert (row.status, row.version) == ("started", 1)


def test_cancel_action_ends_queued_asks_running_and_leaves_finished_ones(staff):
    queued = tracker.create_task("daily_sales")
    running = tracker.create_task("daily_sales")
    claim(running.task_id, "daily_sales", "worker:1")
    finished = tracker.create_task("daily_sales")
    finished.complete(None)
    response = staff.post(
        "/admin/tasks/taskstatus/",
        {
            "action": "cancel_tasks",
            "_selected_action": [queued.task_id, running.task_id, finished.task_id],
        },
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Cancelled 2 task(s)" in page and "1 task(s) had already finished" in page
    row = TaskStatus.objects.get(pk=queued.task_id)
    assert (row.status, row.error) == ("failed", "cancelled by boss before it started")
    assert TaskStatus.objects.get(pk=running.task_id).cancel_requested_by == "boss"
    assert TaskStatus.objects.get(pk=finished.task_id).version == 2
    with pytest.raises(tracker.TaskCancelled), tracker.open_task(running.task_id) as job:
        job.progress(1, "next step")
    row = TaskStatus.objects.get(pk=running.task_id)
    assert row.status == "failed" and "boss" in row.error


def test_job_outputs_are_browsable(staff):
    DailySalesSummary.objects.create(
        business_date=datetime.date(2025, 6, 10),
        location_id="L01",
        location_name="Midtown",
        gross_sales=Decimal("100.00"),
        net_sales=Decimal("90.00"),
        discounts=Decimal("5.00"),
        voids=Decimal("0"),
        refunds=Decimal("5.00"),
        tax=Decimal("8.00"),
        tips=Decimal("12.00"),
        service_charges=Decimal("0"),
        guest_count=10,
        check_count=4,
        average_check=Decimal("22.50"),
    )
    Invoice.objects.create(
        vendor_id="V01",
        invoice_number="INV-1",
        invoice_date=datetime.date(2025, 6, 1),
        subtotal=Decimal("10"),
        tax=Decimal("1"),
        total=Decimal("11"),
        content_hash="h",
    )
    for path in ("dailysalessummary", "invoice", "accountingexport", "syncwatermark", "jobrun"):
        response = staff.get(f"/admin/operations/{path}/")
        assert response.status_code == 200, path
    assert "Midtown" in staff.get("/admin/operations/dailysalessummary/").content.decode()
    assert staff.get("/admin/operations/invoice/add/").status_code == 403


def test_unknown_task_in_admin_is_a_redirect_not_a_500(staff):
    response = staff.get(f"/admin/tasks/taskstatus/{uuid.uuid4()}/change/")
    assert response.status_code in (302, 404)


def test_every_admin_list_renders_and_a_non_staff_user_never_gets_in(staff, django_user_model):
    """Each registered model's list opens for a superuser (a wrong list_display or filter
    would be a 500 only found by hand); the personal-data lists stay shut to non-staff."""
    for model in django_admin.site._registry:
        meta = model._meta
        response = staff.get(f"/admin/{meta.app_label}/{meta.model_name}/")
        assert response.status_code == 200, (meta.label, response.status_code)
    django_user_model.objects.create_user("pay-clerk", password="pw")
    clerk = Client()
    clerk.login(username="pay-clerk", password="pw")
    for path in ("tipshare", "tipstatementdelivery", "foodhandlercertificate"):
        assert clerk.get(f"/admin/operations/{path}/").status_code == 302, path

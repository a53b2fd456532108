"""Every roster record is checked against the columns it will be stored in before anything
is written for it: text PostgreSQL refuses (a NUL, an unpaired surrogate), a value that is
not text, or longer than its column, is one error naming the employee; the rest is saved
and a row stored earlier for that employee is left as it was."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from operations.models import FoodHandlerCertificate, FoodHandlerPacket
from tests import test_operations_food_handlers as sample
from tests.support.food_handlers import person, write_roster
from tests.support.jobs import run_job

pytestmark = pytest.mark.django_db(transaction=True)
errors = sample.errors  # every message the job reports (fixture)
own_roster = sample.own_roster  # a roster of our own in a temporary directory (fixture)


def test_the_database_is_postgresql():
    """What these records would break is PostgreSQL's to refuse: run against it."""
    assert connection.vendor == "postgresql"


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("name", "Ana\u0000Silva", "name holds a control character"),
        ("name", "Ana \ud800", "name is not valid text (an unpaired surrogate)"),
        ("job", "Cook\u0000", "job holds a control character"),
        ("job", 42, "job is not text"),
        ("location_name", "Main\u0007Street", "location_name holds a control character"),
        ("location_name", "M" * 201, "location_name longer than 200 characters"),
        ("issuer", ["ServSafe"], "issuer is not text"),
        ("issuer", "S" * 201, "issuer longer than 200 characters"),
        ("card_number", "C-1\u0000", "card_number holds a control character"),
    ],
)
def test_a_value_our_columns_cannot_hold_is_one_error_and_the_rest_is_saved(
    own_roster, errors, field, value, said
):
    good = person("L01-E001", "Bo Chen", hired="2020-01-01", card="C-1")
    bad = person("L01-E002", "Ana Silva", hired="2020-01-01", card="C-2")
    write_roster(own_roster, [good, bad])
    first = run_job("update_food_handler_pdfs")
    assert first.status == "completed", first.error
    stored = FoodHandlerCertificate.objects.get(employee_id="L01-E002")

    if field in ("issuer", "card_number"):
        bad["food_handler"][field] = value
    else:
        bad[field] = value
    # json.dumps writes "\ud800" as an escape, which json.loads gives back unpaired.
    (own_roster / "employees.json").write_text(json.dumps({"employees": [good, bad]}))
    task = run_job("update_food_handler_pdfs")

    assert task.status == "completed_with_errors", task.error
    assert errors == [f"malformed roster record: employee L01-E002: {said}"]
    assert task.result["locations"]["L01"]["valid"] == 1
    # The bad record's earlier row is left as it was; the good one was saved again.
    assert FoodHandlerCertificate.objects.get(employee_id="L01-E002").checked_at == (
        stored.checked_at
    )
    assert FoodHandlerCertificate.objects.get(employee_id="L01-E001").task_id == str(task.task_id)
    assert FoodHandlerPacket.objects.get(location_id="L01").task_id == str(task.task_id)


def test_an_employee_id_with_a_nul_is_named_by_its_position(own_roster, errors):
    good = person("L01-E001", "Bo Chen", hired="2020-01-01", card="C-1")
    bad = {**person("L01-E002", "Ana Silva", hired="2020-01-01"), "employee_id": "L01-\u0000"}
    write_roster(own_roster, [good, bad])
    task = run_job("update_food_handler_pdfs")
    assert task.status == "completed_with_errors", task.error
    assert errors == ["malformed roster record: employee #1: employee_id holds a control character"]
    assert list(FoodHandlerCertificate.objects.values_list("employee_id", flat=True)) == [
        "L01-E001"
    ]

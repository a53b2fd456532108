"""email_tips against a real SMTP server on loopback (and Django's file backend)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from django.conf import settings as django_settings

from operations import registry
from operations.models import TipShare, TipStatementDelivery
from tasks import tracker
from tests.support.jobs import run_job
from tests.support.servers import ROOT, service_env
from tests.support.smtp_server import smtp_server
from tests.support.source_server import SAMPLE
from tests.support.tls import loopback_certificate

pytestmark = pytest.mark.django_db(transaction=True)
WEEK1 = {"period_start": "2025-06-02", "period_end": "2025-06-08"}
# transform_tips of one day is enough to state the week (the other days have no shares).
DAY1 = {"period_start": "2025-06-02", "period_end": "2025-06-02"}
ROSTER = {
    e["employee_id"]: e
    for e in json.loads((SAMPLE / "roster" / "employees.json").read_text())["employees"]
}
BAD_ADDRESSES = {  # sample_data/README.md
    "L03-E044": "no email address on the roster",
    "L10-E056": "no email address on the roster",
    "L04-E017": "invalid email address on the roster",
    "L07-E003": "invalid email address on the roster",
    "L05-E039": "the mail server refused the address (550)",
    "L08-E037": "the mail server refused the address (550)",
}


def transform(params: dict, locations: list[str]) -> None:
    task = run_job("transform_tips", {**params, "locations": locations})
    assert task.status in ("completed", "completed_with_errors"), task.error


def expected_statements(**period) -> dict[str, list[TipShare]]:
    rows: dict[str, list[TipShare]] = {}
    for share in TipShare.objects.filter(
        business_date__range=(period["period_start"], period["period_end"])
    ):
        rows.setdefault(share.employee_id, []).append(share)
    return rows


def text_part(message) -> str:
    return message.get_body(("plain",)).get_content()


def period_totals(text: str) -> dict[str, Decimal]:
    block = text.split("Period total", 1)[1]
    return {
        key: Decimal(re.search(rf"{label}:\s+\$?([0-9.]+)", block).group(1))
        for key, label in (
            ("hours", "Hours"),
            ("card", "Card tips"),
            ("cash", "Cash tips"),
            ("total", "Total"),
        )
    }


def test_each_statement_arrives_with_the_stored_figures(tip_sources, smtp, caplog):
    transform(WEEK1, ["L01"])
    expected = expected_statements(**WEEK1)
    with caplog.at_level(logging.DEBUG):
        task = run_job("email_tips", WEEK1)
    assert task.status == "completed", task.error
    assert task.result == {
        "period_start": "2025-06-02",
        "period_end": "2025-06-08",
        "statements": len(expected),
        "sent": len(expected),
        "corrections": 0,
        "no_share_corrections": 0,
        "resent_after_interruption": 0,
        "skipped_unchanged": 0,
        "failed": 0,
    }
    assert task.progress == {
        "current": len(expected),
        "total": len(expected),
        "message": task.progress_message,
    }
    received = {r.rcpt_tos: r for r in smtp.received}
    assert len(smtp.received) == len(received) == len(expected) > 20
    for employee_id, shares in expected.items():
        employee = ROSTER[employee_id]
        got = received[(employee["email"],)]
        assert got.mail_from == "payroll@localhost"
        message = got.message
        assert message["Subject"] == "Tip statement 2025-06-02 to 2025-06-08"
        assert b"\r\nSubject: Tip statement 2025-06-02 to 2025-06-08\r\n" in got.data
        assert message["From"] == django_settings.DEFAULT_FROM_EMAIL
        assert message["To"] == employee["email"]
        assert message.get_content_type() == "multipart/alternative"
        html = message.get_body(("html",)).get_content()
        text = text_part(message)
        card = sum(s.card_tips for s in shares)
        cash = sum(s.cash_tips for s in shares)
        assert period_totals(text) == {
            "hours": sum(s.hours for s in shares),
            "card": card,
            "cash": cash,
            "total": card + cash,
        }
        assert f"Hello {employee['name']}," in text and employee["name"] in html
        assert f"${card + cash}" in html
        for share in shares:
            assert share.business_date.isoformat() in text
        delivery = TipStatementDelivery.objects.get(employee_id=employee_id)
        assert delivery.message_id == message["Message-ID"]
        assert (delivery.email, delivery.correction) == (employee["email"], False)
        assert len(delivery.content_hash) == 64
    # Everything logged in the job's process but by the test's SMTP server itself.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail."))
    assert "L01-E" in logged
    assert "$" not in logged
    for employee_id in expected:
        assert ROSTER[employee_id]["email"] not in logged
        assert ROSTER[employee_id]["name"] not in logged


def test_bad_addresses_are_errors_naming_the_employee_and_the_rest_is_sent(
    tip_sources, smtp, caplog
):
    transform(WEEK1, ["L03", "L04", "L05", "L07", "L08", "L10"])
    expected = expected_statements(**WEEK1)
    assert set(BAD_ADDRESSES) <= set(expected)
    with caplog.at_level(logging.WARNING, logger="operations.jobs.tip_emails"):
        task = run_job("email_tips", WEEK1)
    assert task.status == "completed_with_errors"
    assert task.result["failed"] == task.error_count == 6
    assert task.result["sent"] == len(expected) - 6
    last = max(BAD_ADDRESSES)  # statements go out in employee order
    assert task.error == (f"employee {last} ({ROSTER[last]['name']}): {BAD_ADDRESSES[last]}")
    for employee_id, reason in BAD_ADDRESSES.items():
        assert f"employee {employee_id}: {reason}" in caplog.text
    assert sorted(smtp.handler.refused) == sorted(
        ROSTER[e]["email"] for e in ("L05-E039", "L08-E037")
    )
    sent_to = {r.rcpt_tos[0] for r in smtp.received}
    assert sent_to == {ROSTER[e]["email"] for e in expected if e not in BAD_ADDRESSES}
    stated = TipStatementDelivery.objects.filter(state="sent")
    assert set(stated.values_list("employee_id", flat=True)) == set(expected) - set(BAD_ADDRESSES)
    # The two the server refused were written down before the send, and marked not sent.
    assert set(
        TipStatementDelivery.objects.filter(state="not_sent").values_list("employee_id", flat=True)
    ) == {"L05-E039", "L08-E037"}
    assert "@" not in caplog.text


def test_a_rerun_sends_nothing(tip_sources, smtp):
    transform(DAY1, ["L01"])
    first = run_job("email_tips", WEEK1)
    count = len(smtp.received)
    assert first.result["sent"] == count > 5
    second = run_job("email_tips", WEEK1)
    assert second.status == "completed"
    assert (second.result["sent"], second.result["skipped_unchanged"]) == (0, count)
    assert len(smtp.received) == count
    assert TipStatementDelivery.objects.count() == count


def test_a_changed_statement_goes_out_again_as_a_correction(tip_sources, smtp, settings, tmp_path):
    sales = tmp_path / "sales"
    sales.mkdir()
    shutil.copy(SAMPLE / "sales" / "locations.json", sales)
    for n in range(2, 9):
        day = f"2025-06-0{n}"
        (sales / day).mkdir()
        for name in ("L01.json.gz", "L01.cash-tips.json"):
            shutil.copy(SAMPLE / "sales" / day / name, sales / day / name)
    settings.SALES_SOURCE_URL = f"file://{sales}"
    transform(WEEK1, ["L01"])
    assert run_job("email_tips", WEEK1).result["failed"] == 0
    before = {
        (s.employee_id, s.business_date): (s.card_tips, s.cash_tips) for s in TipShare.objects.all()
    }
    first_count = len(smtp.received)

    declared = sales / "2025-06-04" / "L01.cash-tips.json"
    data = json.loads(declared.read_text())
    data["declarations"][0]["amount"] = str(Decimal(data["declarations"][0]["amount"]) + 5)
    declared.write_text(json.dumps(data))
    transform(WEEK1, ["L01"])
    after = {
        (s.employee_id, s.business_date): (s.card_tips, s.cash_tips) for s in TipShare.objects.all()
    }
    changed = {
        employee for (employee, day), value in after.items() if before.get((employee, day)) != value
    }
    assert 0 < len(changed) < len({e for e, _ in after})

    task = run_job("email_tips", WEEK1)
    assert task.status == "completed", task.error
    assert task.result["sent"] == task.result["corrections"] == len(changed)
    assert task.result["skipped_unchanged"] == len({e for e, _ in after}) - len(changed)
    again = smtp.received[first_count:]
    assert {r.rcpt_tos[0] for r in again} == {ROSTER[e]["email"] for e in changed}
    for got in again:
        assert got.message["Subject"] == "Corrected tip statement 2025-06-02 to 2025-06-08"
        assert "corrects the one we sent you earlier" in text_part(got.message)
    assert TipStatementDelivery.objects.filter(correction=True).count() == len(changed)
    assert run_job("email_tips", WEEK1).result["sent"] == 0


def test_a_statement_changed_back_goes_out_again(tip_sources, smtp, settings, tmp_path):
    """A -> B -> A: the employee holds B until A is sent again; only the latest counts."""
    sales = tmp_path / "sales"
    (sales / "2025-06-02").mkdir(parents=True)
    shutil.copy(SAMPLE / "sales" / "locations.json", sales)
    for name in ("L01.json.gz", "L01.cash-tips.json"):
        shutil.copy(SAMPLE / "sales" / "2025-06-02" / name, sales / "2025-06-02" / name)
    settings.SALES_SOURCE_URL = f"file://{sales}"
    declared = sales / "2025-06-02" / "L01.cash-tips.json"
    original = declared.read_text()
    transform(DAY1, ["L01"])
    first = run_job("email_tips", WEEK1)
    assert first.result["failed"] == 0 and first.result["sent"] > 5
    hashes_a = dict(TipStatementDelivery.objects.values_list("employee_id", "content_hash"))

    data = json.loads(original)
    data["declarations"][0]["amount"] = str(Decimal(data["declarations"][0]["amount"]) + 5)
    declared.write_text(json.dumps(data))
    transform(DAY1, ["L01"])
    to_b = run_job("email_tips", WEEK1)
    assert to_b.result["corrections"] == to_b.result["sent"] > 0

    declared.write_text(original)
    transform(DAY1, ["L01"])
    count = len(smtp.received)
    back = run_job("email_tips", WEEK1)
    assert back.status == "completed", back.error
    assert back.result["sent"] == back.result["corrections"] == to_b.result["sent"]
    again = smtp.received[count:]
    assert len(again) == to_b.result["sent"]
    for got in again:
        assert got.message["Subject"] == "Corrected tip statement 2025-06-02 to 2025-06-08"
    latest = {
        d.employee_id: d.content_hash
        for d in TipStatementDelivery.objects.order_by("employee_id", "-pk").distinct("employee_id")
    }
    assert latest == hashes_a
    assert run_job("email_tips", WEEK1).result["sent"] == 0


def test_a_dropped_connection_and_a_451_are_retried_then_delivered(tip_sources, smtp):
    transform(DAY1, ["L01"])
    smtp.drop(1)
    smtp.tempfail(1)
    task = run_job("email_tips", WEEK1)
    assert task.status == "completed", task.error
    assert (smtp.handler.dropped, smtp.handler.tempfailed) == (1, 1)
    recipients = [r.rcpt_tos[0] for r in smtp.received]
    assert len(recipients) == len(set(recipients)) == task.result["sent"]
    assert task.result["failed"] == 0
    assert smtp.handler.data_commands == task.result["sent"] + 2


def test_what_still_fails_after_the_retries_is_an_error(tip_sources, smtp, settings):
    settings.EMAIL_MAX_RETRIES = 2
    transform(DAY1, ["L01"])
    smtp.tempfail(7)  # three attempts each for two statements, then one more 451
    task = run_job("email_tips", WEEK1)
    assert task.status == "completed_with_errors"
    assert task.result["failed"] == 2
    assert task.error.endswith(
        ": not delivered after 3 attempts (the mail server refused the message (451))"
    )
    assert len(smtp.received) == task.result["sent"] == task.result["statements"] - 2


def test_a_slow_server_still_gets_everything(tip_sources, smtp, settings):
    settings.EMAIL_TIMEOUT = 2
    transform(DAY1, ["L01"])
    smtp.slow(0.25)
    started = time.monotonic()
    task = run_job("email_tips", WEEK1)
    assert task.status == "completed", task.error
    assert len(smtp.received) == task.result["sent"]
    assert time.monotonic() - started >= 0.25 * task.result["sent"]


def test_the_rate_cap_spaces_the_sends(tip_sources, smtp, settings):
    transform(DAY1, ["L01"])
    settings.EMAIL_RATE_PER_SECOND = 10
    started = time.monotonic()
    task = run_job("email_tips", WEEK1)
    elapsed = time.monotonic() - started
    sent = task.result["sent"]
    assert sent > 5
    assert elapsed >= (sent - 1) / 10 * 0.9, elapsed


def test_the_file_backend_writes_the_outbox(tip_sources, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path / "outbox")
    settings.EMAIL_RATE_PER_SECOND = 1000
    transform(DAY1, ["L01"])
    task = run_job("email_tips", WEEK1)
    assert task.status == "completed", task.error
    logs = list((tmp_path / "outbox").glob("*.log"))
    assert logs
    content = "".join(p.read_text() for p in logs)
    assert (
        content.count("Subject: Tip statement 2025-06-02 to 2025-06-08")
        == (task.result["sent"])
        == TipStatementDelivery.objects.count()
        > 5
    )


def test_a_period_not_transformed_fails(tip_sources, smtp):
    task = run_job("email_tips", WEEK1)
    assert task.status == "failed"
    assert task.error == (
        "pay period 2025-06-02..2025-06-08 has not been transformed; run transform_tips first"
    )


def test_an_unreachable_mail_server_fails_the_job(tip_sources, settings):
    from tests.support.smtp_server import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_BACKOFF_SECONDS, settings.EMAIL_MAX_RETRIES = 0.01, 1
    transform(DAY1, ["L01"])
    task = run_job("email_tips", WEEK1)
    assert task.status == "failed"
    assert task.error.startswith(
        "mail server unavailable (ConnectionRefusedError after 2 attempt(s)); 0 sent"
    )
    # The one intent written before the first send is marked not sent: nothing stated.
    assert list(TipStatementDelivery.objects.values_list("state", flat=True)) == ["not_sent"]


def test_statements_go_out_only_from_a_transformation_that_finished(tip_sources, smtp):
    transform(WEEK1, ["L01"])
    again = registry.validate_params("transform_tips", {**WEEK1, "locations": ["L01"]})
    running = tracker.create_task("transform_tips", params=again, launched_by="test")
    task = run_job("email_tips", WEEK1)
    assert task.status == "failed"
    assert task.error == (
        f"transform_tips for 2025-06-02..2025-06-08 is still running (task {running.task_id}); "
        "statements go out once it has finished"
    )
    running.fail("the sales source went away")
    task = run_job("email_tips", WEEK1)
    assert task.status == "failed"
    assert (
        f"the last transform_tips for 2025-06-02..2025-06-08 failed (task {running.task_id})"
        in (task.error)
    )
    assert TipStatementDelivery.objects.count() == 0
    transform(WEEK1, ["L01"])
    task = run_job("email_tips", WEEK1)
    assert task.status in ("completed", "completed_with_errors"), task.error
    assert TipStatementDelivery.objects.count() == task.result["sent"] > 0


def test_statements_go_out_over_starttls_with_the_login_of_email_url(tip_sources, tmp_path):
    """Production's relay: EMAIL_URL read by the settings, STARTTLS to a certificate the
    process verifies (its CA in SSL_CERT_FILE), AUTH after TLS only; nothing in clear."""
    transform(WEEK1, ["L01"])
    tls = loopback_certificate(tmp_path, "Test mail relay CA")
    with smtp_server(tls=tls, login=("relay-user", "s3cret")) as server:
        env = service_env(
            EMAIL_URL=f"submission://relay-user:s3cret@127.0.0.1:{server.port}",
            SSL_CERT_FILE=str(tls.ca_file),
            ROSTER_SOURCE_URL=django_settings.ROSTER_SOURCE_URL,
            TIP_POLICY_FILE=str(django_settings.TIP_POLICY_FILE),
        )
        done = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "run_operation",
                "email_tips",
                "--period_start=2025-06-02",
                "--period_end=2025-06-08",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        received = server.received
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert received, done.stdout[-2000:]
    assert all(message.tls and message.login == "relay-user" for message in received), [
        (m.tls, m.login) for m in received[:3]
    ]
    assert TipStatementDelivery.objects.count() == len(received)
    assert "s3cret" not in done.stdout + done.stderr

"""Credentials never reach a log line, whatever the parameter or message they ride in."""

from __future__ import annotations

import logging

import pytest

from tasks.auth.bearer import TOKEN_PREFIX
from tasks.auth.redaction import REDACTED, RedactTokensFilter, redact

LOCAL = TOKEN_PREFIX + "Zm9vYmFyYmF6cXV4LXF1dXgtY29yZ2UtZ3JhdWx0"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws/task-status?token={LOCAL}&operation=daily_sales",
        f"GET /ws/task-status?operation=x&key={LOCAL}",
        f"refused credentials {LOCAL} from 10.0.0.1",
        f'{{"authorization": "{LOCAL}"}}',
    ],
)
def test_a_local_api_token_is_redacted_anywhere(text):
    cleaned = redact(text)
    assert LOCAL not in cleaned and TOKEN_PREFIX + "Zm9v" not in cleaned
    assert REDACTED in cleaned


def test_a_document_link_token_is_redacted_from_the_access_log_line():
    line = "GET /documents/eyJuIjoiZm9vZC1oYW5kbGVy:1tQk2x:abcDEF123_-xyz 200 3.1ms"
    assert redact(line) == f"GET /documents/{REDACTED} 200 3.1ms"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("connect to postgres://tasks:S3cr3t!x@db.internal:5432/tasks failed", "postgres://tasks:"),
        ("Error 111 connecting to redis://:hunter22@cache:6379/0.", "redis://:"),
        ("EMAIL_URL=submission://relay-user:p%40ss@smtp.example.com:587", "relay-user:"),
    ],
)
def test_a_password_in_a_url_is_redacted_and_the_rest_kept(text, kept):
    cleaned = redact(text)
    for secret in ("S3cr3t!x", "hunter22", "p%40ss"):
        assert secret not in cleaned
    assert kept + REDACTED + "@" in cleaned


def test_a_url_without_a_password_is_left_alone():
    text = "GET https://tasks.example.com:8443/task-status from postgres://tasks@db/tasks"
    assert redact(text) == text


def test_words_that_merely_start_alike_are_left_alone():
    assert redact("the tsk_ prefix and tsk_short stay") == "the tsk_ prefix and tsk_short stay"


def test_the_logging_filter_redacts_arguments_too():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s seen", (LOCAL,), None)
    RedactTokensFilter().filter(record)
    assert LOCAL not in record.getMessage()


SLACK = "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/aBcDeFgHiJkLmNoPqRsTuVwX"
TEAMS = (
    "https://contoso.webhook.office.com/webhookb2/0b9a1c2d-1111-2222-3333-444455556666"
    "@72f988bf-86f1-41af-91ab-2d7cd011db47/IncomingWebhook/9f8e7d6c5b4a/"
    "a1b2c3d4-e5f6-7788-99aa-bbccddeeff00"
)
TEAMS_LEGACY = "https://outlook.office.com/webhook/0b9a1c2d-1111@72f988bf/IncomingWebhook/9f8e/a1b2"


@pytest.mark.parametrize(
    ("url", "kept", "secret"),
    [
        (SLACK, "https://hooks.slack.com/services/", "aBcDeFgHiJkLmNoPqRsTuVwX"),
        (TEAMS, "https://contoso.webhook.office.com/", "IncomingWebhook/9f8e7d6c5b4a"),
        (TEAMS_LEGACY, "https://outlook.office.com/webhook/", "IncomingWebhook/9f8e"),
    ],
)
def test_a_webhook_path_is_redacted_and_its_host_kept(url, kept, secret):
    line = f"alert webhook POST {url} failed: 503"
    cleaned = redact(line)
    assert secret not in cleaned
    assert cleaned == f"alert webhook POST {kept}{REDACTED} failed: 503"


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Basic dXNlcjpodW50ZXIy",
        "{'Authorization': 'Basic dXNlcjpodW50ZXIy', 'Accept': '*/*'}",
        "proxy-authorization=basic dXNlcjpodW50ZXIy",
        "sent Basic dXNlcjpodW50ZXIy to the relay",
    ],
)
def test_basic_credentials_are_redacted(text):
    cleaned = redact(text)
    assert "dXNlcjpodW50ZXIy" not in cleaned and REDACTED in cleaned


def test_the_word_basic_in_a_sentence_is_left_alone():
    text = "Basic authentication is off; Basic auth stays off"
    assert redact(text) == text


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "api_key",
        "apikey",
        "API-KEY",
        "key",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "sig",
        "signature",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "x-amz-security-token",
        "code",
        "Token",
        "PASSWORD",
    ],
)
def test_a_secret_query_parameter_is_redacted_whatever_its_case(name):
    value = "s3cr3tV4lue-0123456789"
    for line in (
        f"GET /cb?state=ok&{name}={value}&next=/ 200",
        f"GET /cb?{name}={value} 200",
        f"https://bucket.s3.example.com/f.pdf?X-Amz-Date=20250101&{name}={value}",
        f"GET /login?next=%2Fcb%3Fa%3D1%26{name}%3D{value} 302",
    ):
        cleaned = redact(line)
        assert value not in cleaned, (name, line, cleaned)
        assert REDACTED in cleaned


def test_other_parameters_and_log_words_are_left_alone():
    text = (
        "GET /task-status?operation=daily_sales&status=failed&cursor=abc&limit=5 200 "
        "worker exited with code=1, cache key=tips:L01 tokens_purged=3 keyword=x"
    )
    assert redact(text) == text


def test_a_password_in_json_is_redacted():
    cleaned = redact('{"username": "ana", "password": "hunter2!", "api_key": "k-123"}')
    assert "hunter2!" not in cleaned and "k-123" not in cleaned
    assert '"username": "ana"' in cleaned

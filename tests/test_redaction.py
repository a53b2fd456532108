"""Credentials never reach a log line, whatever the parameter or message they ride in."""

from __future__ import annotations

import logging

import pytest

from tasks.auth.identity import TOKEN_PREFIX
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

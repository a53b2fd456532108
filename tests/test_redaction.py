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


def test_words_that_merely_start_alike_are_left_alone():
    assert redact("the tsk_ prefix and tsk_short stay") == "the tsk_ prefix and tsk_short stay"


def test_the_logging_filter_redacts_arguments_too():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s seen", (LOCAL,), None)
    RedactTokensFilter().filter(record)
    assert LOCAL not in record.getMessage()

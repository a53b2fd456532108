"""How an alert leaves: a webhook POST tried once (a failure is the alert task's retry,
never a sleep in the worker), and the backoff between tries."""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings


class Transient(Exception):
    """Not delivered this time; worth another try later (``retry_after``: at least this)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The target said no for good (a 4xx, an address the mail server refuses)."""


def _retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    header = response.headers.get("Retry-After", "").strip()
    if not header:
        return None
    try:
        return max(float(header), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def post_webhook(url: str, payload: dict[str, Any], label: str) -> None:
    """POST the JSON once, within ALERT_TIMEOUT_SECONDS.

    Raises Transient on connection errors, timeouts, 429 and 5xx (with the
    server's Retry-After, if any: the alert task's retry waits at least that),
    Refused on any other answer. No sleeping here: the worker is free between
    tries. Logs name the host only: a webhook URL's path is its secret.
    """
    timeout = float(settings.ALERT_TIMEOUT_SECONDS)
    response = None
    try:
        response = requests.post(
            url, json=payload, timeout=(min(timeout, 5.0), timeout), allow_redirects=False
        )
    except requests.Timeout:
        last = f"timed out after {timeout:g}s"
    except requests.ConnectionError as exc:
        last = f"unreachable ({exc.__class__.__name__})"
    except requests.RequestException as exc:
        raise Refused(f"request not sent ({exc.__class__.__name__})") from None
    else:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status != 429 and status < 500:
            raise Refused(f"HTTP {status}")
        last = f"HTTP {status}"
    raise Transient(last, retry_after=_retry_after(response) or 0.0)


def retry_countdown(retries: int, retry_after: float = 0.0) -> float:
    """Seconds before the alert task's next try: ALERT_BACKOFF_SECONDS x 2^retries
    (a quarter of jitter), at least the receiver's Retry-After, at most
    ALERT_BACKOFF_MAX_SECONDS."""
    backoff = float(settings.ALERT_BACKOFF_SECONDS) * 2**retries * (1 + random.random() / 4)
    return min(max(backoff, retry_after), float(settings.ALERT_BACKOFF_MAX_SECONDS))

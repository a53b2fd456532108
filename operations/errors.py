"""What launching and cancelling can refuse, in the domain's words.

Defined with the launcher in ``tasks.launcher`` (``tasks.exceptions`` maps each to
its HTTP answer, in one place); the admin and the command line show the message.
"""

from __future__ import annotations

from tasks.launcher import (
    KeyReused,
    LaunchInProgress,
    NoSuchTask,
    NotAllowed,
    QueueUnavailable,
    ServiceError,
)

__all__ = [
    "KeyReused",
    "LaunchInProgress",
    "NoSuchTask",
    "NotAllowed",
    "QueueUnavailable",
    "ServiceError",
]

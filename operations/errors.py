"""What launching and cancelling can refuse, in the domain's words.

``tasks.exceptions`` maps each to its HTTP answer, in one place; the admin and
the command line show the message.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A launch or cancel refused; the message is safe to show."""


class NotAllowed(ServiceError):
    """The user may not do this to this operation (its reader role is missing)."""


class NoSuchTask(ServiceError):
    """Unknown, malformed, expired, or hidden from this user: the same answer for all."""


class LaunchInProgress(ServiceError):
    """An Idempotency-Key whose first launch has not finished yet."""


class KeyReused(ServiceError):
    """An Idempotency-Key used before for a different launch."""


class QueueUnavailable(ServiceError):
    """The job queue (the broker) could not take the job; the task ended ``failed``."""

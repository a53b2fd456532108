"""purge: delete expired task statuses through the tracker (the only writer of TaskStatus)."""

from __future__ import annotations

import logging

from tasks import metrics, tracker

logger = logging.getLogger(__name__)

BATCH_SIZE = 10_000  # at most this many rows per DELETE, so readers never stall


def run() -> int:
    """Remove every expired task in batches; returns how many rows went."""
    removed = tracker.purge_expired(batch_size=BATCH_SIZE)
    metrics.TASKS_PURGED.inc(removed)
    logger.info("purge removed %d expired task(s)", removed)
    return removed

"""purge: delete expired task statuses through the tracker (the only writer of TaskStatus),
and the bookkeeping that outlived them.

A job run's lease, an alert's delivery record and an idempotency key matter only
while their task exists: a redelivered job, a retried alert or a repeated launch
all come within minutes. A day past the time their task expired at the latest
(TASK_STATUS_TTL after its last change) they are deleted too, so that no table
grows for ever; an idempotency key can then be used again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from tasks import metrics, tracker
from tasks.models import IdempotencyKey

from ..models import AlertDelivery, JobRun

logger = logging.getLogger(__name__)

BATCH_SIZE = 10_000  # at most this many rows per DELETE, so readers never stall
# A task's last change may come well after its start (JOB_MAX_SECONDS, liveness bounds).
BOOKKEEPING_MARGIN = timedelta(days=1)


def run() -> int:
    """Remove every expired task in batches; returns how many rows went."""
    removed = tracker.purge_expired(batch_size=BATCH_SIZE)
    metrics.TASKS_PURGED.inc(removed)
    kept = timedelta(seconds=settings.TASK_STATUS_TTL) + BOOKKEEPING_MARGIN
    leftovers = purge_bookkeeping(timezone.now() - kept)
    logger.info(
        "purge removed %d expired task(s); %s",
        removed,
        ", ".join(f"{count} {what}" for what, count in leftovers.items()),
    )
    return removed


def purge_bookkeeping(before: datetime) -> dict[str, int]:
    """Job runs finished, alerts delivered and idempotency keys taken before ``before``."""
    return {
        "job runs": _delete_in_batches(JobRun.objects.filter(finished_at__lt=before)),
        "alert deliveries": _delete_in_batches(AlertDelivery.objects.filter(created_at__lt=before)),
        "idempotency keys": _delete_in_batches(IdempotencyKey.objects.filter(created__lt=before)),
    }


def _delete_in_batches(rows: QuerySet) -> int:
    total = 0
    while True:
        batch = list(rows.values_list("pk", flat=True)[:BATCH_SIZE])
        if not batch:
            return total
        deleted, _ = rows.model.objects.filter(pk__in=batch).delete()
        total += deleted

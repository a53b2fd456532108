"""Expiry: expired tasks and their timelines deleted in batches readers never wait on."""

from __future__ import annotations

from django.db import connection, transaction

from ..models import TaskEvent, TaskStatus
from .store import clock


def purge_expired(*, batch_size: int = 10000, now: float | None = None) -> int:
    """Delete expired rows in batches so that readers never wait on one long statement.

    Plain SQL on purpose: a queryset ``delete()`` collects every row in Python
    first, which is what runs other task stores out of memory at a million rows.
    On PostgreSQL each batch walks the ``expires_at`` index on from where the
    last one stopped and deletes by ``ctid``: ``task_id IN (SELECT ... LIMIT)``
    was planned as a hash join over the whole table, once per batch, and took
    14 s for a million rows where this takes under 3 (bench/purge.py).
    """
    cutoff = clock() if now is None else now
    table = connection.ops.quote_name(TaskStatus._meta.db_table)
    if connection.vendor == "postgresql":
        return _purge_postgresql(table, cutoff, batch_size)
    events = connection.ops.quote_name(TaskEvent._meta.db_table)
    batch = f"SELECT task_id FROM {table} WHERE expires_at <= %s LIMIT %s"
    removed = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # The timeline goes with its task (the batch is read twice in one write
            # transaction, which SQLite serialises: both see the same rows).
            cursor.execute(f"DELETE FROM {events} WHERE task_id IN ({batch})", [cutoff, batch_size])
            cursor.execute(f"DELETE FROM {table} WHERE task_id IN ({batch})", [cutoff, batch_size])
            count = cursor.rowcount
        removed += count
        if count < batch_size:
            return removed


def _purge_postgresql(table: str, cutoff: float, batch_size: int) -> int:
    # ``expires_at <= cutoff`` is checked again on the deleted row itself, so a
    # row that a writer renewed between the two is left alone.
    # The timeline goes with its task, in the same statement.
    events = connection.ops.quote_name(TaskEvent._meta.db_table)
    sql = (
        f"WITH gone AS (DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {table} WHERE expires_at <= %s AND expires_at >= %s "
        f"ORDER BY expires_at LIMIT %s)) AND expires_at <= %s RETURNING task_id, expires_at), "
        f"timeline AS (DELETE FROM {events} WHERE task_id IN (SELECT task_id FROM gone)) "
        f"SELECT count(*), max(expires_at) FROM gone"
    )
    removed, low = 0, float("-inf")
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [cutoff, low, batch_size, cutoff])
            count, highest = cursor.fetchone()
        removed += count
        if count < batch_size:
            return removed
        low = highest

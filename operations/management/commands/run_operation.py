"""``manage.py run_operation <operation> [--name value ...]``: run one job, watch it, exit 1
if it fails.

The job is the same Celery task the workers run, executed here (or, with
``--queue``, sent to the workers); the progress bar is drawn from the task's
stored status, the same updates the API and the WebSocket serve.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from operations import registry, runner, services
from operations.errors import ServiceError
from tasks.selectors import get_task
from tasks.serializers import task_document
from tasks.tracker import TaskAlreadyFinished

BAR = 30
TERMINAL = {"completed", "completed_with_errors", "failed"}


def parse_params(argv: list[str], fields: Mapping[str, serializers.Field]) -> dict[str, Any]:
    """``--business-date 2025-06-03 --locations L01,L02 --full`` -> a params dict."""
    params: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise CommandError(f"expected --name value, got {arg!r}")
        name, _, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        field = fields.get(name)
        if not value:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if isinstance(field, serializers.BooleanField) and (
                nxt is None or nxt.startswith("--")
            ):
                value = "true"
            elif nxt is None:
                raise CommandError(f"--{name} needs a value")
            else:
                value = nxt
                i += 1
        i += 1
        if isinstance(field, serializers.ListField):
            params.setdefault(name, []).extend(v for v in value.split(",") if v)
        else:
            params[name] = value
    return params


class Command(BaseCommand):
    help = "Run one operation's job and show its progress; exits 1 when the task fails."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue",
            action="store_true",
            help="send the job to the Celery workers and watch it there",
        )
        parser.add_argument("operation")
        parser.add_argument(
            "params", nargs=argparse.REMAINDER, help="operation parameters as --name value"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        operation = options["operation"]
        try:
            spec = registry.get_spec(operation)
            params = parse_params(options["params"], spec.params_serializer().fields)
            launched = services.launch_task(
                operation, params, launched_by="command line", send=options["queue"]
            )
        except ValidationError as exc:
            raise CommandError(f"{operation}: {exc.detail}") from exc
        except ServiceError as exc:
            raise CommandError(f"{operation}: {exc}") from exc
        started = launched.task
        self.stdout.write(f"{operation} task {started.task_id} {started.params}")
        job = None
        if not options["queue"]:  # the same job the workers run, in this process
            job = threading.Thread(
                target=runner.run_task,
                args=(operation, str(started.task_id), started.params),
                kwargs={"worker": runner.worker_label("command line")},
                daemon=True,
            )
            job.start()
        try:
            task = self.watch(str(started.task_id))
        except KeyboardInterrupt:
            try:
                services.cancel_task(str(started.task_id), by="command line (Ctrl-C)")
            except TaskAlreadyFinished:
                pass  # it ended as the key was pressed: show how
            self.stderr.write("\ncancel requested; waiting for the job to stop")
            task = self.watch(str(started.task_id))
        if job is not None:
            job.join(timeout=30)
        # The last line is the task's document as JSON (the REST API's), for a script:
        # `run_operation ... | tail -n 1 | jq .result`; a failed task also exits 1.
        self.stdout.write("\n" + json.dumps(task_document(task), sort_keys=True))
        if task.status == "failed":
            raise CommandError(f"{operation} failed: {task.error}")

    def watch(self, task_id: str) -> Any:
        tty = sys.stdout.isatty()
        seen: tuple[int | None, str | None] = (None, None)  # (version, status) last drawn
        last_error = None
        while True:
            task = get_task(task_id)
            if task is None:
                raise CommandError(f"task {task_id} disappeared")
            if task.error and task.error != last_error and task.status != "failed":
                last_error = task.error
                self.stdout.write(("\n" if tty else "") + f"  error: {task.error}")
            state = (task.version, task.status)
            if state != seen:
                seen = state
                self.stdout.write(self.bar(task), ending="\r" if tty else "\n")
                self.stdout.flush()
            if task.status in TERMINAL:
                return task
            time.sleep(0.2)

    @staticmethod
    def bar(task: Any) -> str:
        current = task.progress_current or 0
        total = task.progress_total or 0
        filled = int(BAR * current / total) if total else 0
        message = (task.progress_message or "")[:60]
        return (
            f"[{'#' * filled}{'.' * (BAR - filled)}] {current}/{total or '?'} "
            f"{task.status:<21} {message}"
        )

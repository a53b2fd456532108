"""Tips and food handler tasks are personal data: only their reader role (and staff) see them.

Each door is tried with a user who holds the role and one who does not: REST
reads, lists and cancels, launches, the WebSocket (live delivery, catch-up, a
subscription by task id or operation), the monitor and task pages, the admin.
For anyone without the role such a task does not exist.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from tasks import tracker
from tasks.auth.bearer import issue_local_token
from tests.support.servers import report
from tests.test_websocket import quiet, recv_json, run, url

pytestmark = pytest.mark.django_db(transaction=True)

TIPS_ROLE = "TaskStatus.Tips.Read"
FOOD_ROLE = "TaskStatus.FoodHandler.Read"


def make_user(django_user_model, name: str, *groups: str, staff: bool = False):
    user = django_user_model.objects.create_user(name, password=f"pw-{name}", is_staff=staff)
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def bearer(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(user)}")
    return client


@pytest.fixture
def tasks() -> dict[str, str]:
    """One task of a plain operation, one of tips, one of food handlers."""
    made = {}
    for operation in ("daily_sales", "transform_tips", "update_food_handler_pdfs"):
        handle = tracker.create_task(operation, total=1)
        handle.progress(1, "done")
        made[operation] = handle.task_id
    return made


@pytest.fixture
def people(django_user_model):
    return {
        "plain": make_user(django_user_model, "plain"),
        "tips": make_user(django_user_model, "tipsreader", TIPS_ROLE),
        "runner": make_user(django_user_model, "plainrunner", settings.TASK_RUNNER_ROLE),
        "staff": make_user(django_user_model, "boss", staff=True),
    }


def listed(client: APIClient, query: str = "") -> set[str]:
    response = client.get(f"/task-status{query}")
    assert response.status_code == 200, response.content
    return {task["task_id"] for task in response.json()}


def test_rest_reads_and_lists_show_a_personal_task_only_to_its_readers(tasks, people):
    plain, tips, staff = bearer(people["plain"]), bearer(people["tips"]), bearer(people["staff"])
    sales, tip, food = (
        tasks[k] for k in ("daily_sales", "transform_tips", "update_food_handler_pdfs")
    )

    assert listed(plain) == {sales}
    assert listed(tips) == {sales, tip}
    assert listed(staff) == {sales, tip, food}
    assert listed(plain, "?operation=transform_tips") == set()
    assert listed(tips, "?operation=transform_tips") == {tip}

    for client, task_id, expected in (
        (plain, tip, 404),
        (plain, food, 404),
        (tips, tip, 200),
        (tips, food, 404),
        (staff, food, 200),
        (plain, sales, 200),
    ):
        response = client.get(f"/task-status/{task_id}")
        assert response.status_code == expected, (task_id, response.content)
    # Hidden reads exactly like an unknown id: same status, same shape.
    hidden = plain.get(f"/task-status/{tip}").json()
    assert set(hidden) == {"detail", "request_id"} and tip in hidden["detail"]


def test_a_runner_without_the_reader_role_can_neither_cancel_nor_launch_it(tasks, people):
    runner = bearer(people["runner"])
    response = runner.post(f"/task-status/{tasks['transform_tips']}/cancel")
    assert response.status_code == 404
    response = runner.post(
        "/task-status", {"operation": "transform_tips", "params": {}}, format="json"
    )
    assert response.status_code == 403
    assert "reader role" in response.json()["detail"]
    assert listed(bearer(people["staff"]), "?operation=transform_tips") == {tasks["transform_tips"]}


def test_the_monitor_and_the_task_page_leave_it_out(client, tasks, people):
    client.force_login(people["plain"])
    page = client.get("/").content.decode()
    assert tasks["daily_sales"] in page
    assert tasks["transform_tips"] not in page
    assert 'value="transform_tips"' not in page  # not even offered as a filter
    assert client.get(f"/tasks/{tasks['transform_tips']}").status_code == 404
    assert client.get(f"/tasks/{tasks['daily_sales']}").status_code == 200

    client.force_login(people["tips"])
    page = client.get("/").content.decode()
    assert tasks["transform_tips"] in page
    assert tasks["update_food_handler_pdfs"] not in page
    assert client.get(f"/tasks/{tasks['transform_tips']}").status_code == 200


def test_the_admin_is_for_staff_who_see_everything(client, tasks, people):
    client.force_login(people["tips"])
    response = client.get("/admin/tasks/taskstatus/")
    assert response.status_code == 302  # not staff: sent to the admin's login
    staff = people["staff"]
    staff.user_permissions.add(Permission.objects.get(codename="view_taskstatus"))
    client.force_login(staff)
    page = client.get("/admin/tasks/taskstatus/").content.decode()
    assert tasks["transform_tips"] in page and tasks["update_food_handler_pdfs"] in page


def test_the_websocket_neither_delivers_nor_catches_up_a_personal_task(live, tasks, people):
    plain_token = issue_local_token(people["plain"])
    tips_token = issue_local_token(people["tips"])

    async def scenario():
        loop = asyncio.get_running_loop()
        async with (
            websockets.connect(url(live, plain_token, "since=0")) as plain,
            websockets.connect(url(live, tips_token, "since=0")) as tips,
        ):
            caught_plain = [
                m["payload"]["task_id"]
                for m in await quiet(plain, 1.0)
                if m["type"] == "task_status"
            ]
            caught_tips = [
                m["payload"]["task_id"]
                for m in await quiet(tips, 0.3)
                if m["type"] == "task_status"
            ]
            # A subscription by a hidden task's id answers like one by an unknown id.
            await plain.send(
                json.dumps({"action": "subscribe", "task_id": tasks["transform_tips"], "since": 0})
            )
            by_id = await recv_json(plain)
            await plain.send(json.dumps({"action": "subscribe", "operation": "email_tips"}))
            by_operation = await recv_json(plain)
            await loop.run_in_executor(None, report, [["start", "email_tips"], ["complete"]])
            await loop.run_in_executor(None, report, [["start", "invoice_sync"], ["complete"]])
            live_plain = [
                m["payload"]["operation"]
                for m in await quiet(plain, 1.0)
                if m["type"] == "task_status"
            ]
            live_tips = [
                m["payload"]["operation"]
                for m in await quiet(tips, 0.3)
                if m["type"] == "task_status"
            ]
            return caught_plain, caught_tips, by_id, by_operation, live_plain, live_tips

    caught_plain, caught_tips, by_id, by_operation, live_plain, live_tips = run(scenario())
    assert caught_plain == [tasks["daily_sales"]]
    assert sorted(caught_tips) == sorted([tasks["daily_sales"], tasks["transform_tips"]])
    assert by_id == {
        "type": "subscribed",
        "subscription": {"task_id": tasks["transform_tips"], "since": 0},
    }
    assert by_operation["type"] == "error" and "reader role" in by_operation["error"]
    assert live_plain == ["invoice_sync", "invoice_sync"]
    assert live_tips == ["email_tips", "email_tips", "invoice_sync", "invoice_sync"]


def test_the_reader_roles_are_a_setting(settings, tasks, people):
    settings.PERSONAL_DATA_READER_ROLES = {"daily_sales": TIPS_ROLE}
    plain = bearer(people["plain"])
    assert listed(plain) == {tasks["transform_tips"], tasks["update_food_handler_pdfs"]}
    assert listed(bearer(people["tips"])) == set(tasks.values())

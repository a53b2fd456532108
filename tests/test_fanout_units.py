"""Fan-out logic that needs no server: the catch-up floor and the hub's routing."""

from __future__ import annotations

from tasks.consumers import newer_than_floor
from tasks.live.hub import Hub
from tasks.live.routes import ALL, task_key
from tasks.live.wire import Update


def update(task_id: str, version: int) -> Update:
    return Update(task_id, "daily_sales", version, "processing", "{}")


def test_late_copies_are_dropped_and_newer_versions_pass_even_several_in_one_batch():
    floor = {"a": 2, "b": 5}
    batch = [
        update("a", 1),
        update("a", 2),
        update("a", 3),
        update("a", 4),
        update("b", 5),
        update("c", 1),
    ]
    passed = [(u.task_id, u.version) for u in batch if newer_than_floor(floor, u)]
    assert passed == [("a", 3), ("a", 4), ("c", 1)]
    assert floor == {"b": 5}, "a task is forgotten once a newer version passed"
    assert newer_than_floor(floor, update("b", 6)) and floor == {}
    assert newer_than_floor(floor, update("b", 7)), "an empty floor lets everything pass"


class Client:
    """What the hub sees of a connection: it is handed updates and can be closed."""

    def __init__(self, broken: bool = False) -> None:
        self.broken, self.got, self.closed_with = broken, [], []

    def deliver(self, update: Update) -> None:
        if self.broken:
            raise RuntimeError("a bug in this client's path")
        self.got.append(update.version)

    def deliver_many(self, updates: list[Update], blob: bytes | None) -> None:
        for one in updates:
            self.deliver(one)

    def shut_down(self, code: int) -> None:
        self.closed_with.append(code)


def wire(task_id: str, version: int) -> str:
    return f"{task_id} daily_sales {version} processing\n{{}}"


def test_a_client_whose_delivery_fails_is_closed_1011_and_the_others_still_get_theirs(caplog):
    hub = Hub()
    broken, everything, one_task = Client(broken=True), Client(), Client()
    for client in (broken, everything):
        hub.connect(client)
        hub.add(client, ALL)
    hub.connect(one_task)
    hub.add(one_task, task_key("t1"))
    hub.dispatch_raw_many([wire("t1", 1)])
    hub.dispatch_raw_many([wire("t1", 2), wire("t2", 1)])
    assert everything.got == [1, 2, 1] and one_task.got == [1, 2]
    assert broken.closed_with == [1011], "closed once, however many updates fail"
    assert caplog.text.count("delivery to a WebSocket client failed") == 1

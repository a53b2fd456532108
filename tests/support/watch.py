"""A launch over REST watched over the WebSocket, as a client application sees a run."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import websockets

from tests.support.servers import Daphne

TERMINAL = ("completed", "completed_with_errors", "failed")


def launch_and_watch(
    server: Daphne, token: str, operation: str, params: dict, *, timeout: float = 120
) -> list[dict]:
    """POST the launch (202), then every payload of that task until it ends, in order."""

    async def scenario() -> list[dict]:
        async with websockets.connect(f"{server.ws}?access_token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "subscribed"
            request = urllib.request.Request(
                f"{server.http}/task-status",
                method="POST",
                data=json.dumps({"operation": operation, "params": params}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(None, urllib.request.urlopen, request)
            assert response.status == 202
            task_id = json.load(response)["task_id"]
            seen: list[dict] = []
            while not seen or seen[-1]["status"] not in TERMINAL:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                if message["type"] == "task_status" and message["payload"]["task_id"] == task_id:
                    seen.append(message["payload"])
            return seen

    return asyncio.run(scenario())

"""The limit the service is compared with: a bare ``websockets`` server, no Django.

One Redis pub/sub subscription on the same updates channel, the same wire
messages (routing header line, then the frame), and ``websockets.broadcast``
of the very same frame bytes to the clients that want it: everyone, or those
whose URL names the task with ``task_id=``. No authentication, no database, no
catch-up, no conflation and no back-pressure: what is left is the cost of
Python, asyncio, redis-py and the WebSocket framing, which is the floor for
any server of ours written in Python.

``python -m bench.fanout_limit PORT REDIS_URL CHANNEL``; prints ``ready``.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.fanout_client import raise_open_files


async def main(port: int, redis_url: str, channel: str) -> None:
    everyone: set[ServerConnection] = set()
    by_task: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        tasks = query.get("task_id", [])
        for task_id in tasks:
            by_task.setdefault(task_id, set()).add(ws)
        if not tasks:
            everyone.add(ws)
        try:
            await ws.wait_closed()
        finally:
            everyone.discard(ws)
            for task_id in tasks:
                by_task.get(task_id, set()).discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=65536, backlog=4096):
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        print("ready", flush=True)
        while True:
            message = await pubsub.get_message(timeout=30.0)
            if message is None or message["type"] != "message":
                continue
            head, frame = message["data"].split(b"\n", 1)
            task_id = head.split(b" ", 1)[0].decode()
            broadcast(everyone, frame, text=True)
            watchers = by_task.get(task_id)
            if watchers:
                broadcast(watchers, frame, text=True)


if __name__ == "__main__":
    raise_open_files()
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))

"""A request whose client hangs up stops its work (``POST /recognize``'s synchronous mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client hung up before its recognition finished; the work was cancelled."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it as soon as the client disconnects.

    A clip costs seconds of pose time per second of video; a client that gave up (closed tab,
    timeout on its side) must not hold one of the places of the clips run at once. Called once the
    body has been read, so the next ASGI message can only be ``http.disconnect``.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if not task.done() or task.cancelled():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected
    return task.result()

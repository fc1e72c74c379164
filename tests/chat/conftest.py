# ruff: noqa: ASYNC109 - test helpers take explicit timeouts, as channels.testing does
"""Chat test helpers: sockets through the real ASGI application (origin check, session and
token auth) on the real Redis channel layer (livestream.settings.test)."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import User
from livestream.asgi import application
from streams.models import Stream
from tests.factories import UserFactory, make_stream

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


class Socket:
    """A connected communicator that remembers every frame it received."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.comm = communicator
        self.frames: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        await self.comm.send_json_to({"type": "chat.message", "text": text})

    async def next(self, timeout: float = 3) -> dict[str, Any]:
        frame = json.loads(await self.comm.receive_from(timeout=timeout))
        self.frames.append(frame)
        return frame

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5) -> dict[str, Any]:
        """The first frame (already received or arriving within ``timeout``) matching ``predicate``."""
        for frame in self.frames:
            if predicate(frame):
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {self.frames}")
            frame = await self.next(timeout=remaining)
            if predicate(frame):
                return frame

    async def wait_type(self, type_: str, timeout: float = 5) -> dict[str, Any]:
        return await self.wait_for(lambda f: f["type"] == type_, timeout)

    async def chat_messages(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        """The next ``count`` chat messages (unpacking chat.batch), not counting history."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: list[dict[str, Any]] = []
        index = 0
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                if frame["type"] == "chat.message":
                    seen.append(frame)
                elif frame["type"] == "chat.batch":
                    seen.extend(frame["messages"])
            if len(seen) >= count:
                return seen[:count]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"expected {count} chat messages, got {seen}")
            await self.next(timeout=remaining)

    async def drain(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """Receive until nothing arrives for ``timeout``; returns every frame received so far."""
        while not await self.comm.receive_nothing(timeout=timeout):
            await self.next()
        return self.frames

    async def chat_count(self, timeout: float = 0.5) -> int:
        """Chat messages received in total (batches unpacked), after draining."""
        frames = await self.drain(timeout)
        return sum(
            1 if f["type"] == "chat.message" else len(f["messages"])
            for f in frames
            if f["type"] in {"chat.message", "chat.batch"}
        )

    async def close(self) -> None:
        if self.comm.future.done():  # the application already ended (closed, or crashed)
            return
        await self.comm.disconnect()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """``await connect(stream, headers=(), origin=True, path="chat", client=None)`` -> joined
    Socket (``ready`` frame received: the history, or ``owner.ready`` on the owner socket);
    every socket is disconnected at the end of the test."""
    opened: list[Socket] = []

    async def _connect(
        stream: Stream,
        *,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        origin: bool = True,
        join: bool = True,
        path: str = "chat",
        client: tuple[str, int] | None = None,
        ready: str = "chat.history",
    ) -> Socket:
        all_headers = [*headers, ORIGIN] if origin else list(headers)
        app: Any = application
        if client is not None:  # the TCP peer, as a real server puts it in the scope

            async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                await application({**scope, "client": client}, receive, send)

        comm = WebsocketCommunicator(app, f"/ws/streams/{stream.pk}/{path}/", headers=all_headers)
        connected, _ = await comm.connect(timeout=5)
        socket = Socket(comm)
        opened.append(socket)
        assert connected
        if join:
            await socket.wait_type(ready)
        return socket

    yield _connect
    for socket in opened:
        await socket.close()


@database_sync_to_async
def token_for(user: User) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


@database_sync_to_async
def new_user(**kwargs: Any) -> User:
    return UserFactory.create(**kwargs)


@database_sync_to_async
def new_stream(owner: User | None = None) -> Stream:
    return make_stream(owner)[0]


async def token_headers(user: User) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"authorization", f"Token {await token_for(user)}".encode()),)

"""What the chat hub needs from a socket's server connection, beyond the ASGI ``send``.

The hub (chat/fanout.py) must never wait for one socket: it writes a frame at once when the
connection can take it without waiting, and otherwise queues it for that socket alone. ASGI
gives no way to ask "would this send wait?", to measure what a connection still holds, or to
drop a connection whose peer stopped reading (a close frame sent through ``send`` waits behind
the data the peer never reads). ``wire_for(send)`` answers those questions:

- ``UvicornWire``: uvicorn's default WebSocket protocol (``websockets-sansio``, what the
  Procfile and the Dockerfile run). Its ``send`` waits only while the transport is paused
  (write buffer over the high-water mark), so ``ready()`` reads that flag; ``buffered()`` is
  the transport's write buffer; ``close_now()`` writes the close frame straight to the
  transport (the same steps as uvicorn's own ``websocket.close``, minus the wait) and drops
  the connection after ``grace`` seconds unless the peer completed the closing handshake;
  ``limit_kernel_buffer()`` caps the kernel send buffer (SO_SNDBUF) of the socket.
- ``Wire`` (anything else: Channels' test communicator, Daphne, uvicorn's other protocols):
  nothing is known, so every frame goes through the socket's own writer task (it may wait
  there without holding anyone else up) and a slow socket is closed with an ordinary
  ``websocket.close`` bounded by ``grace``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

_SANSIO: type | None
try:  # uvicorn is how the web process runs; tests and other servers may not have it
    from uvicorn.protocols.websockets import websockets_sansio_impl

    _SANSIO = websockets_sansio_impl.WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover
    _SANSIO = None


class Wire:
    """A connection the hub knows nothing about."""

    kind = "asgi"

    def __init__(self, send: Send) -> None:
        self.send = send

    def ready(self) -> bool:
        """True when ``send`` would complete without waiting. Unknown here: never assume it."""
        return False

    async def wait_ready(self) -> None:
        return None

    def buffered(self) -> int:
        """Bytes the server holds for this connection beyond the kernel (0: unknown)."""
        return 0

    def limit_kernel_buffer(self, size: int) -> None:
        return None

    def close_now(self, code: int, reason: str, grace: float) -> bool:
        """Close without waiting for the peer to read what it was sent. False: not possible
        on this server (the caller falls back to ``send`` with a timeout)."""
        return False


class UvicornWire(Wire):
    """uvicorn's ``websockets-sansio`` protocol (uvicorn >= 0.35, the ``--ws auto`` default)."""

    kind = "uvicorn"

    def __init__(self, send: Send, protocol: Any) -> None:
        super().__init__(send)
        self.protocol = protocol

    def ready(self) -> bool:
        return bool(self.protocol.writable.is_set())

    async def wait_ready(self) -> None:
        await self.protocol.writable.wait()

    def buffered(self) -> int:
        transport = self.protocol.transport
        return int(transport.get_write_buffer_size()) if transport is not None else 0

    def limit_kernel_buffer(self, size: int) -> None:
        if size <= 0:
            return
        sock = self.protocol.transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError:  # not a TCP socket (unix socket, ...): keep the kernel's default
            logger.debug("could not set SO_SNDBUF on a chat socket")

    def close_now(self, code: int, reason: str, grace: float) -> bool:
        p = self.protocol
        transport = p.transport
        if p.disconnected:
            return True
        if not p.close_sent:
            # uvicorn's own "websocket.close" branch of send(), without awaiting writability:
            # the close frame goes behind whatever the peer has not read yet.
            with contextlib.suppress(Exception):
                p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
                p.conn.send_close(code, reason)
                transport.write(b"".join(p.conn.data_to_send()))
            p.close_sent = True
            if p.read_paused:
                p.read_paused = False
                transport.resume_reading()  # so the peer's closing reply is read
        else:
            # Already closing (e.g. uvicorn's keepalive gave up): make sure the consumer ends.
            with contextlib.suppress(Exception):
                p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if p.close_timer is not None:
            p.close_timer.cancel()
        # A peer that reads within ``grace`` gets the close frame and answers; uvicorn then
        # closes normally (and cancels this timer). One that does not is dropped: close()
        # would wait for buffered bytes the peer never reads.
        p.close_timer = p.loop.call_later(grace, transport.abort)
        return True


def wire_for(send: Send) -> Wire:
    owner = getattr(send, "__self__", None)
    if _SANSIO is not None and isinstance(owner, _SANSIO):
        return UvicornWire(send, owner)
    return Wire(send)


async def send_or_give_up(send: Send, message: dict[str, Any], within_s: float) -> None:
    """``send`` bounded by ``within_s``; errors of a closed connection are ignored."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(send(message), within_s)

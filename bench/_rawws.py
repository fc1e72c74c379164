"""A bare WebSocket client on a plain socket, for the chat benchmark's slow readers and the
hostile-client tests (tests/chat/test_hostile.py).

No library read loop: nothing is read unless the caller asks, so a client that never calls
``read_*`` really leaves its bytes in the kernel (with a small ``rcvbuf``, the server's buffers
fill as they would for a stalled phone). It also sends what libraries refuse to send
(oversized frames, arbitrary text).
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import struct
import time
from urllib.parse import urlsplit

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeRefusedError(Exception):
    def __init__(self, status_line: str) -> None:
        super().__init__(status_line)
        self.status_line = status_line


class RawWebSocket:
    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.buffer = leftover
        self.closed_with: tuple[int, str] | None = None

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
    ) -> RawWebSocket:
        """Open ``ws://host:port/path``. ``rcvbuf`` shrinks SO_RCVBUF before connecting (the
        TCP window is negotiated then)."""
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {parts.path or '/'} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(1)  # byte by byte: leave every frame in the kernel
            if not chunk:
                raise HandshakeRefusedError("connection closed during the handshake")
            response += chunk
        status_line = response.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " not in status_line + " ":
            sock.close()
            raise HandshakeRefusedError(status_line)
        return cls(sock, b"")

    # --- sending ------------------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        self.sock.close()

    # --- receiving ----------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], remaining)
        if not ready:
            return False
        try:
            chunk = self.sock.recv(1 << 16)
        except (ConnectionResetError, OSError):
            raise EOFError("connection reset") from None
        if not chunk:
            raise EOFError("connection closed")
        self.buffer += chunk
        return True

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        opcode = buf[0] & 0x0F
        length = buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack("!H", buf[2:4])
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack("!Q", buf[2:10])
            offset = 10
        if len(buf) < offset + length:
            return None
        payload = buf[offset : offset + length]
        self.buffer = buf[offset + length :]
        return opcode, payload

    def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame (opcode, payload); answers pings. EOFError when the connection ends,
        TimeoutError when nothing complete arrives in time."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is not None:
                opcode, payload = frame
                if opcode == OP_PING:
                    self.send_frame(OP_PONG, payload)
                    continue
                if opcode == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self.closed_with = (code, payload[2:].decode("utf-8", "replace"))
                return frame
            if not self._fill(deadline):
                raise TimeoutError("no complete frame in time")

    def read_until_close(self, timeout: float = 10.0) -> tuple[tuple[int, str] | None, int]:
        """Read everything up to the close frame: (close code and reason or None if the
        connection ended without one, number of data frames read before it)."""
        deadline = time.monotonic() + timeout
        frames = 0
        while True:
            try:
                opcode, _ = self.read_frame(max(0.01, deadline - time.monotonic()))
            except EOFError:
                return None, frames
            if opcode == OP_CLOSE:
                return self.closed_with, frames
            frames += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"no close frame after {frames} frames")

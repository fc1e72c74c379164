"""The one module that talks to libsrt (Secure Reliable Transport), through ctypes.

Debian ships libsrt as a dependency of ffmpeg (``libsrt1.5-gnutls``); there is no maintained
Python binding, and the few calls a listener needs are a stable C ABI. What is bound:

- a listening socket (``Listener``) with the options an ingest sets (latency, passphrase), a
  listen callback that accepts or rejects each caller by its stream id DURING the handshake
  (``srt_listen_callback`` + ``srt_setrejectreason``: a refused caller never gets a
  connection, its ``srt_connect`` fails with "connection rejected"), and ``accept`` with a
  timeout (``srt_epoll_uwait``) so the caller can stop between waits;
- an accepted connection (``Connection``): ``recv`` of one live-mode message (at most one
  MPEG-TS payload of 1316 bytes) with a timeout, ``close``.

Constants are those of ``srt.h`` (1.4/1.5); libsrt's own log is limited to errors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

# --- srt.h ------------------------------------------------------------------------------
SRTO_RCVSYN = 2
SRTO_RCVTIMEO = 14
SRTO_TSBPDMODE = 22
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_STREAMID = 46
SRT_EPOLL_IN = 0x1
SRT_EPOLL_ERR = 0x8
SRT_ERROR = -1
SRT_INVALID_SOCK = -1
# Errors of the MJ_AGAIN family (no data within the timeout): 6000-6999.
SRT_EAGAIN_MAJOR = 6
LOG_ERR = 3
# Reject reasons a listener callback may give (SRT access control, "SRT_REJX_*").
REJECT_BAD_REQUEST = 1400
REJECT_UNAUTHORIZED = 1401
REJECT_OVERLOAD = 1402
REJECT_FORBIDDEN = 1403
REJECT_BAD_MODE = 1405
REJECT_INTERNAL = 1500
# Largest live-mode payload (MTU 1500 - UDP 28 - SRT 16).
MAX_PAYLOAD = 1456
LIBRARY_NAMES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5", "libsrt.so.1")


class SrtError(RuntimeError):
    """A libsrt call failed; the message is libsrt's own."""


class ConnectionClosedError(SrtError):
    """The peer left or the connection broke."""


class _EpollEvent(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_int)]


# int (*)(void* opaque, SRTSOCKET ns, int hsversion, const struct sockaddr* peer, const char* streamid)
LISTEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)


@functools.cache
def library() -> ctypes.CDLL:
    """libsrt, started once (``srt_startup``); OSError when it is not installed."""
    names = [*LIBRARY_NAMES]
    found = ctypes.util.find_library("srt-gnutls") or ctypes.util.find_library("srt")
    if found:
        names.append(found)
    last: OSError | None = None
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            last = exc
            continue
        _declare(lib)
        if lib.srt_startup() < 0:
            raise SrtError("srt_startup failed")
        lib.srt_setloglevel(LOG_ERR)
        return lib
    raise OSError(f"libsrt not found (apt install libsrt1.5-gnutls): {last}")


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "srt_startup": (c_int, []),
        "srt_create_socket": (c_int, []),
        "srt_bind": (c_int, [c_int, c_void_p, c_int]),
        "srt_listen": (c_int, [c_int, c_int]),
        "srt_accept": (c_int, [c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_listen_callback": (c_int, [c_int, LISTEN_CALLBACK, c_void_p]),
        "srt_setrejectreason": (c_int, [c_int, c_int]),
        "srt_close": (c_int, [c_int]),
        "srt_setsockflag": (c_int, [c_int, c_int, c_void_p, c_int]),
        "srt_getsockflag": (c_int, [c_int, c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_recvmsg": (c_int, [c_int, c_char_p, c_int]),
        "srt_getlasterror": (c_int, [ctypes.POINTER(c_int)]),
        "srt_getlasterror_str": (c_char_p, []),
        "srt_epoll_create": (c_int, []),
        "srt_epoll_add_usock": (c_int, [c_int, c_int, ctypes.POINTER(c_int)]),
        "srt_epoll_uwait": (c_int, [c_int, ctypes.POINTER(_EpollEvent), c_int, ctypes.c_int64]),
        "srt_epoll_release": (c_int, [c_int]),
        "srt_setloglevel": (None, [c_int]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def _last_error() -> tuple[int, str]:
    lib = library()
    code = lib.srt_getlasterror(None)
    text = lib.srt_getlasterror_str() or b""
    return int(code), text.decode("utf-8", "replace")


def _check(result: int, what: str) -> int:
    if result == SRT_ERROR:
        code, text = _last_error()
        raise SrtError(f"{what}: {text} ({code})")
    return result


def _set_int(sock: int, option: int, value: int) -> None:
    number = ctypes.c_int(value)
    _check(library().srt_setsockflag(sock, option, ctypes.byref(number), ctypes.sizeof(number)), f"option {option}")


def _set_bytes(sock: int, option: int, value: bytes) -> None:
    buffer = ctypes.create_string_buffer(value, len(value))
    _check(library().srt_setsockflag(sock, option, buffer, len(value)), f"option {option}")


def sockaddr(host: str, port: int) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` of a numeric address (Linux layout)."""
    address = ipaddress.ip_address(host)
    if address.version == 4:
        return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), address.packed)
    return struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0, address.packed, 0)


def peer_address(pointer: int | None) -> str:
    """``host:port`` of a ``struct sockaddr*`` from libsrt ("?" when unknown)."""
    if not pointer:
        return "?"
    family = ctypes.c_uint16.from_address(pointer).value
    if family == socket.AF_INET:
        raw = ctypes.string_at(pointer, 8)
        port = struct.unpack("!H", raw[2:4])[0]
        return f"{ipaddress.IPv4Address(raw[4:8])}:{port}"
    if family == socket.AF_INET6:
        raw = ctypes.string_at(pointer, 24)
        port = struct.unpack("!H", raw[2:4])[0]
        return f"[{ipaddress.IPv6Address(raw[8:24])}]:{port}"
    return "?"


@dataclass(frozen=True)
class Caller:
    """A caller in the handshake: its address and the stream id it sent."""

    address: str
    stream_id: str


# Decides a caller: None accepts, an int (REJECT_*) refuses with that reason.
Decide = Callable[[Caller], int | None]


class Connection:
    """An accepted SRT connection (blocking receive with a timeout)."""

    def __init__(self, sock: int, stream_id: str, address: str) -> None:
        self.sock = sock
        self.stream_id = stream_id
        self.address = address
        self._buffer = ctypes.create_string_buffer(MAX_PAYLOAD + 44)
        self._closed = False

    def recv(self, timeout_ms: int = 1000) -> bytes:
        """One message (b"" when nothing came within ``timeout_ms``); ConnectionClosedError when
        the peer left or the connection broke."""
        if self._closed:
            raise ConnectionClosedError("closed")
        lib = library()
        _set_int(self.sock, SRTO_RCVTIMEO, timeout_ms)
        size = lib.srt_recvmsg(self.sock, self._buffer, len(self._buffer))
        if size == SRT_ERROR:
            code, text = _last_error()
            if code // 1000 == SRT_EAGAIN_MAJOR:
                return b""
            raise ConnectionClosedError(f"{text} ({code})")
        return self._buffer.raw[:size]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            library().srt_close(self.sock)


class Listener:
    """A listening SRT socket on ``host:port`` (UDP) that asks ``decide`` about every caller
    during the handshake (libsrt's thread runs it: keep it short and never raise)."""

    def __init__(
        self, host: str, port: int, decide: Decide, *, latency_ms: int, passphrase: str = "", backlog: int = 16
    ) -> None:
        lib = library()
        self._decide = decide
        self._callback = LISTEN_CALLBACK(self._on_caller)  # referenced: libsrt keeps the pointer
        self.sock = _check(lib.srt_create_socket(), "srt_create_socket")
        self._epoll = -1
        try:
            _set_int(self.sock, SRTO_LATENCY, latency_ms)
            _set_int(self.sock, SRTO_TSBPDMODE, 0)
            if passphrase:
                _set_bytes(self.sock, SRTO_PASSPHRASE, passphrase.encode())
            address = sockaddr(host, port)
            _check(lib.srt_bind(self.sock, address, len(address)), f"bind {host}:{port}")
            _check(lib.srt_listen_callback(self.sock, self._callback, None), "srt_listen_callback")
            _check(lib.srt_listen(self.sock, backlog), "srt_listen")
            self._epoll = _check(lib.srt_epoll_create(), "srt_epoll_create")
            events = ctypes.c_int(SRT_EPOLL_IN | SRT_EPOLL_ERR)
            _check(lib.srt_epoll_add_usock(self._epoll, self.sock, ctypes.byref(events)), "srt_epoll_add_usock")
        except BaseException:
            self.close()
            raise

    def _on_caller(
        self, opaque: int | None, sock: int, hs_version: int, peer: int | None, stream_id: bytes | None
    ) -> int:
        try:
            caller = Caller(peer_address(peer), (stream_id or b"").decode("utf-8", "replace"))
            reason = self._decide(caller)
        except Exception:  # never let an exception cross into libsrt's thread
            reason = REJECT_INTERNAL
        if reason is None:
            return 0
        library().srt_setrejectreason(sock, reason)
        return -1

    def accept(self, timeout_ms: int = 500) -> Connection | None:
        """The next accepted caller, or None when none came within ``timeout_ms``."""
        lib = library()
        events = (_EpollEvent * 1)()
        ready = lib.srt_epoll_uwait(self._epoll, events, 1, timeout_ms)
        if ready <= 0:
            return None
        address = ctypes.create_string_buffer(128)
        length = ctypes.c_int(len(address))
        sock = lib.srt_accept(self.sock, address, ctypes.byref(length))
        if sock == SRT_INVALID_SOCK:
            code, text = _last_error()
            if code // 1000 == SRT_EAGAIN_MAJOR:
                return None
            raise SrtError(f"srt_accept: {text} ({code})")
        buffer = ctypes.create_string_buffer(600)
        size = ctypes.c_int(len(buffer))
        lib.srt_getsockflag(sock, SRTO_STREAMID, buffer, ctypes.byref(size))
        stream_id = buffer.raw[: max(0, size.value)].split(b"\0", 1)[0].decode("utf-8", "replace")
        _set_int(sock, SRTO_RCVSYN, 1)
        return Connection(sock, stream_id, peer_address(ctypes.addressof(address)))

    def close(self) -> None:
        lib = library()
        if self._epoll >= 0:
            lib.srt_epoll_release(self._epoll)
            self._epoll = -1
        if self.sock != SRT_INVALID_SOCK:
            lib.srt_close(self.sock)
            self.sock = SRT_INVALID_SOCK

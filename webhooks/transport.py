"""One webhook POST: to the address that was checked, within one bound on its total time.

``post`` resolves the URL's host once and checks every address (``addresses.resolve_target``),
then connects to one of those addresses itself (``http.client`` with a pinned socket): no
library resolves the name again, so the request cannot land anywhere the check did not allow.
The ``Host`` header is the URL's host; for https the TLS server name (SNI) is the host name and
the certificate is verified against it (system-independent CA bundle from ``certifi``). Redirects
are never followed (``http.client`` does not), and at most ``max_body`` bytes of the answer are
read.

Time: ``total_timeout`` bounds the whole try, DNS included. Each socket operation also has
``idle_timeout`` (a receiver that accepts and then says nothing), but a receiver that trickles
one byte at a time would reset that forever; a watchdog thread shuts the socket down when the
total bound passes, which wakes the blocked read, and the try ends as a timeout.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import certifi

from webhooks.addresses import IPAddress, ResolutionTimeoutError, Target, resolve_target


class DeliveryTimeoutError(Exception):
    """The try ran out of time; the message says which bound."""


class ConnectionFailedError(Exception):
    """No usable HTTP answer (refused, reset, TLS failure, malformed response)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most ``max_body`` bytes of the response body


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """Certificate and host name verification on (tests swap in a context with their own CA)."""
    return ssl.create_default_context(cafile=certifi.where())


class _Watchdog:
    """Shuts the watched socket down once ``seconds`` have passed (``fired`` then says so).

    The socket is named by its file descriptor, which stays the same when TLS wraps it; the
    lock keeps ``release`` (called before every close) and the timer from racing, so a closed
    descriptor reused elsewhere is never touched.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._fd = -1
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, fd: int) -> bool:
        """Watch ``fd`` from now on; False (nothing watched) when the time is already up."""
        with self._lock:
            if self.fired:
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._lock:
            self._fd = -1

    def cancel(self) -> None:
        self._timer.cancel()
        self.release()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._fd < 0:
                return
            sock = socket.socket(fileno=self._fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.detach()


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to ``target.host`` that connects to ``address`` and nowhere else."""

    def __init__(self, target: Target, address: IPAddress, *, timeout: float, watchdog: _Watchdog) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._tls = target.scheme == "https"
        self._address = address
        self._watchdog = watchdog

    def connect(self) -> None:
        family = socket.AF_INET6 if self._address.version == 6 else socket.AF_INET
        sock: socket.socket = socket.socket(family, socket.SOCK_STREAM)
        if not self._watchdog.watch(sock.fileno()):
            sock.close()
            raise TimeoutError("the try's time is up")
        try:
            sock.settimeout(self.timeout)
            sock.connect((str(self._address), self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                sock = tls_context().wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
                sock.do_handshake()
        except BaseException:
            self._watchdog.release()
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        self._watchdog.release()
        super().close()


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    total_timeout: float,
    idle_timeout: float,
    max_body: int,
) -> Answer:
    """POST ``body`` to ``url`` and return the status and the first ``max_body`` bytes.

    Raises ``addresses.UnsafeURLError`` (refused; ``UnresolvableHostError`` when the name has no
    address), ``DeliveryTimeoutError`` and ``ConnectionFailedError``. Addresses are tried in
    the resolver's order until one accepts the connection.
    """
    deadline = time.monotonic() + total_timeout
    watchdog = _Watchdog(total_timeout)
    try:
        try:
            target = resolve_target(url, timeout=deadline - time.monotonic())
        except ResolutionTimeoutError:
            raise DeliveryTimeoutError(f"timeout after {total_timeout:g} s (resolving the host)") from None
        return _exchange(
            target,
            body=body,
            headers=headers,
            deadline=deadline,
            total_timeout=total_timeout,
            idle_timeout=idle_timeout,
            max_body=max_body,
            watchdog=watchdog,
        )
    finally:
        watchdog.cancel()


def _exchange(
    target: Target,
    *,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    total_timeout: float,
    idle_timeout: float,
    max_body: int,
    watchdog: _Watchdog,
) -> Answer:
    total_error = f"timeout after {total_timeout:g} s (whole try)"
    last_error: OSError | None = None
    for address in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or watchdog.fired:
            raise DeliveryTimeoutError(total_error)
        conn = _PinnedConnection(target, address, timeout=min(idle_timeout, remaining), watchdog=watchdog)
        try:
            conn.connect()
        except OSError as exc:  # refused, unreachable, connect timeout: next address
            conn.close()
            last_error = exc
            continue
        try:
            return _request(conn, target, body=body, headers=headers, max_body=max_body, watchdog=watchdog)
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired:
                raise DeliveryTimeoutError(total_error) from None
            if isinstance(exc, TimeoutError):
                raise DeliveryTimeoutError(f"timeout after {idle_timeout:g} s without an answer") from None
            raise ConnectionFailedError(type(exc).__name__) from exc
        finally:
            conn.close()
    if watchdog.fired:
        raise DeliveryTimeoutError(total_error)
    if isinstance(last_error, TimeoutError):
        raise DeliveryTimeoutError(f"timeout after {idle_timeout:g} s connecting")
    raise ConnectionFailedError(type(last_error).__name__) from last_error


def _request(
    conn: _PinnedConnection,
    target: Target,
    *,
    body: bytes,
    headers: dict[str, Any],
    max_body: int,
    watchdog: _Watchdog,
) -> Answer:
    conn.request("POST", target.path, body=body, headers={**headers, "Connection": "close"})
    response = conn.getresponse()
    if watchdog.fired:  # the shutdown's end of stream can pass for the end of the headers
        raise TimeoutError("the answer's headers did not arrive in time")
    status = response.status
    # The status decides the outcome; the body is a courtesy for the delivery log, so a
    # receiver that stalls or breaks off after its headers still answered.
    try:
        excerpt = response.read(max_body)
    except http.client.IncompleteRead as exc:
        excerpt = exc.partial[:max_body]
    except (OSError, http.client.HTTPException):
        excerpt = b""
    return Answer(status, excerpt)

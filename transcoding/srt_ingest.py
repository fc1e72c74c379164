"""SRT ingest: a listener that maps the SRT stream id to a stream key and relays each accepted
publish into this node's nginx-rtmp, so it takes the same path as an RTMP publish (on_publish
checks the key and opens the session; recording, segmenting, transcoding, readiness, DVR,
webhooks are unchanged). ``manage.py run_srt`` runs it (a Procfile line, docs/adr/0032).

- The stream id carries the key: the key itself (``live_…``), the SRT access-control syntax
  ``#!::r=<key>,m=publish`` (``r=live/<key>`` too), or ``publish:<key>`` (MediaMTX style);
  ``parse_stream_id``.
- A caller is judged DURING the SRT handshake (``transcoding.srt.Listener``): a malformed id,
  a playing mode, an unknown key or a full listener is rejected with an SRT reject reason and
  never gets a connection. The session itself is opened by on_publish when the relay reaches
  nginx-rtmp (quotas, "already live", takeover: ``services.accept_publish``).
- Each accepted caller gets a relay thread: an ffmpeg stream copy (MPEG-TS on its stdin ->
  FLV to ``rtmp://<nginx-rtmp>/live/<key>``, ``ffmpeg.srt_relay_args``) fed with every SRT
  message. The publisher leaving closes ffmpeg's stdin, ffmpeg ends the RTMP publish and
  nginx-rtmp's on_publish_done follows; nginx-rtmp refusing or dropping the publish ends
  ffmpeg, and the SRT connection is closed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import unquote

import django.db
from django.conf import settings

from streams import keys
from transcoding import ffmpeg, services, srt
from transcoding.segmenter import rtmp_play_base

logger = logging.getLogger(__name__)

# What a stream key may look like (``keys.generate_key``: live_ + URL-safe base64).
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
ACCESS_CONTROL_PREFIX = "#!::"
# The SRT stream id is at most 512 bytes (SRTO_STREAMID).
MAX_STREAM_ID = 512
APPLICATION = "live"


class StreamIdError(ValueError):
    """The stream id names no stream key; ``reject`` is the SRT reject reason to give."""

    def __init__(self, message: str, reject: int = srt.REJECT_BAD_REQUEST) -> None:
        super().__init__(message)
        self.reject = reject


def _resource_key(resource: str) -> str:
    """The key of a resource name: ``<key>`` or ``live/<key>``."""
    resource = resource.strip()
    if resource.startswith(f"{APPLICATION}/"):
        resource = resource[len(APPLICATION) + 1 :]
    if not resource:
        raise StreamIdError("the stream id names no stream key")
    if not KEY_RE.fullmatch(resource):
        raise StreamIdError("malformed stream key in the stream id")
    return resource


def parse_stream_id(stream_id: str) -> str:
    """The stream key an SRT stream id carries; ``StreamIdError`` saying what is wrong.

    Accepted forms: ``<key>``; ``#!::r=<key>,m=publish`` (SRT access control: ``r`` the
    resource, ``m`` the mode, absent or ``publish``; other keys such as ``u``/``s``/``t=stream``
    are allowed and ignored); ``publish:<key>``. ``<key>`` may be written ``live/<key>``.
    A percent-encoded id (``%23!::r=...``: how ``#`` survives in a URL; ffmpeg 5 passes it on
    undecoded) is decoded first."""
    if len(stream_id.encode("utf-8")) > MAX_STREAM_ID:
        raise StreamIdError("the stream id is too long")
    text = stream_id.strip()
    if "%" in text:  # percent-encoded by the publisher ("%23!::r=..."): a key has no "%"
        text = unquote(text).strip()
    if not text:
        raise StreamIdError("no stream id: put the stream key in it (streamid=<key>)")
    if text.startswith(ACCESS_CONTROL_PREFIX):
        fields: dict[str, str] = {}
        for item in text[len(ACCESS_CONTROL_PREFIX) :].split(","):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise StreamIdError(f"malformed stream id item {item.strip()[:20]!r} (expected key=value)")
            if name in fields:
                raise StreamIdError(f"stream id item {name!r} given twice")
            fields[name] = value.strip()
        mode = fields.get("m", "publish")
        if mode != "publish":
            raise StreamIdError(
                f"this listener takes publishers only (m=publish, not m={mode[:20]})", srt.REJECT_BAD_MODE
            )
        if fields.get("t", "stream") != "stream":
            raise StreamIdError("only t=stream is served", srt.REJECT_BAD_MODE)
        if "r" not in fields:
            raise StreamIdError("the stream id has no r=<stream key>")
        return _resource_key(fields["r"])
    if text.startswith("publish:"):
        return _resource_key(text[len("publish:") :])
    if text.startswith(("read:", "play:")):
        raise StreamIdError("this listener takes publishers only", srt.REJECT_BAD_MODE)
    return _resource_key(text)


def relay_base() -> str:
    """Where publishes are relayed (``SRT_RELAY_RTMP_URL``, else this node's nginx-rtmp)."""
    if settings.SRT_RELAY_RTMP_URL:
        return str(settings.SRT_RELAY_RTMP_URL)
    return rtmp_play_base()


@dataclass
class Relay:
    """One accepted SRT publisher and its ffmpeg relay."""

    connection: srt.Connection
    key: str
    thread: threading.Thread | None = None
    received: int = 0
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class SrtIngest:
    """The listener and its relays (``serve`` until ``stop`` is set)."""

    def __init__(
        self,
        stop: threading.Event,
        *,
        host: str | None = None,
        port: int | None = None,
        latency_ms: int | None = None,
        passphrase: str | None = None,
        max_publishers: int | None = None,
        relay_url: str | None = None,
    ) -> None:
        self.stop = stop
        self.host = host or settings.SRT_BIND
        self.port = port if port is not None else settings.SRT_PORT
        self.latency_ms = latency_ms or settings.SRT_LATENCY_MS
        self.passphrase = settings.SRT_PASSPHRASE if passphrase is None else passphrase
        self.max_publishers = settings.SRT_MAX_PUBLISHERS if max_publishers is None else max_publishers
        self.relay_url = relay_url or relay_base()
        self.relays: dict[int, Relay] = {}
        self._lock = threading.Lock()

    # --- the handshake (libsrt's thread) -----------------------------------------------
    def decide(self, caller: srt.Caller) -> int | None:
        """None accepts the caller; an SRT reject reason refuses it. Never raises."""
        try:
            key = parse_stream_id(caller.stream_id)
        except StreamIdError as exc:
            logger.warning("SRT caller refused: %s", exc, extra={"addr": caller.address})
            return exc.reject
        with self._lock:
            busy = len(self.relays)
        if self.max_publishers and busy >= self.max_publishers:
            logger.warning("SRT caller refused: %s publishers already", busy, extra={"addr": caller.address})
            return srt.REJECT_OVERLOAD
        try:
            django.db.close_old_connections()
            known = services.known_stream_key(key)
        except django.db.Error as exc:
            logger.error("SRT caller refused: database unavailable (%s)", exc.__class__.__name__)
            django.db.close_old_connections()
            return srt.REJECT_INTERNAL
        if not known:
            logger.warning("SRT caller refused: unknown stream key", extra={"addr": caller.address})
            return srt.REJECT_FORBIDDEN
        return None

    # --- the accept loop ---------------------------------------------------------------
    def serve(self, ready: threading.Event | None = None) -> None:
        listener = srt.Listener(
            self.host, self.port, self.decide, latency_ms=self.latency_ms, passphrase=self.passphrase
        )
        logger.info(
            "SRT listener ready on %s:%s (latency %s ms, %s), relaying to %s",
            self.host, self.port, self.latency_ms,
            "encrypted" if self.passphrase else "no passphrase", self.relay_url,
        )  # fmt: skip
        if ready is not None:
            ready.set()
        try:
            while not self.stop.is_set():
                connection = listener.accept(500)
                if connection is not None:
                    self._start(connection)
                self._reap()
        finally:
            listener.close()
            with self._lock:
                relays = list(self.relays.values())
            for relay in relays:
                relay.connection.close()
            for relay in relays:
                if relay.thread is not None:
                    relay.thread.join(timeout=15)

    def _start(self, connection: srt.Connection) -> None:
        try:
            key = parse_stream_id(connection.stream_id)
        except StreamIdError:  # the handshake refused it already; never expected here
            connection.close()
            return
        relay = Relay(connection, key)
        relay.thread = threading.Thread(target=self._relay, args=(relay,), name=f"srt-{connection.sock}", daemon=True)
        with self._lock:
            self.relays[connection.sock] = relay
        relay.thread.start()

    def _reap(self) -> None:
        with self._lock:
            for sock, relay in list(self.relays.items()):
                if relay.thread is not None and not relay.thread.is_alive():
                    del self.relays[sock]

    # --- one publisher -----------------------------------------------------------------
    def _relay(self, relay: Relay) -> None:
        connection = relay.connection
        ctx = {"key": keys.key_hint(relay.key)}
        extra: dict[str, object] = {"addr": connection.address, "ctx": ctx}
        logger.info("SRT publisher connected; relaying to nginx-rtmp", extra=extra)
        proc = ffmpeg.spawn(ffmpeg.srt_relay_args(f"{self.relay_url}/{relay.key}"))
        reader = threading.Thread(target=_drain, args=(proc, relay.stderr), daemon=True)
        reader.start()
        why = "listener stopping"
        stdin = proc.stdin
        try:
            if stdin is None:  # never: spawn gives a pipe
                raise BrokenPipeError
            while not self.stop.is_set():
                if proc.poll() is not None:
                    why = "nginx-rtmp refused or ended the publish"
                    break
                data = connection.recv(500)
                if data:
                    stdin.write(data)
                    relay.received += len(data)
        except srt.ConnectionClosedError as exc:
            why = f"publisher left ({exc})"
        except OSError:  # BrokenPipeError: the relay ffmpeg is gone
            why = "nginx-rtmp refused or ended the publish"
        finally:
            connection.close()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()  # ffmpeg ends the RTMP publish: on_publish_done follows
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                ffmpeg.stop(proc)
            reader.join(timeout=5)
        level = logging.INFO if why.startswith(("publisher left", "listener")) else logging.WARNING
        logger.log(
            level,
            "SRT publish ended: %s (%s bytes relayed, ffmpeg exit %s)",
            why, relay.received, proc.returncode,
            extra={**extra, "ctx": {**ctx, "ffmpeg": " | ".join(relay.stderr)[-500:]}},
        )  # fmt: skip


def _drain(proc: subprocess.Popen[bytes], tail: deque[str]) -> None:
    """Read the relay ffmpeg's stderr (so it never blocks on a full pipe), keeping the tail;
    the key in the RTMP URL it may print is cut out."""
    if proc.stderr is None:
        return
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace").strip()
        if line:
            tail.append(re.sub(r"rtmp://\S+", "rtmp://…", line))


def serve(stop: threading.Event, ready: threading.Event | None = None) -> None:
    """Run the SRT listener until ``stop`` is set (``manage.py run_srt``, the test fixtures)."""
    SrtIngest(stop).serve(ready)

"""Restream relays, run by the ingest supervisor of the node that holds the publish (ADR 0033).

For each broadcast the supervisor segments and each enabled target of its stream, one
``Relay`` thread runs an ffmpeg that plays the live stream from this node's nginx-rtmp and
pushes it, stream copied, to the target (``transcoding.ffmpeg.relay_args``). Relays are
separate processes that read the stream nginx-rtmp already serves: the segmenter never waits
for them, and a relay failing, hanging or being killed changes nothing for the main stream.

- **Status**: ``connecting`` when ffmpeg starts, ``live`` once the target has taken two
  progress ticks of data without an error, ``failed`` with a plain reason parsed from
  ffmpeg's stderr (``failure_reason``), ``stopped`` when the broadcast ends or the target is
  disabled, removed or changed.
- **Retries**: a failed relay is started again after ``SIMULCAST_RETRY_MIN_S`` doubling up to
  ``SIMULCAST_RETRY_MAX_S``; a relay that went live starts over from the minimum. When the
  local stream itself ends (the publisher left) the relay waits for the supervisor's decision
  and reports nothing.
- **Events**: one ``simulcast.status`` per change (``services.report_status``): the first
  ``connecting``, ``live``, ``failed`` (again only when the reason changes or the relay was live
  in between), ``stopped``. Retries update the Redis record (attempt, next retry) quietly.
- **Targets change while live**: ``RelayManager.sync`` (the supervisor's loop) re-reads the
  targets every ``SIMULCAST_REFRESH_S`` and starts, stops or restarts relays to match.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import subprocess
import threading
import time
from urllib.parse import urlsplit

import django.db
from django.conf import settings

from livestream import metrics
from simulcast import services
from simulcast.models import RelayStatus
from transcoding import ffmpeg

logger = logging.getLogger(__name__)

LIVE_AFTER_TICKS = 2  # progress reports with growing output before a relay counts as live
INPUT_RETRY_S = 1.0  # the local stream ended or is not there yet: look again this soon
INPUT_FAILURES_REPORTED = 10  # ... but this many times in a row is reported (local play broken)
STDERR_LINES = 40
MASK = "••••"
# Output errors after which ffmpeg keeps running without delivering anything: end it.
FATAL_OUTPUT = re.compile(r"Broken pipe|Connection reset by peer|Error writing trailer|Error muxing", re.IGNORECASE)


def backoff_s(failures: int) -> float:
    """Wait before retry after ``failures`` failures in a row: min, 2 min, 4 min ... capped."""
    low, high = float(settings.SIMULCAST_RETRY_MIN_S), float(settings.SIMULCAST_RETRY_MAX_S)
    return float(min(high, low * 2 ** max(failures - 1, 0)))


def source_url(name: str) -> str:
    """Where a relay plays the publish ``name`` (``s<session>c<conn>``) on this node."""
    from transcoding.segmenter import rtmp_play_base

    return f"{rtmp_play_base()}/{name}"


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or services.SCHEMES.get(parts.scheme, 1935)
    return f"{parts.hostname}:{port}"


def failure_reason(  # noqa: PLR0911 - one answer per kind of failure
    lines: list[str], *, target_url: str, source: str, was_live: bool, code: int | None
) -> tuple[str, str]:
    """(side, reason) of a relay ffmpeg that ended: side ``input`` (the local stream is gone or
    not there yet) or ``output`` (the target); the reason in plain words, without the key.
    ``lines``: its stderr, key already masked."""
    where = _host_port(target_url)
    host = urlsplit(target_url).hostname or where
    text = "\n".join(lines)
    source_side = source.rsplit("/", 1)[0]
    last_url_line = next((line for line in reversed(lines) if re.match(r"^rtmps?://\S+: ", line)), "")
    if last_url_line.startswith(source_side) or "Error opening input" in text:
        return "input", "the live stream is not available on this node"
    checks: list[tuple[str, str]] = [
        (r"Failed to resolve hostname", f"the host name {host} does not resolve"),
        (r"Connection refused", f"connection refused by {where}"),
        (r"timed out|Operation timed out", f"no answer from {where} (timed out)"),
        (r"Network is unreachable|No route to host", f"{where} is unreachable"),
        (
            r"certificate failed verification|certificate verify failed|certificate is not trusted",
            f"the TLS certificate of {where} is not trusted (not for {host}, expired, or its authority is "
            "not in SIMULCAST_TLS_CA_FILE)",
        ),
        (r"certificate|TLS|SSL|handshake|GnuTLS", f"the TLS handshake with {where} failed"),
    ]
    for pattern, reason in checks:
        if re.search(pattern, text, re.IGNORECASE):
            return "output", reason
    server = re.search(r"Server error: (.+)", text)
    if server:
        said = server.group(1).strip()[:120]
        if re.search(r"auth|denied|forbidden|unauthori[sz]ed|badname|bad name|key", said, re.IGNORECASE):
            return "output", f"authentication rejected by {where}: {said}"
        return "output", f"{where} rejected the stream: {said}"
    if re.search(r"Broken pipe|Connection reset by peer|End of file", text, re.IGNORECASE):
        if was_live:
            return "output", f"{where} closed the connection"
        return "output", f"publish rejected by {where}: authentication rejected or unknown application (check the key)"
    if last_url_line:  # "rtmp://host/app/key: Input/output error": closed while opening (same as above)
        said = last_url_line.split(": ", 1)[1].strip()[:80]
        return "output", f"publish rejected by {where}: the server closed the connection ({said}; check the key)"
    if code == 0 or not text.strip():
        return "input", "the live stream ended"
    return "output", lines[-1][:200] if lines else f"the relay exited with code {code}"


class Relay(threading.Thread):
    """One target of one broadcast (see the module doc)."""

    def __init__(self, push: services.Push, *, session_id: int, publish_name: str) -> None:
        super().__init__(name=f"relay-{session_id}-{push.target_id}", daemon=True)
        self.push = push
        self.session_id = session_id
        self.source = source_url(publish_name)
        self.target_url = services.push_url(push.url, push.key)
        self._stop_event = threading.Event()
        self.stop_reason = "the broadcast ended"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.status: str = RelayStatus.IDLE
        self.attempt = 0
        self._announced: tuple[str, str] | None = None  # last (status, reason) sent as an event
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._fatal = threading.Event()

    @property
    def ctx(self) -> dict[str, object]:
        return {"session": self.session_id, "stream": self.push.stream_id, "ctx": {"target": self.push.target_id}}

    # --- control (supervisor thread) ------------------------------------------------------
    def stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop_event.set()
        self._kill()

    def _kill(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()

    # --- the relay thread -----------------------------------------------------------------
    def run(self) -> None:
        failures = input_failures = 0
        last_reason = ""
        try:
            while not self._stop_event.is_set():
                self.attempt += 1
                self._report(RelayStatus.CONNECTING, "", announce=self._announced is None)
                side, reason, went_live = self._run_once()
                if self._stop_event.is_set():
                    break
                if went_live:
                    failures = 0
                if side == "input":
                    # The local stream ended or is not ready: the supervisor stops this relay when
                    # the broadcast is over; otherwise try again soon, without a failure, unless
                    # it never becomes readable (this node's nginx-rtmp refuses the local play).
                    input_failures = 0 if went_live else input_failures + 1
                    if input_failures == INPUT_FAILURES_REPORTED:
                        last_reason = f"{reason} (the ingest node cannot play it locally)"
                        self._report(RelayStatus.FAILED, last_reason, announce=True)
                    self.attempt -= 1 if not went_live else 0
                    self._stop_event.wait(INPUT_RETRY_S)
                    continue
                failures, input_failures = failures + 1, 0
                last_reason = reason
                metrics.simulcast_relay_failed()
                delay = backoff_s(failures)
                logger.warning("restream relay failed: %s (retry in %.0f s)", reason, delay, extra=self.ctx)
                announce = self._announced != (RelayStatus.FAILED, reason)
                self._report(RelayStatus.FAILED, reason, announce=announce, next_retry_at=time.time() + delay)
                self._wait(delay)
        except Exception:
            logger.exception("restream relay crashed", extra=self.ctx)
        finally:
            self._kill()
            reason = self.stop_reason
            if last_reason and self.status == RelayStatus.FAILED:
                reason = f"{reason}; last failure: {last_reason}"
            self._report(RelayStatus.STOPPED, reason, announce=True)

    def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds (until stopped), renewing the Redis record meanwhile."""
        deadline = time.monotonic() + delay
        while not self._stop_event.wait(min(5.0, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            self._renew()

    def _renew(self) -> None:
        from simulcast import state

        with contextlib.suppress(Exception):
            state.renew_status(self.push.stream_id, self.push.target_id)

    def _run_once(self) -> tuple[str, str, bool]:
        """One ffmpeg, to its end: (side, reason, went live)."""
        try:
            services.check_public(urlsplit(self.push.url).hostname or "", 0)  # checked again: DNS may change
        except services.InvalidTargetError as exc:
            return "output", str(exc), False
        self._stderr.clear()
        self._fatal.clear()
        proc = ffmpeg.spawn_relay(
            ffmpeg.relay_args(self.source, self.target_url, ca_file=settings.SIMULCAST_TLS_CA_FILE)
        )
        with self._lock:
            self._proc = proc
        if self._stop_event.is_set():
            self._kill()
        reader = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True, name=f"{self.name}-err")
        reader.start()
        went_live = self._follow_progress(proc)
        code = proc.wait()
        reader.join(timeout=5)
        with self._lock:
            self._proc = None
        lines = list(self._stderr)
        side, reason = failure_reason(
            lines, target_url=self.target_url, source=self.source, was_live=went_live, code=code
        )
        if went_live and side == "output":
            logger.info("restream relay lost its target: %s", reason, extra=self.ctx)
        return side, reason, went_live

    def _follow_progress(self, proc: subprocess.Popen[bytes]) -> bool:
        """Read ffmpeg's progress until it exits; report live once the output grows for
        ``LIVE_AFTER_TICKS`` ticks without an output error. True if it went live."""
        if proc.stdout is None:  # pragma: no cover - spawn_relay always pipes it
            return False
        size, ticks, live = -1, 0, False
        next_renew = time.monotonic() + 5
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("total_size="):
                value = line.split("=", 1)[1]
                current = int(value) if value.isdigit() else 0
                if current > size > 0 and not self._fatal.is_set():
                    ticks += 1
                size = max(size, current)
                if not live and ticks >= LIVE_AFTER_TICKS and not self._stop_event.is_set():
                    live = True
                    self._report(RelayStatus.LIVE, "", announce=True)
            if time.monotonic() >= next_renew:
                next_renew = time.monotonic() + 5
                self._renew()
        return live

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stderr is None:  # pragma: no cover - spawn_relay always pipes it
            return
        key = self.push.key
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if key:
                line = line.replace(key, MASK)
            if not line.strip():
                continue
            self._stderr.append(line)
            if FATAL_OUTPUT.search(line) and not self._fatal.is_set():
                self._fatal.set()
                self._kill()  # ffmpeg would go on writing into a closed connection

    def _report(self, status: str, reason: str, *, announce: bool, next_retry_at: float | None = None) -> None:
        self.status = status
        report = services.StatusReport(
            stream_id=self.push.stream_id,
            session_id=self.session_id,
            target_id=self.push.target_id,
            target_name=self.push.name,
            status=status,
            reason=reason,
            attempt=self.attempt,
            next_retry_at=next_retry_at,
        )
        if announce:
            self._announced = (status, reason)
        try:
            services.report_status(report, changed=announce)
        except Exception:  # the database or Redis is down: the relay itself goes on
            logger.warning("restream status not stored", exc_info=True, extra=self.ctx)
        finally:
            # Back to the process's pool (DATABASE_POOL_MAX is small): relays write rarely.
            django.db.connection.close()


class RelayManager:
    """The relays of one ingest supervisor (its loop calls ``sync`` with what it segments)."""

    def __init__(self) -> None:
        self.relays: dict[tuple[int, int], Relay] = {}
        self.next_refresh = 0.0
        self.sessions: dict[int, tuple[int, str]] = {}

    def sync(self, publishing: dict[int, tuple[int, str]], *, force: bool = False) -> None:
        """``publishing``: session id -> (stream id, publish name) of the broadcasts this node
        segments now. Targets are read again every ``SIMULCAST_REFRESH_S`` (or when the set of
        broadcasts changed). Never raises: simulcast must not disturb the supervisor."""
        now = time.monotonic()
        if not force and now < self.next_refresh and publishing == self.sessions:
            return
        self.next_refresh = now + float(settings.SIMULCAST_REFRESH_S)
        try:
            self._sync(publishing)
        except Exception:
            logger.exception("simulcast sync failed; relays left as they are")
            django.db.close_old_connections()
            return
        self.sessions = dict(publishing)
        counts = collections.Counter(relay.status for relay in self.relays.values())
        metrics.simulcast_relays(dict(counts))

    def _sync(self, publishing: dict[int, tuple[int, str]]) -> None:
        wanted: dict[tuple[int, int], tuple[services.Push, str]] = {}
        pushed = {s: v for s, v in publishing.items() if services.should_push(v[0], s)}
        if pushed:
            django.db.close_old_connections()
            by_stream: dict[int, list[services.Push]] = collections.defaultdict(list)
            for push in services.targets_to_push({stream for stream, _ in pushed.values()}):
                by_stream[push.stream_id].append(push)
            for session_id, (stream_id, name) in pushed.items():
                for push in by_stream.get(stream_id, []):
                    wanted[(session_id, push.target_id)] = (push, name)
        for ident, relay in list(self.relays.items()):
            want = wanted.get(ident)
            if want is not None and want[0].version == relay.push.version and relay.is_alive():
                continue
            if ident[0] not in publishing:
                reason = "the broadcast ended"
            elif want is None:
                reason = "the target was disabled or removed"
            else:
                reason = "the target was changed"
            relay.stop(reason)
            del self.relays[ident]
        for ident, (push, name) in wanted.items():
            if ident not in self.relays:
                relay = Relay(push, session_id=ident[0], publish_name=name)
                self.relays[ident] = relay
                relay.start()

    def stop_all(self, reason: str = "the ingest node is shutting down") -> None:
        relays = list(self.relays.values())
        self.relays.clear()
        for relay in relays:
            relay.stop(reason)
        for relay in relays:
            relay.join(timeout=10)

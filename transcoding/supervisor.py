"""The ingest supervisor (``manage.py run_ingest``): keeps one segmenter running for every
publisher connected to this node's nginx-rtmp, through every fault it can outlive.

- **Node**: it is the supervisor of ingest node ``INGEST_NODE_ID`` (the id this node's
  nginx-rtmp puts in its callbacks); every second it renews the node's registration
  (``state.register_node``: alive for ``INGEST_NODE_TTL_SECONDS``, and the node's control URL).
- **Command intake**: ``accept_publish`` pushes a command on the queue of the node whose
  nginx-rtmp received the publish; a BLPOP of this node's queue starts a ``Segmenter``
  (``transcoding.ingest``) for it.
- **Heartbeats**: every second, for each of its segmenters, ``state.heartbeat`` (the periodic
  reconciler, ``tasks.reconcile_live_sessions``, ends sessions whose heartbeat stops) and the
  ownership key ``pipe:<session>:owner:<conn>`` (so two supervisors never run the same one).
- **Restarts**: a segmenter whose thread ended (its ffmpeg died, crashed) while nginx-rtmp still
  shows its publisher is started again (``resumed``: its first chunk carries a discontinuity),
  at most ``SEGMENTER_MAX_RESTARTS`` times a minute; after that the publisher is dropped so it
  reconnects cleanly.
- **Adoption**: every ``ADOPT_EVERY_S`` the supervisor lists the streams nginx-rtmp publishes
  (its stat page on ``RTMP_STAT_BIND``) and starts a segmenter for any internal name ``s<S>c<C>`` that
  nobody owns, if the database still has session S live on connection C: a restarted supervisor
  (or one whose command Redis lost) picks up every publisher still connected. A publish the
  database no longer has as live is dropped, so the publisher comes back through on_publish.
- **Simulcast**: every pass hands the broadcasts it segments to ``simulcast.relay.RelayManager``,
  which runs one restream relay (a separate ffmpeg) per enabled target while the broadcast is
  on this node (ADR 0033); relays never hold up this loop or a segmenter.
- **Outages**: Redis errors (BLPOP, heartbeats) and database errors are logged once and waited
  out; nothing here exits because a dependency restarted.

Segmenter ffmpegs carry the parent-death signal: they end with this process, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from xml.etree import ElementTree

import django.db
import kombu.exceptions
import redis.exceptions
from django.conf import settings

from livestream import metrics
from simulcast.relay import RelayManager
from transcoding import rtmp_control, state
from transcoding.segmenter import Segmenter

logger = logging.getLogger(__name__)

OUTAGE = (redis.exceptions.RedisError, kombu.exceptions.OperationalError)
ADOPT_EVERY_S = 1.0
# How often the supervisor checks that the sessions it segments are still live in the database.
CHECK_SESSIONS_EVERY_S = 5.0
# A published stream must be seen without a segmenter this long before it is adopted (the
# command of a fresh publish normally arrives first).
ADOPT_AFTER_S = 1.0
OWNER_TTL_S = 5
NAME = re.compile(r"^s(\d+)c(\d+)$")


owner_key = state.owner_key


def published_streams(timeout_s: float = 1.0) -> set[str] | None:
    """Names of the streams nginx-rtmp on this node has a publisher for; None when its
    statistics page does not answer (nginx down)."""
    url = f"http://{settings.RTMP_STAT_BIND}:{settings.RTMP_STAT_PORT}/stat"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            root = ElementTree.fromstring(response.read())  # noqa: S314 - our own nginx on loopback
    except (OSError, ElementTree.ParseError):
        return None
    names: set[str] = set()
    for stream in root.iter("stream"):
        name = stream.findtext("name")
        if name and any(client.find("publishing") is not None for client in stream.iter("client")):
            names.add(name)
    return names


@dataclass
class Slot:
    """One publisher connection this supervisor segments."""

    command: dict[str, object]
    segmenter: Segmenter
    starts: list[float] = field(default_factory=list)

    @property
    def ident(self) -> tuple[int, int]:
        return int(self.command["session"]), int(self.command["conn"])  # type: ignore[call-overload]


class Supervisor:
    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.node = f"{socket.gethostname()}:{os.getpid()}"  # owner of its segmenters
        self.node_id: str = settings.INGEST_NODE_ID  # the ingest node it supervises
        self.control_url = rtmp_control.local_control_url()
        self.slots: dict[tuple[int, int], Slot] = {}
        self.unowned_since: dict[str, float] = {}
        self.next_adopt = 0.0
        self.next_beat = 0.0
        self.next_check = time.monotonic() + CHECK_SESSIONS_EVERY_S
        self.not_live: set[tuple[int, int]] = set()  # seen not live at the last check
        self.outage_since: float | None = None
        self.relays = RelayManager()

    # --- the loop -----------------------------------------------------------------------
    def serve(self) -> None:
        logger.info(
            "ingest supervisor of node %s ready (recordings in %s, %s)",
            self.node_id, settings.RTMP_RECORD_DIR, self.node,
        )  # fmt: skip
        with contextlib.suppress(*OUTAGE):  # registered at once: on_publish refuses unknown nodes
            state.register_node(self.node_id, control_url=self.control_url)
        while not self.stop.is_set():
            try:
                self._intake()
                self._supervise()
                metrics.ingest_segmenters(len(self.slots))
            except OUTAGE as exc:
                self._outage(exc)
            except django.db.Error as exc:
                logger.warning("database error in the ingest supervisor: %s", exc)
                django.db.close_old_connections()
                self.stop.wait(1)
            else:
                if self.outage_since is not None:
                    logger.info("Redis back after %.1f s", time.monotonic() - self.outage_since)
                    self.outage_since = None
        self._shutdown()

    def _outage(self, exc: Exception) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            logger.warning("Redis unreachable (%s): segmenters keep running, retrying", exc)
        self.stop.wait(1)

    def _intake(self) -> None:
        item = state.next_ingest_command(self.node_id, timeout_s=1)
        if item is None:
            return
        try:
            command = json.loads(item)
            ident = int(command["session"]), int(command["conn"])
            str(command["name"]), int(command["stream"])
        except (ValueError, KeyError, TypeError):
            logger.error("malformed ingest command ignored: %r", item[:200])
            return
        if ident in self.slots:
            return
        state.set_owner(*ident, self.node, ttl_s=OWNER_TTL_S)
        self._start(command, resumed=False)

    def _start(self, command: dict[str, object], *, resumed: bool) -> None:
        segmenter = Segmenter(
            session_id=int(command["session"]),  # type: ignore[call-overload]
            stream_id=int(command["stream"]),  # type: ignore[call-overload]
            conn=int(command["conn"]),  # type: ignore[call-overload]
            name=str(command["name"]),
            chunk_seconds=command.get("chunk_s"),  # type: ignore[arg-type]
            resumed=resumed,
        )
        ident = segmenter.session_id, segmenter.conn
        slot = self.slots.get(ident)
        if slot is None:
            slot = self.slots[ident] = Slot(command, segmenter)
        slot.segmenter = segmenter
        slot.starts = [t for t in slot.starts if t > time.monotonic() - 60] + [time.monotonic()]
        state.heartbeat(*ident, node=self.node_id)
        segmenter.start()

    def _supervise(self) -> None:
        now = time.monotonic()
        ended = [slot for slot in self.slots.values() if not slot.segmenter.is_alive()]
        published = published_streams() if ended or now >= self.next_adopt else None
        for slot in ended:
            self._after_end(slot, published)
        if now >= self.next_beat:
            self.next_beat = now + 1.0
            state.register_node(self.node_id, control_url=self.control_url)
            for session_id, conn in self.slots:
                state.heartbeat(session_id, conn, node=self.node_id)
                state.set_owner(session_id, conn, self.node, ttl_s=OWNER_TTL_S)
        if now >= self.next_adopt:
            self.next_adopt = now + ADOPT_EVERY_S
            if published is not None:
                self._adopt(published)
        if now >= self.next_check:
            self.next_check = now + CHECK_SESSIONS_EVERY_S
            self._check_sessions()
        self.relays.sync(self._broadcasts())

    def _broadcasts(self) -> dict[int, tuple[int, str]]:
        """Session -> (stream, publish name) of what this node segments: what simulcast pushes."""
        return {
            slot.ident[0]: (int(slot.command["stream"]), str(slot.command["name"]))  # type: ignore[call-overload]
            for slot in self.slots.values()
        }

    def _check_sessions(self) -> None:
        """A session the reconciler ended while this supervisor still segments it (its heartbeats
        did not reach Redis for a while): stop segmenting and drop the publisher, which then
        reconnects through on_publish and resumes the session within its grace period."""
        from streams.models import SessionStatus, StreamSession

        if not self.slots:
            return
        django.db.close_old_connections()
        live = set(
            StreamSession.objects.filter(pk__in={s for s, _ in self.slots}, status=SessionStatus.LIVE).values_list(
                "pk", "connections"
            )
        )
        suspects = {ident for ident in self.slots if ident not in live}
        # Twice in a row (5 s apart): a publisher that just left ends its segmenter by itself.
        confirmed, self.not_live = suspects & self.not_live, suspects
        for ident in confirmed:
            slot = self.slots[ident]
            if not slot.segmenter.is_alive():
                continue
            logger.warning(
                "session no longer live on this connection: stopping its segmenter, dropping the publisher",
                extra={"session": ident[0], "ctx": {"connection": ident[1]}},
            )
            slot.segmenter.stop()
            self._forget(slot)
            rtmp_control.drop_publisher(str(slot.command["name"]))

    def _after_end(self, slot: Slot, published: set[str] | None) -> None:
        name = str(slot.command["name"])
        still_there = published is not None and name in published and not self.stop.is_set()
        if not still_there:
            self._forget(slot)
            return
        if len(slot.starts) > settings.SEGMENTER_MAX_RESTARTS:
            logger.error(
                "segmenter failed %d times within a minute; dropping the publisher", len(slot.starts) - 1,
                extra={"session": slot.ident[0], "ctx": {"connection": slot.ident[1]}},
            )  # fmt: skip
            self._forget(slot)
            rtmp_control.drop_publisher(name)
            return
        if time.monotonic() - slot.starts[-1] < 1.0:
            return  # at most one start per second; try again on the next pass
        logger.warning(
            "segmenter ended while its publisher is connected: restarting it",
            extra={"session": slot.ident[0], "ctx": {"connection": slot.ident[1]}},
        )
        self._start(slot.command, resumed=True)

    def _forget(self, slot: Slot) -> None:
        del self.slots[slot.ident]
        if state.owner(*slot.ident) == self.node:
            state.drop_owners([slot.ident])

    def _adopt(self, published: set[str]) -> None:
        mine = {str(slot.command["name"]) for slot in self.slots.values()}
        now = time.monotonic()
        candidates = {name for name in published - mine if NAME.match(name)}
        self.unowned_since = {name: self.unowned_since.get(name, now) for name in candidates}
        for name, since in list(self.unowned_since.items()):
            if now - since < ADOPT_AFTER_S:
                continue
            match = NAME.match(name)
            if match is None:
                continue
            session_id, conn = int(match[1]), int(match[2])
            if not self._owner_gone(session_id, conn):
                continue  # another supervisor runs it (its owner key is fresh)
            self._adopt_one(name, session_id, conn)
            self.unowned_since.pop(name, None)

    def _owner_gone(self, session_id: int, conn: int) -> bool:
        """No owner key, or its owner was a supervisor of this host that is not running any
        more (killed: its key has not expired yet). Then the key is cleared for adoption."""
        raw = state.owner(session_id, conn)
        if raw is None:
            return True
        host, _, pid = raw.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
            return False
        if os.path.exists(f"/proc/{pid}"):
            return False
        state.drop_owners([(session_id, conn)])
        return True

    def _adopt_one(self, name: str, session_id: int, conn: int) -> None:
        from streams.models import SessionStatus, StreamSession

        django.db.close_old_connections()
        session = StreamSession.objects.filter(pk=session_id).only("stream_id", "status", "connections").first()
        if session is None or session.status != SessionStatus.LIVE or session.connections != conn:
            logger.warning(
                "publish %s has no live session any more: dropping it so the publisher reconnects", name,
                extra={"session": session_id},
            )  # fmt: skip
            rtmp_control.drop_publisher(name)
            return
        if not state.set_owner(session_id, conn, self.node, ttl_s=OWNER_TTL_S, only_if_free=True):
            return
        logger.warning(
            "adopting a publisher nobody segments (supervisor restarted or command lost)",
            extra={"session": session_id, "stream": session.stream_id, "ctx": {"connection": conn}},
        )
        command: dict[str, object] = {"session": session_id, "stream": session.stream_id, "conn": conn, "name": name}
        state.set_ingest_node(session_id, conn, self.node_id)  # it is on this node's nginx-rtmp
        self._start(command, resumed=True)

    def _shutdown(self) -> None:
        self.relays.stop_all()
        for slot in self.slots.values():
            slot.segmenter.stop()
        for slot in self.slots.values():
            slot.segmenter.join(timeout=10)
        with contextlib.suppress(*OUTAGE):  # a supervisor that starts next adopts these publishers at once
            state.drop_owners(list(self.slots))
        django.db.connections.close_all()  # this thread's connection (tests run it in a thread)


def serve(stop: threading.Event) -> None:
    """Supervise segmenters until ``stop`` is set; then stop them."""
    Supervisor(stop).serve()

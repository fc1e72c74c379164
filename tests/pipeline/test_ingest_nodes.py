"""Ingest nodes against real Redis and PostgreSQL: callbacks name their node, commands, client
maps and heartbeats are per node, a dead node's sessions are taken over at once, and every
key of a node hashes to one Redis Cluster slot. (Two real nodes: test_multi_node.py.)"""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client, override_settings
from redis.crc import key_slot

from livestream.redis import redis_client
from streams.models import SessionStatus, Stream, StreamSession
from tests.factories import make_stream
from transcoding import rtmp_control, services, state

pytestmark = pytest.mark.django_db

SECRET = "node-callback-secret"
A, B = "node-a", "node-b"


@pytest.fixture
def two_nodes() -> tuple[str, str]:
    for node in (A, B):
        state.register_node(node, control_url=f"http://127.0.0.1:1/{node}/control", ttl_s=600)
    return A, B


def _publish(node: str | None, key: str, clientid: str = "1", *, secret: str = SECRET):
    query = f"?node={node}&secret={secret}" if node is not None else f"?secret={secret}"
    form = {"call": "publish", "name": key, "addr": "203.0.113.9", "clientid": clientid}
    return Client().post(f"/internal/rtmp/on_publish{query}", form)


def _done(node: str | None, key: str, clientid: str):
    query = f"?node={node}&secret={SECRET}" if node is not None else f"?secret={SECRET}"
    form = {"call": "publish_done", "name": key, "addr": "203.0.113.9", "clientid": clientid}
    return Client().post(f"/internal/rtmp/on_publish_done{query}", form)


def _pipeline_keys() -> list[str]:
    return sorted(k.decode() for k in redis_client().scan_iter("pipe:*"))


@override_settings(RTMP_CALLBACK_SECRET=SECRET)
def test_a_publish_is_queued_on_the_node_that_received_it(user, two_nodes):
    stream, key = make_stream(user)
    response = _publish(A, key)
    assert response.status_code == 302
    session = StreamSession.objects.get(stream=stream)
    assert 0 < redis_client().ttl(state.ingest_queue_key(A)) <= state.INGEST_QUEUE_TTL_S  # a dead node's expire
    assert state.next_ingest_command(B, timeout_s=0.1) is None  # node B never sees it
    raw = state.next_ingest_command(A, timeout_s=0.1)
    assert raw is not None
    assert json.loads(raw) == {
        "session": session.pk,
        "stream": stream.pk,
        "conn": 1,
        "name": response["Location"],
        "chunk_s": 2.0,  # the stream's latency mode (make_stream: normal)
    }
    assert state.ingest_node(session.pk, 1) == A


@override_settings(RTMP_CALLBACK_SECRET=SECRET)
def test_the_same_client_id_on_two_nodes_maps_two_publishers(user, two_nodes, django_capture_on_commit_callbacks):
    """nginx-rtmp numbers its clients per process: client 1 of node A and client 1 of node B
    are two publishers; publish_done of one leaves the other live."""
    first, first_key = make_stream(user, title="On A")
    second, second_key = make_stream(user, title="On B")
    assert _publish(A, first_key, "1").status_code == 302
    assert _publish(B, second_key, "1").status_code == 302
    s1 = StreamSession.objects.get(stream=first)
    s2 = StreamSession.objects.get(stream=second)
    assert state.client(A, "1")["session"] == s1.pk
    assert state.client(B, "1")["session"] == s2.pk
    with django_capture_on_commit_callbacks(execute=False):
        assert _done(B, second_key, "1").status_code == 200
    assert StreamSession.objects.get(pk=s2.pk).status == SessionStatus.RECONNECTING
    assert StreamSession.objects.get(pk=s1.pk).status == SessionStatus.LIVE
    assert state.client(A, "1") is not None
    assert state.client(B, "1") is None
    # node A's client 1 with node B's key: not that publisher, nothing changes.
    with django_capture_on_commit_callbacks(execute=False):
        assert _done(A, second_key, "1").status_code == 200
    assert StreamSession.objects.get(pk=s1.pk).status == SessionStatus.LIVE


@override_settings(RTMP_CALLBACK_SECRET=SECRET)
def test_callbacks_without_a_well_formed_node_are_refused_and_write_nothing(user, two_nodes):
    stream, key = make_stream(user)
    before = _pipeline_keys()
    for node in (None, "", "Node-A", "a_b", "x" * 64, "-a", "a}{b", "a:b"):
        response = _publish(node, key)
        assert response.status_code == 400, node
        assert b"node" in response.content
        assert _done(node, key, "1").status_code == 400, node
    # A well-formed id of a node that is not running (no supervisor registered it).
    response = _publish("node-c", key)
    assert response.status_code == 403
    assert b"ingest node node-c is not running" in response.content
    assert not StreamSession.objects.filter(stream=stream).exists()
    assert Stream.objects.get(pk=stream.pk).status == "offline"
    assert _pipeline_keys() == before
    # A malformed client id: refused as well.
    assert _publish(A, key, "1 OR 1").status_code == 403
    assert _pipeline_keys() == before


def test_heartbeats_are_kept_per_node():
    state.heartbeat(10, 1, node=A, now=100.0)
    state.heartbeat(11, 2, node=B, now=200.0)
    assert state.node_heartbeats(A) == {(10, 1): 100.0}
    assert state.node_heartbeats(B) == {(11, 2): 200.0}
    assert state.last_heartbeat(10, 1) == 100.0
    state.drop_heartbeat(10, 1, node=A)
    assert state.node_heartbeats(A) == {}
    assert state.last_heartbeat(10, 1) is None


def test_a_node_is_alive_only_while_its_supervisor_renews_it():
    state.register_node(A, control_url="http://127.0.0.2:1936/control", ttl_s=1)
    assert state.node_is_alive(A)
    assert state.nodes() == [A]
    assert state.node_control_url(A) == "http://127.0.0.2:1936/control"
    time.sleep(1.3)
    assert not state.node_is_alive(A)
    assert state.nodes() == []
    assert state.nodes(alive_only=False) == [A]
    assert state.node_control_url(A) == "http://127.0.0.2:1936/control"  # kept for a late drop


def test_every_key_of_a_node_is_in_one_cluster_slot():
    for node in (A, B, "ingest-7f9c-0"):
        slots = {
            key_slot(k.encode())
            for k in (
                state.ingest_queue_key(node),
                state.node_heartbeats_key(node),
                state.node_alive_key(node),
                state.client_key(node, "1"),
                state.client_key(node, "98765"),
            )
        }
        assert len(slots) == 1, node
    with pytest.raises(ValueError, match="malformed ingest node id"):
        state.ingest_queue_key("a}b")


@override_settings(RTMP_CALLBACK_SECRET=SECRET, INGEST_TAKEOVER_SECONDS=30)
def test_a_dead_nodes_session_is_taken_over_on_another_node_at_once(user, two_nodes):
    """While node A renews its registration, the key cannot publish on node B (even with an old
    heartbeat the takeover waits INGEST_TAKEOVER_SECONDS); once A's registration lapses its
    session is taken over at once: a new connection on node B, queued there."""
    stream, key = make_stream(user)
    assert _publish(A, key, "5").status_code == 302
    session = StreamSession.objects.get(stream=stream)
    state.set_ingest(session.pk, 1, "running")
    state.heartbeat(session.pk, 1, node=A)
    refused = _publish(B, key, "5")
    assert refused.status_code == 403
    assert b"already live" in refused.content
    redis_client().delete(state.node_alive_key(A))  # node A missed its renewals: dead
    assert services.ingest_dead(StreamSession.objects.get(pk=session.pk))
    response = _publish(B, key, "5")
    assert response.status_code == 302
    assert response["Location"] == f"s{session.pk}c2"
    again = StreamSession.objects.get(pk=session.pk)
    assert (again.status, again.connections) == (SessionStatus.LIVE, 2)
    assert state.ingest_node(session.pk, 2) == B
    assert state.ingest_node(session.pk, 1) == A
    assert json.loads(state.next_ingest_command(B, timeout_s=0.1) or b"{}")["conn"] == 2
    # Both client 5s are mapped, each to its own connection.
    assert state.client(A, "5")["conn"] == 1
    assert state.client(B, "5")["conn"] == 2
    state.purge(session.pk)
    assert state.client(A, "5") is None
    assert state.client(B, "5") is None


def test_the_control_url_of_the_node_that_holds_the_publisher(settings):
    settings.INGEST_NODE_CONTROL_URL = ""
    settings.RTMP_CONTROL_URL = ""
    settings.RTMP_STAT_BIND, settings.RTMP_STAT_PORT = "127.0.0.3", 1999
    assert rtmp_control.local_control_url() == "http://127.0.0.3:1999/control"
    settings.INGEST_NODE_CONTROL_URL = "http://ingest-0.ingest:1937/control"
    assert rtmp_control.local_control_url() == "http://ingest-0.ingest:1937/control"
    state.register_node(B, control_url="http://127.0.0.3:1999/control")
    state.set_ingest_node(42, 3, B)
    assert rtmp_control.node_of(42, 3) == B
    assert rtmp_control.node_of(42, 2) is None
    assert rtmp_control._base_url(B) == "http://127.0.0.3:1999/control"
    assert rtmp_control._base_url(None) == "http://ingest-0.ingest:1937/control"
    assert rtmp_control._base_url("node-z") is None
    assert rtmp_control.drop_publisher("s42c3", node="node-z") is False  # not registered: nothing asked

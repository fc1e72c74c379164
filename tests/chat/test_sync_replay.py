"""Latency-synced chat and the chat of a replay (ADR 0035): the program date-time of messages,
the replay timeline read from the stored playlist, and the exports (JSON, WebVTT) through the
REST API with the real S3 (SeaweedFS) holding the replay's playlists."""

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import webvtt
from rest_framework.test import APIClient

from chat import selectors, services
from chat.models import Message
from chat.replay import vtt_text, vtt_time
from streams.models import SessionStatus, StreamSession
from streams.replays import timeline_from_playlist
from tests.factories import UserFactory, make_stream
from transcoding import hls, storage
from transcoding.hls import Entry

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def write_replay(session, entries):
    """The replay's master and media playlist, as the assembler writes them at the end."""
    prefix = session.storage_prefix
    storage.put_playlist(
        f"{prefix}/360p/index.m3u8", hls.render_media(entries, 0, 0, target=2, kind="event", ended=True)
    )
    storage.put_playlist(
        f"{prefix}/master.m3u8", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n"
    )


def entries_with_gap():
    """Five 2 s segments from T0, then (after a reconnect 10 s later) three more."""
    start = T0.timestamp()
    out = [Entry(i, i, 2.0, start + 2 * i, False) for i in range(5)]
    out += [Entry(5 + i, 5 + i, 2.0, start + 20 + 2 * i, i == 0) for i in range(3)]
    return out


@pytest.fixture
def replay(s3, user):
    stream, _ = make_stream(user)
    session = StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=30),
        duration_s=16,
        is_replay=True,
        storage_prefix=f"live/{stream.pk}/9{stream.pk}",
    )
    write_replay(session, entries_with_gap())
    return stream, session


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def api(stream, session, tail):
    return f"/api/v1/streams/{stream.pk}/replays/{session.pk}/{tail}"


def test_a_posted_message_carries_the_program_date_time_of_its_moment(user, api_client):
    stream, _ = make_stream(user)
    poster = UserFactory()
    before = datetime.now(UTC)
    created = client_for(poster).post(f"/api/v1/streams/{stream.pk}/chat/messages/", {"text": "now"}, format="json")
    after = datetime.now(UTC)
    assert created.status_code == 201
    pdt = datetime.fromisoformat(created.json()["pdt"])
    assert before - timedelta(milliseconds=1) <= pdt <= after
    assert Message.objects.get(pk=created.json()["id"]).pdt == pdt
    listed = api_client.get(f"/api/v1/streams/{stream.pk}/chat/messages/").json()["results"]
    assert listed[0]["pdt"] == created.json()["pdt"]


def test_the_timeline_maps_program_date_times_to_replay_offsets_across_a_gap():
    timeline = timeline_from_playlist(hls.render_media(entries_with_gap(), 0, 0, target=2, kind="event", ended=True))
    assert timeline is not None
    assert len(timeline.spans) == 2
    assert timeline.start == T0
    assert timeline.duration_s == 16
    assert timeline.offset_of(at(0)) == 0
    assert timeline.offset_of(at(3.25)) == 3.25
    assert timeline.offset_of(at(12)) == 10  # in the reconnect gap: where playback resumes
    assert timeline.offset_of(at(21.5)) == 11.5
    assert timeline.offset_of(at(-1)) is None
    assert timeline.offset_of(at(27)) is None


def test_replay_chat_lists_exports_and_skips_deleted_and_outside_messages(replay, user, api_client):
    stream, session = replay
    alice, bob = UserFactory(display_name="Alice"), UserFactory()
    rows = {
        "before": Message.objects.create(stream=stream, user=alice, text="before", pdt=at(-5)),
        "a": Message.objects.create(stream=stream, user=alice, text="first <b>&</b>", pdt=at(1.5)),
        "b": Message.objects.create(stream=stream, user=bob, text="gone", pdt=at(4)),
        "c": Message.objects.create(stream=stream, user=bob, text="in the gap", pdt=at(15)),
        "d": Message.objects.create(stream=stream, user=alice, text="line one\n\nline two --> x", pdt=at(23.25)),
        "after": Message.objects.create(stream=stream, user=bob, text="after", pdt=at(40)),
    }
    services.delete_message(actor=user, stream=stream, message_id=rows["b"].pk)
    expected = [(rows["a"].pk, 1.5), (rows["c"].pk, 10.0), (rows["d"].pk, 13.25)]

    page = api_client.get(api(stream, session, "chat/"), {"page_size": 2})
    assert page.status_code == 200
    first = page.json()
    second = api_client.get(first["next"]).json()
    listed = first["results"] + second["results"]
    assert [(m["id"], m["offset_s"]) for m in listed] == expected
    assert second["next"] is None
    assert listed[0]["text"] == "first <b>&</b>"
    assert listed[0]["display_name"] == "Alice"

    exported = api_client.get(api(stream, session, "chat.json"))
    assert exported.status_code == 200
    assert "attachment" in exported["Content-Disposition"]
    body = exported.json()
    assert datetime.fromisoformat(body["start"]) == T0
    assert body["duration_s"] == 16
    assert [(m["id"], m["offset_s"]) for m in body["messages"]] == expected
    assert [m["pdt"] for m in body["messages"]] == [m["pdt"] for m in listed]

    vtt = api_client.get(api(stream, session, "chat.vtt"))
    assert vtt.status_code == 200
    assert vtt["Content-Type"].startswith("text/vtt")
    text = b"".join(vtt.streaming_content).decode()
    captions = webvtt.from_buffer(io.StringIO(text))
    assert [int(c.identifier) for c in captions] == [i for i, _ in expected]
    assert [c.start for c in captions] == [vtt_time(s) for _, s in expected]
    assert [c.end for c in captions] == [vtt_time(1.5 + 5), vtt_time(10 + 5), vtt_time(16)]
    # The cue text reads back as "name: message" (character references decoded by players).
    assert captions[0].raw_text == "Alice: first &lt;b&gt;&amp;&lt;/b&gt;"
    assert captions[2].raw_text == "Alice: line one\nline two --&gt; x"
    assert "gone" not in text
    assert "before" not in text
    assert "after" not in text


def test_replay_chat_is_public_but_only_for_replays(replay, user, api_client):
    stream, session = replay
    assert api_client.get(api(stream, session, "chat.json")).status_code == 200
    assert api_client.get(f"/api/v1/streams/{stream.pk}/replays/999999/chat.json").status_code == 404
    assert api_client.get(f"/api/v1/streams/999999/replays/{session.pk}/chat.vtt").status_code == 404
    live = StreamSession.objects.create(stream=stream, status=SessionStatus.LIVE, started_at=T0 + timedelta(hours=1))
    for tail in ("chat/", "chat.json", "chat.vtt"):
        response = api_client.get(api(stream, live, tail))
        assert response.status_code == 404, tail
        assert json.loads(response.content)["error"]["code"] == "not_found"
    session.is_replay = False  # the owner deleted the replay: its chat goes with it
    session.save(update_fields=["is_replay"])
    assert api_client.get(api(stream, session, "chat.vtt")).status_code == 404


def test_replay_chat_without_stored_playlists_uses_the_session_times(user, api_client, s3):
    stream, _ = make_stream(user)
    session = StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=60),
        duration_s=60,
        is_replay=True,
        storage_prefix=f"live/{stream.pk}/missing",
    )
    message = Message.objects.create(stream=stream, user=user, text="hi", pdt=at(42.5))
    body = api_client.get(api(stream, session, "chat.json")).json()
    assert [(m["id"], m["offset_s"]) for m in body["messages"]] == [(message.pk, 42.5)]


def test_vtt_text_escapes_and_never_ends_the_cue():
    assert vtt_text("a<b>&c</b> --> d") == "a&lt;b&gt;&amp;c&lt;/b&gt; --&gt; d"
    assert vtt_text("one\r\n\r\n  \ntwo") == "one\ntwo"
    assert vtt_time(3725.5) == "01:02:05.500"


def test_bad_cursor_is_a_clear_4xx(replay, api_client):
    stream, session = replay
    response = api_client.get(api(stream, session, "chat/"), {"cursor": "not-a-cursor"})
    assert response.status_code == 404
    assert api_client.get(api(stream, session, "chat/"), {"page_size": "x"}).status_code == 200


def test_webvtt_whatever_the_request_accepts_and_errors_in_json(replay, api_client):
    stream, session = replay
    for headers, query in (({"HTTP_ACCEPT": "text/vtt"}, {}), ({"HTTP_ACCEPT": "*/*"}, {"format": "vtt"})):
        response = api_client.get(api(stream, session, "chat.vtt"), query, **headers)
        assert response.status_code == 200
        assert response["Content-Type"] == "text/vtt; charset=utf-8"
        assert b"".join(response.streaming_content).startswith(b"WEBVTT")
    missing = api_client.get(
        f"/api/v1/streams/{stream.pk}/replays/0/chat.vtt", {"format": "vtt"}, HTTP_ACCEPT="text/vtt"
    )
    assert missing.status_code == 404
    assert missing["Content-Type"].startswith("application/json")
    assert missing.json()["error"]["code"] == "not_found"


def test_the_socket_history_carries_the_program_date_time(user):
    stream, _ = make_stream(user)
    poster = UserFactory()
    message = services.post_message(stream_id=stream.pk, user=poster, text="hello")
    state = selectors.join_state(stream.pk, poster, 10)
    assert state is not None
    assert [m["pdt"] for m in state["messages"]] == [message.pdt.isoformat(timespec="milliseconds")]
    assert message.pdt.microsecond % 1000 == 0  # milliseconds, like EXT-X-PROGRAM-DATE-TIME


def test_offsets_follow_each_segments_own_date_time():
    """Chunks' ingest clocks jitter by a few ms; players read each segment's own date-time."""
    start = T0.timestamp()
    entries = [Entry(0, 0, 2.0, start, False), Entry(1, 1, 2.0, start + 2.011, False)]
    timeline = timeline_from_playlist(hls.render_media(entries, 0, 0, target=2, kind="event", ended=True))
    assert timeline is not None
    assert timeline.offset_of(at(3.011)) == 3.0
    assert timeline.offset_of(at(2.005)) == 2.0  # between the two: where the second starts

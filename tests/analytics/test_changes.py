"""Following MongoDB changes: mongomock (like a standalone server) has no change streams, so
the follower falls back to polling; events reach the stream's group on the real Redis
channel layer."""

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from bson import ObjectId
from channels.layers import get_channel_layer
from django.core.management import call_command

from analytics import changes
from analytics.documents import IngestSample, PlaybackEvent, ViewerSample
from livestream import events


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[int, str, dict[str, Any]]] = []

    def __call__(self, stream_id: int, name: str, data: dict[str, Any]) -> None:
        self.events.append((stream_id, name, data))


def test_watch_is_unsupported_on_mongomock() -> None:
    with pytest.raises(changes.ChangeStreamsUnsupportedError):
        changes.follow(mode="watch", stop=lambda: False, publisher=Collector())


def test_auto_mode_falls_back_to_polling_and_delivers_new_documents() -> None:
    old = ObjectId.from_datetime(datetime.now(UTC) - timedelta(minutes=5))
    IngestSample(id=old, stream_id=1, session_id=1, bitrate=1).save(force_insert=True)  # before the follower: not sent
    collector = Collector()
    deadline = time.monotonic() + 10
    result: dict[str, str] = {}

    def stop() -> bool:
        return len(collector.events) >= 2 or time.monotonic() > deadline

    thread = threading.Thread(
        target=lambda: result.update(mode=changes.follow(mode="auto", interval_s=0.1, stop=stop, publisher=collector))
    )
    thread.start()
    time.sleep(0.3)
    IngestSample(stream_id=7, session_id=70, bitrate=4_500_000, fps=29.97, lag_s={"720p": 1.2}, queue_depth=3).save()
    ViewerSample(stream_id=7, session_id=70, viewers=12, interval_s=15, per_rendition={"720p": 10}).save()
    PlaybackEvent(stream_id=7, kind="heartbeat", value=1).save()  # not a followed collection
    thread.join(timeout=15)

    assert result["mode"] == "poll"
    names = sorted((stream, name) for stream, name, _ in collector.events)
    assert names == [(7, "analytics.ingest"), (7, "analytics.viewers")]
    ingest = next(data for _, name, data in collector.events if name == "analytics.ingest")
    assert ingest["bitrate"] == 4_500_000
    assert ingest["lag_s"] == {"720p": 1.2}
    assert ingest["queue_depth"] == 3
    assert ingest["session_id"] == 70
    viewers = next(data for _, name, data in collector.events if name == "analytics.viewers")
    assert viewers["viewers"] == 12
    assert viewers["per_rendition"] == {"720p": 10}


def test_poller_sends_each_document_once_even_when_ids_arrive_out_of_order() -> None:
    now = datetime.now(UTC)
    poller = changes.Poller(overlap_s=5, now=now)
    collector = Collector()
    IngestSample(stream_id=1, session_id=1, bitrate=1).save()
    assert poller.poll_once(collector) == 1
    assert poller.poll_once(collector) == 0  # nothing new, nothing repeated
    # Another process created this id a moment *before* our last poll but inserted it after.
    late = IngestSample(id=ObjectId.from_datetime(now - timedelta(seconds=2)), stream_id=2, session_id=2, bitrate=2)
    late.save(force_insert=True)
    assert poller.poll_once(collector) == 1
    assert [stream for stream, _, _ in collector.events] == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_follow_changes_command_feeds_the_channel_layer() -> None:
    group = events.owner_group(4242)  # owner-only: never the public stream.<id> group

    async def scenario() -> dict[str, Any]:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        command = threading.Thread(
            target=call_command,
            args=("follow_changes", "--mode", "auto", "--interval", "0.2", "--max-seconds", "4"),
        )
        command.start()
        try:
            await asyncio.sleep(0.6)
            await sync_to_async(IngestSample(stream_id=4242, session_id=1, bitrate=123, lag_s={"480p": 9.0}).save)()
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        finally:
            await sync_to_async(command.join)(10)
            await layer.group_discard(group, channel)
        return message

    message = async_to_sync(scenario)()
    assert message["type"] == "stream.event"
    assert message["event"] == "analytics.ingest"
    assert message["data"]["bitrate"] == 123
    assert message["data"]["lag_s"] == {"480p": 9.0}


def test_command_idles_without_mongodb(mongo_off: None, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    call_command("follow_changes", "--max-seconds", "0.5")
    assert time.monotonic() - started >= 0.5
    assert "Analytics are off" in capsys.readouterr().err

"""End to end: a real RTMP broadcast (ffmpeg) through nginx-rtmp, the ingest and a real Celery
worker; chat through the chat service; loudness measured by the transcode worker; highlights
scored by their task on the worker while live and after the end; the webhook delivered.

The publisher's audio is a sine at -40 dBFS with a -6 dBFS passage at a known second (ffmpeg's
``volume`` with an ``enable`` expression); a burst of chat messages is posted at a known wall
time. Both must be among the suggestions, within one segment of the true time. A quiet
broadcast (the same sine, no loud passage, no chat) gets no suggestion.
"""

import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest

from chat import services as chat_services
from clips.models import Clip, ClipStatus
from highlights import keys, tasks
from highlights.models import Suggestion, SuggestionStatus
from livestream import devstack
from streams.models import StreamSession
from tests.browser.harness import chromium, sign_in
from tests.factories import UserFactory, make_stream
from tests.fixtures.pipeline import LiveStack
from tests.webhooks.servers import http_receiver
from transcoding import ffmpeg, storage
from webhooks import services as webhook_services
from webhooks.models import Delivery, DeliveryStatus
from webhooks.tasks import deliver_webhook

pytestmark = [pytest.mark.pipeline, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DURATION_S = 36
LOUD_FROM_S, LOUD_TO_S = 24, 27  # source seconds of the -6 dBFS passage
BURST_AT_S = 10  # broadcast second the chat burst is posted at
SEGMENT_S = 2.0


def _publish(stack: LiveStack, key: str, *, loud: bool) -> subprocess.Popen[bytes]:
    """Small frames (320x180, 15 fps, 1 s GOP) and a 440 Hz sine at -40 dBFS (the sine source is
    -18 dBFS), 34 dB louder between LOUD_FROM_S and LOUD_TO_S when ``loud``."""
    audio = "volume=-22dB"
    if loud:
        audio += f",volume=34dB:enable='between(t,{LOUD_FROM_S},{LOUD_TO_S - 0.001})'"
    args = [
        ffmpeg.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-filter_complex", f"[1:a]{audio},aformat=channel_layouts=stereo[a]",
        "-map", "0:v", "-map", "[a]", "-t", str(DURATION_S),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-g", "15", "-keyint_min", "15", "-sc_threshold", "0", "-b:v", "300k",
        "-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-ac", "2",
        "-f", "flv", f"{stack.rtmp_url}/{key}",
    ]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _session_of(stream_id: int) -> StreamSession:
    devstack.wait_until(lambda: StreamSession.objects.filter(stream_id=stream_id).exists(), 20, "a session")
    return StreamSession.objects.filter(stream_id=stream_id).order_by("-started_at")[0]


def _chat_burst(stream_id: int, count: int = 24) -> list[datetime]:
    """``count`` messages from 6 viewers as fast as the service takes them; their times."""
    viewers = [UserFactory.create() for _ in range(6)]
    times = []
    for i in range(count):
        message = chat_services.post_message(stream_id=stream_id, user=viewers[i % 6], text=f"what a moment {i}")
        times.append(message.created_at)
    return times


def _broadcast_to_the_end(stack: LiveStack, stream_id: int, publisher: subprocess.Popen[bytes]) -> StreamSession:
    session = _session_of(stream_id)
    # Scored on the worker while live (what beat does every HIGHLIGHTS_INTERVAL_SECONDS).
    while publisher.poll() is None:
        tasks.score_session.delay(session.pk)
        time.sleep(3)
    assert publisher.returncode == 0, publisher.stderr.read() if publisher.stderr else ""
    ended = stack.wait_session_ended(stream_id, timeout=90)
    tasks.score_sessions.delay()  # beat's next run: the final scoring of the ended session
    devstack.wait_until(lambda: keys.is_final(session.pk), 30, "the final scoring")
    return ended


def _clip_it_on_the_dashboard(base_url: str, owner, stream_id: int, suggestion: Suggestion) -> None:
    """The owner's dashboard, "Clip it" on ``suggestion``: what static/js/highlights.js posts."""
    with chromium() as context:
        sign_in(context, base_url, owner)
        page = context.new_page()
        page.goto(f"{base_url}/dashboard/streams/{stream_id}/")
        item = page.locator(f'#highlights li[data-suggestion="{suggestion.pk}"]')
        item.locator('button[data-action="clip"]').click()
        page.wait_for_function(
            f"""document.querySelector('#highlights li[data-suggestion="{suggestion.pk}"] [data-status]')"""
            ".textContent === 'Clip requested.'",
            timeout=20_000,
        )


def test_chat_burst_and_loud_passage_are_suggested(live_stack, live_server, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    owner = UserFactory.create()
    stream, key = make_stream(owner, title="Highlights", keep_recordings=True)
    with http_receiver() as receiver:
        webhook_services.create_endpoint(owner, url=receiver.url, events=["clip.suggested"])
        publisher = _publish(live_stack, key, loud=True)
        live_stack.wait_live(stream.pk)
        session = _session_of(stream.pk)
        devstack.wait_until(lambda: len(keys.segments(session.pk)) >= 1, 30, "the first measured segment")
        first = keys.segments(session.pk)[0]
        # The burst at a known broadcast second (program date-time = the ingest wall clock).
        devstack.wait_until(lambda: time.time() >= first.wall + BURST_AT_S, 40, "the burst's second")
        burst = _chat_burst(stream.pk)
        ended = _broadcast_to_the_end(live_stack, stream.pk, publisher)

        segments = keys.segments(session.pk)
        assert len(segments) >= DURATION_S / SEGMENT_S - 2
        # The loudness the worker measured: the passage ~34 LU above the rest.
        loud_true, loud_end = first.wall + LOUD_FROM_S, first.wall + LOUD_TO_S  # program date-times

        def overlap(s: keys.Segment) -> float:
            return min(s.end, loud_end) - max(s.wall, loud_true)

        inside = [s.loudness for s in segments if overlap(s) >= 0.5]
        outside = [s.loudness for s in segments if overlap(s) < -0.5 and s.seq > 0]
        assert inside, [(s.wall - first.wall, s.loudness) for s in segments]
        assert all(v is not None for v in inside + outside)
        assert min(inside) - max(outside) > 25, (inside, outside)

        found = list(Suggestion.objects.filter(session=session).order_by("-score"))
        assert found, [(s.wall - first.wall, s.loudness) for s in segments]
        # Made while live (the burst's was), kept and finalised after the end.
        assert any(s.created_at < ended.ended_at for s in found)
        assert all(s.final for s in found)

        def near(true_at: datetime) -> list[Suggestion]:
            """Suggestions whose peak segment is within one segment of ``true_at``."""
            before, after = timedelta(seconds=SEGMENT_S + 0.25), timedelta(seconds=2 * SEGMENT_S + 0.25)
            return [s for s in found if s.peak_at - before <= true_at <= s.peak_at + after]

        burst_at = burst[len(burst) // 2]
        chat_hits = near(burst_at)
        assert chat_hits, [(s.peak_at, s.reasons) for s in found]
        assert "a burst" in chat_hits[0].reasons["chat"]
        assert chat_hits[0].start <= burst[0]
        assert burst[-1] <= chat_hits[0].end
        loud_hits = near(datetime.fromtimestamp(loud_true, tz=UTC))
        assert loud_hits, [(s.peak_at, s.reasons) for s in found]
        assert "loud" in loud_hits[0].reasons["loudness"]
        # They are the top two suggestions.
        assert {chat_hits[0].pk, loud_hits[0].pk} == {s.pk for s in found[:2]}

        # One clip.suggested delivery per suggestion, delivered to the receiver.
        deliveries = list(Delivery.objects.filter(event="clip.suggested", stream_id=stream.pk))
        assert sorted(d.payload["data"]["suggestion"] for d in deliveries) == sorted(s.pk for s in found)
        for delivery in deliveries:  # the webhooks queue's task, run here (the stack's worker takes transcode+default)
            deliver_webhook.apply(args=(delivery.pk,))
        received = receiver.wait_for(len(found))
        assert len(received) == len(found)
        bodies = {r.json()["data"]["suggestion"]: r.json()["data"] for r in received}
        for suggestion in found:
            data = bodies[suggestion.pk]
            assert data["session"] == session.pk
            assert datetime.fromisoformat(data["start"]) == suggestion.start
            assert datetime.fromisoformat(data["end"]) == suggestion.end
        assert all(d.status == DeliveryStatus.SUCCEEDED for d in Delivery.objects.filter(event="clip.suggested"))

    # One click on the dashboard makes a clip of the loud moment (clips/, cut by the worker).
    top = loud_hits[0]
    _clip_it_on_the_dashboard(live_server.url, owner, stream.pk, top)
    clip = Clip.objects.get(stream=stream)
    assert (clip.owner_id, clip.session_id) == (owner.pk, session.pk)
    assert (clip.requested_start, clip.requested_end) == (top.start, top.end)
    devstack.wait_until(
        lambda: Clip.objects.get(pk=clip.pk).status in {ClipStatus.READY, ClipStatus.FAILED}, 60, "the clip cut"
    )
    clip.refresh_from_db()
    assert clip.status == ClipStatus.READY, clip.failure_reason
    assert clip.start is not None
    assert clip.end is not None
    # Whole segments around the suggested range (stream copy): within one segment at each end.
    assert abs((clip.start - top.start).total_seconds()) <= SEGMENT_S + 0.1
    assert abs((clip.end - top.end).total_seconds()) <= SEGMENT_S + 0.1
    assert storage.get_bytes(clip.video_key)
    assert Suggestion.objects.get(pk=top.pk).status == SuggestionStatus.CLIPPED


def test_quiet_broadcast_gets_no_suggestion(live_stack):
    owner = UserFactory.create()
    stream, key = make_stream(owner, title="Quiet")
    publisher = _publish(live_stack, key, loud=False)
    live_stack.wait_live(stream.pk)
    session = _session_of(stream.pk)
    _broadcast_to_the_end(live_stack, stream.pk, publisher)
    segments = keys.segments(session.pk)
    assert len(segments) >= DURATION_S / SEGMENT_S - 2  # measured, all of it
    assert all(s.loudness is not None for s in segments)
    assert Suggestion.objects.filter(session=session).count() == 0

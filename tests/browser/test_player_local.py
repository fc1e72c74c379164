"""The player in headless Chromium against HLS that ffmpeg writes locally (no pipeline): live
playback, the quality menu, offline -> live without reload, replays with seeking.

These pin the player's behaviour independent of the pipeline; test_watch.py repeats the
acceptance path end to end over RTMP and the edge.
"""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from livestream.events import send_event_on_commit
from streams import playback
from streams.models import SessionStatus, Stream, StreamSession, StreamStatus
from tests.browser import harness
from tests.browser.local_hls import live_ladder, static_server, vod_ladder
from tests.factories import make_stream

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def hls_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge")


@pytest.fixture(scope="module")
def web(django_db_setup: None, hls_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with static_server(hls_root) as edge, harness.asgi_server({"HLS_EDGE_URL": edge}, log) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with harness.chromium() as context:
        yield context


def _go_live(stream: Stream) -> None:
    """What the pipeline does when a publisher connects (status + event after commit). In a
    thread of its own: Playwright's event loop runs in the test's thread, and the channel layer
    is called through async_to_sync."""

    def work() -> None:
        try:
            with transaction.atomic():
                Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE, last_live_at=timezone.now())
                send_event_on_commit(stream.pk, "stream.live", {"stream": stream.pk})
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)


def _current_time(page: Any) -> float:
    return float(page.evaluate("window.livePlayer.video.currentTime"))


def test_live_playback_quality_menu_and_switch(web: str, hls_root: Path, browser: Any) -> None:
    stream, _ = make_stream(title="Local ladder")
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    with live_ladder(hls_root / "live" / str(stream.pk)):
        page = browser.new_page()
        page.goto(web + stream.get_absolute_url())
        page.wait_for_function("() => window.livePlayer.video.currentTime > 0.5", timeout=30_000)
        start = _current_time(page)
        page.wait_for_function(f"() => window.livePlayer.video.currentTime >= {start + 5}", timeout=20_000)

        heights = page.evaluate("window.livePlayer.hls.levels.map(l => l.height)")
        options = page.eval_on_selector_all("#quality option", "els => els.map(e => [e.value, e.textContent])")
        assert sorted(heights) == [180, 360]
        assert options[0][0] == "-1"
        assert options[0][1].startswith("Auto")
        assert [label for _, label in options[1:]] == ["360p", "180p"]
        assert page.is_enabled("#quality")

        low = heights.index(180)
        page.select_option("#quality", str(low))
        page.wait_for_function(
            f"() => window.livePlayer.hls.currentLevel === {low}"
            f" && document.getElementById('player-root').dataset.level === '{low}'",
            timeout=15_000,
        )
        after_switch = _current_time(page)
        page.wait_for_function(f"() => window.livePlayer.video.currentTime >= {after_switch + 1}", timeout=15_000)
        assert page.evaluate("window.livePlayer.video.videoHeight") == 180
        assert page.inner_text("#live-badge") == "LIVE"
        harness.screenshot(page, "local-watch-playing.png")
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        harness.screenshot(page, "local-watch-phone.png")
        page.close()


def test_offline_card_switches_to_player_without_reload(web: str, hls_root: Path, browser: Any) -> None:
    stream, _ = make_stream(title="Starts later")
    page = browser.new_page()
    page.goto(web + stream.get_absolute_url())
    assert page.is_visible("#offline-card")
    assert page.is_hidden("#player")
    assert page.inner_text("#live-badge") == "OFFLINE"
    harness.screenshot(page, "local-watch-offline.png")
    page.evaluate("window.__sameDocument = 42")

    with live_ladder(hls_root / "live" / str(stream.pk)):
        _go_live(stream)
        page.wait_for_function("() => window.livePlayer.video.currentTime > 1", timeout=45_000)
        assert page.evaluate("window.__sameDocument") == 42
        assert page.evaluate("window.livePlayer.transport") == "socket"
        assert page.is_hidden("#offline-card")
        assert page.inner_text("#live-badge") == "LIVE"
    page.close()


def test_replay_plays_from_start_and_seeks_to_middle(web: str, hls_root: Path, browser: Any) -> None:
    stream, _ = make_stream(title="Has replays")
    now = timezone.now()
    session = StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=now,
        ended_at=now,
        duration_s=20,
        is_replay=True,
    )
    vod_ladder(hls_root / playback.prefix_of(session), seconds=20)
    page = browser.new_page()
    page.goto(f"{web}/s/{stream.slug}/replays/{session.pk}/")
    page.wait_for_function("() => window.livePlayer.video.currentTime > 1", timeout=30_000)
    assert page.evaluate("window.livePlayer.video.played.start(0)") < 0.5
    duration = page.evaluate("window.livePlayer.video.duration")
    assert 19 <= duration <= 21
    middle = duration / 2
    page.evaluate(f"window.livePlayer.video.currentTime = {middle}")
    page.wait_for_function(
        f"() => !window.livePlayer.video.seeking && window.livePlayer.video.currentTime > {middle + 1}", timeout=20_000
    )
    assert _current_time(page) < middle + 8
    page.close()

"""The watch page's acceptance in headless Chromium, end to end through the real pipeline.

One broadcast serves the whole story (publishing is the expensive part): a viewer opens the
watch page while the stream is offline; the streamer publishes over RTMP (nginx-rtmp, ingest,
Celery transcoding ladder, S3, edge cache); the page switches to the player by itself (the
``stream.live`` event over the chat panel's WebSocket, no reload); video.currentTime advances by
5 s; the quality menu lists every rendition of the master and switching one works; the
directory shows the stream live with its thumbnail; the publisher stops; the page returns to
the offline card; the replay plays from the start and seeks to the middle.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from accounts.models import User
from streams.models import SessionStatus, StreamSession
from tests.browser import harness
from tests.factories import make_stream
from transcoding import thumbnails

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

BROADCAST_S = 30


@pytest.fixture(scope="module")
def web(live_stack: Any, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site under uvicorn (ASGI: pages and the chat socket), playing from the stack's edge."""
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with harness.asgi_server({"HLS_EDGE_URL": live_stack.edge_url}, log) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with harness.chromium() as context:
        yield context


def _player(page: Any, expression: str) -> Any:
    return page.evaluate(f"(() => {{ const p = window.livePlayer; return {expression}; }})()")


def _pipeline_state(stream_pk: int) -> str:
    from transcoding import playlists, state

    session = StreamSession.objects.filter(stream_id=stream_pk).order_by("-pk").first()
    if session is None:
        return "no session"
    total = state.chunk_count(session.pk)
    gaps = [seq for seq in range(total) if state.is_gap(session.pk, seq)]
    return f"session {session.status}, chunks {total}, published {len(playlists.published(session.pk))}, gaps {gaps}"


def _wait_advance(page: Any, seconds: float, timeout_ms: int, stream_pk: int) -> None:
    """Wait for the video to play ``seconds`` further; on a stall, say what the player and the
    pipeline were doing."""
    start = _player(page, "p.video.currentTime")
    try:
        page.wait_for_function(f"() => window.livePlayer.video.currentTime >= {start + seconds}", timeout=timeout_ms)
    except PlaywrightTimeoutError as exc:
        player = _player(
            page,
            "({t: p.video.currentTime, ready: p.video.readyState, paused: p.video.paused, errors: p.errors,"
            " history: p.history, now: Math.round(performance.now()),"
            " buffered: Array.from({length: p.video.buffered.length},"
            " (_, i) => [p.video.buffered.start(i), p.video.buffered.end(i)]),"
            " level: p.hls && p.hls.currentLevel,"
            " endSN: p.hls && p.hls.latestLevelDetails && p.hls.latestLevelDetails.endSN})",
        )
        raise AssertionError(
            f"playback stalled at {start:.2f} s; player {player}; pipeline {_pipeline_state(stream_pk)}"
        ) from exc


def test_watch_live_quality_offline_and_replay(live_stack: Any, web: str, browser: Any, user: User) -> None:
    stream, key = make_stream(user, title="Pipeline to browser", keep_recordings=True)
    page = browser.new_page()
    page.goto(web + stream.get_absolute_url())
    assert page.is_visible("#offline-card")
    assert page.is_hidden("#player")
    page.evaluate("window.__sameDocument = 42")
    holds: list[str] = []  # the player's blocking reloads (polls of a media playlist at the edge)
    page.on("request", lambda request: holds.append(request.url) if "_hold=" in request.url else None)

    # Offline -> live without reload: the pipeline's stream.live event reaches the page's socket.
    publisher = live_stack.publish(key, duration_s=BROADCAST_S)
    try:
        page.wait_for_function("() => window.livePlayer.video.currentTime > 0.5", timeout=90_000)
        assert page.evaluate("window.__sameDocument") == 42
        assert _player(page, "p.transport") == "socket"
        assert page.is_hidden("#offline-card")
        assert page.inner_text("#live-badge") == "LIVE"

        _wait_advance(page, 5, 30_000, stream.pk)
        # Live playlists are reloaded by blocking requests for the next segment, polled at the edge.
        assert _player(page, "p.hls.latestLevelDetails.canBlockReload") is True
        assert holds
        assert all(url.startswith(live_stack.edge_url) and "/live.m3u8?_hold=" in url for url in holds)

        # Quality menu: Auto + one entry per rendition of the master playlist.
        levels = _player(page, "p.hls.levels.map((l) => ({height: l.height, name: l.name}))")
        options = page.eval_on_selector_all("#quality option", "els => els.map(e => [e.value, e.textContent])")
        assert len(levels) >= 3
        assert options[0][0] == "-1"
        assert options[0][1].startswith("Auto")
        assert sorted(int(value) for value, _ in options[1:]) == list(range(len(levels)))
        heights = [level["height"] for level in levels]
        assert {720, 480, 360} <= set(heights)

        target = heights.index(min(heights))
        page.select_option("#quality", str(target))
        page.wait_for_function(
            f"() => window.livePlayer.hls.currentLevel === {target}"
            f" && document.getElementById('player-root').dataset.level === '{target}'"
            f" && window.livePlayer.video.videoHeight === {heights[target]}",
            timeout=30_000,
        )
        _wait_advance(page, 1, 20_000, stream.pk)
        shot = harness.screenshot(page, "watch-playing.png")
        assert shot.stat().st_size > 10_000

        # The directory lists it live, with a thumbnail cut from its newest segment.
        session_id = StreamSession.objects.get(stream=stream, status=SessionStatus.LIVE).pk
        assert thumbnails.make_thumbnail(session_id) == "updated"
        directory = browser.new_page()
        directory.goto(web + "/")
        directory.wait_for_function(
            "() => { const img = document.querySelector('.live-tiles img');"
            " return img && img.complete && img.naturalWidth === 320; }",
            timeout=15_000,
        )
        assert "Pipeline to browser" in directory.inner_text(".live-tiles")
        harness.screenshot(directory, "directory-live.png")
        directory.close()

        assert publisher.wait(timeout=BROADCAST_S + 60) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()

    # The broadcast ends: the page falls back to the offline card (still the same document).
    session: StreamSession = live_stack.wait_session_ended(stream.pk, timeout=120)
    page.wait_for_selector("#offline-card", state="visible", timeout=60_000)
    assert page.evaluate("window.__sameDocument") == 42
    page.close()

    # The replay: VOD from the start, seekable to the middle.
    assert session.is_replay
    replay = browser.new_page()
    replay.goto(f"{web}/s/{stream.slug}/replays/{session.pk}/")
    replay.wait_for_function("() => window.livePlayer.video.currentTime > 1", timeout=60_000)
    assert _player(replay, "p.video.played.start(0)") < 0.5
    duration = _player(replay, "p.video.duration")
    assert BROADCAST_S - 3 <= duration <= BROADCAST_S + 3
    middle = duration / 2
    replay.evaluate(f"window.livePlayer.video.currentTime = {middle}")
    replay.wait_for_function(
        f"() => !window.livePlayer.video.seeking && window.livePlayer.video.currentTime > {middle + 1}",
        timeout=30_000,
    )
    assert _player(replay, "p.video.currentTime") < middle + 10
    harness.screenshot(replay, "replay-playing.png")
    replay.close()

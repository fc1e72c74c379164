"""LL-HLS in headless Chromium through the real pipeline (ADR 0031): the watch page plays a
low-latency stream with hls.js in low-latency mode (partial segments, blocking playlist reloads
with _HLS_msn/_HLS_part answered by the live origin behind the edge) for more than 20 s, and
the DVR window can be seeked into and left with "Go live", and a viewer whose connection
cannot carry the source drops to the lower rendition and keeps playing.

Counted in what the page asked for and how far the video got, not in latency (the machine is
shared; the glass-to-glass bench measures latency)."""

import re
from collections.abc import Iterator
from typing import Any

import pytest

from accounts.models import User
from tests.browser import harness
from tests.factories import make_stream

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

BROADCAST_S = 90
PLAY_S = 22
BEHIND = "window.livePlayer.livePosition() - window.livePlayer.video.currentTime"
PART = re.compile(r"/seg_\d+\.p\d+\.m4s$")


@pytest.fixture(scope="module")
def web(live_stack: Any, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with harness.asgi_server({"HLS_EDGE_URL": live_stack.edge_url, "DVR_WINDOW_SECONDS": "600"}, log) as base:
        yield base


def _player(page: Any, expression: str) -> Any:
    return page.evaluate(f"(() => {{ const p = window.livePlayer; return {expression}; }})()")


def test_ll_hls_plays_in_low_latency_mode_and_the_dvr_window_works(live_stack: Any, web: str, user: User, settings):
    settings.TRANSCODE_LADDER = ["360p:360:600:64"]  # the copied source + one encoded rung
    stream, key = make_stream(user, title="LL player", latency_mode="low", keep_recordings=False)
    publisher = live_stack.publish(key, duration_s=BROADCAST_S, gop_s=2.0, noise=True)
    try:
        live_stack.wait_live(stream.pk)
        live_stack.wait_segments(stream.pk, 3)
        with harness.chromium() as browser:
            page = browser.new_page()
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url) if r.url.startswith(live_stack.edge_url) else None)
            page.goto(web + stream.get_absolute_url())
            page.wait_for_function("() => window.livePlayer.video.currentTime > 0.5", timeout=40_000)

            # hls.js found LL playlists and runs in low-latency mode.
            state = _player(page, "({native: p.native, history: p.history, errors: p.errors, hls: !!p.hls})")
            assert state["hls"], state
            assert _player(page, "p.hls.config.lowLatencyMode") is True
            part_target = _player(page, "p.hls.levels[Math.max(0, p.hls.currentLevel)].details.partTarget")
            assert 0.2 <= part_target <= 1.0, part_target
            assert _player(page, "p.lowLatency") is True

            # Plays for more than 20 s.
            start = _player(page, "p.video.currentTime")
            page.wait_for_timeout(PLAY_S * 1000)
            played = _player(page, "p.video.currentTime") - start
            assert played >= PLAY_S - 5, (played, _player(page, "p.history"), _player(page, "p.errors"))
            # ...from parts and blocking reloads through the edge, not by polling whole segments.
            blocking = [u for u in asked if "_HLS_msn=" in u and "_HLS_part=" in u]
            parts = [u for u in asked if PART.search(u.split("?")[0])]
            assert len(blocking) >= 20, asked[-20:]
            # ...and delta updates of the DVR window (EXT-X-SKIP), not the whole window each time.
            assert any("_HLS_skip=YES" in u for u in blocking), blocking[-5:]
            assert len(parts) >= 20, asked[-20:]
            assert not any("_hold=" in u for u in asked if PART.search(u) or "_HLS_part=" in u)
            harness.screenshot(page, "llhls-at-edge.png")

            # The DVR window: seek 10 s back, stay there, then "Go live".
            page.wait_for_function(f"() => {BEHIND} < 5", timeout=15_000)
            page.evaluate("window.livePlayer.video.currentTime = window.livePlayer.livePosition() - 10")
            page.wait_for_function(
                "() => document.getElementById('live-badge').dataset.edge === 'false'", timeout=10_000
            )
            assert page.is_visible("#jump-live")
            page.wait_for_timeout(4_000)
            assert page.evaluate(BEHIND) > 6, _player(page, "p.history")
            page.click("#jump-live")
            page.wait_for_function(
                "() => document.getElementById('live-badge').dataset.edge === 'true'", timeout=15_000
            )
            assert page.evaluate(BEHIND) < 5
            at_edge = _player(page, "p.video.currentTime")
            page.wait_for_function(f"() => window.livePlayer.video.currentTime > {at_edge + 2}", timeout=15_000)

            # A connection that cannot carry the source any more: hls.js drops to the lower
            # rendition (the rendition reports make it one blocking request) and keeps playing.
            assert _player(page, "p.hls.levels[p.hls.currentLevel].height") == 720
            cdp = page.context.new_cdp_session(page)
            kbps = 1200  # the noisy source needs ~2500 kbit/s, the 360p rung ~700
            cdp.send(
                "Network.emulateNetworkConditions",
                {"offline": False, "latency": 5, "downloadThroughput": kbps * 125, "uploadThroughput": kbps * 125},
            )
            before = _player(page, "p.video.currentTime")
            page.wait_for_function(
                "() => window.livePlayer.hls.levels[window.livePlayer.hls.currentLevel].height === 360", timeout=30_000
            )
            page.wait_for_timeout(6_000)
            assert _player(page, "p.video.currentTime") - before > 6, _player(page, "({h: p.history, e: p.errors})")
            page.close()
    finally:
        publisher.kill()
        publisher.wait(timeout=10)
        # Let the pipeline end the session before the test's data is flushed (a write racing the
        # flush deadlocks it).
        live_stack.wait_session_ended(stream.pk, timeout=60)

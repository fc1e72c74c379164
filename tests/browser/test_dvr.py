"""The DVR window in headless Chromium (ADR 0029): the player gets each rendition's DVR window
(``index.m3u8``) while it holds on the short ``live.m3u8``, the viewer seeks back into it and
stays there (the LIVE badge goes off, "Go live" shows), then "Go live" returns to the edge.

The HLS is ffmpeg's, served the way the origin serves a live session (``local_hls._DvrHandler``):
what is pinned here is the player; tests/pipeline/test_dvr_window.py pins the origin's playlists.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.models import Stream, StreamStatus
from tests.browser import harness
from tests.browser.local_hls import live_ladder, static_server
from tests.factories import make_stream

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BEHIND = "window.livePlayer.livePosition() - window.livePlayer.video.currentTime"


@pytest.fixture(scope="module")
def hls_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge")


@pytest.fixture(scope="module")
def web(django_db_setup: None, hls_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    env = {"HLS_EDGE_URL": "", "DVR_WINDOW_SECONDS": "600"}
    with static_server(hls_root, dvr=True) as edge:
        env["HLS_EDGE_URL"] = edge
        with harness.asgi_server(env, log) as base:
            yield base


def test_seek_back_into_the_dvr_window_and_go_live(web: str, hls_root: Path) -> None:
    stream, _ = make_stream(title="DVR")
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    with harness.chromium() as browser, live_ladder(hls_root / "live" / str(stream.pk), keep_all=True):
        page = browser.new_page()
        playlists: list[str] = []
        page.on("request", lambda r: playlists.append(r.url) if ".m3u8" in r.url else None)
        page.goto(web + stream.get_absolute_url())
        assert page.evaluate("JSON.parse(document.getElementById('player-config').textContent).dvrWindow") == 600
        page.wait_for_function("() => window.livePlayer.video.currentTime > 0.5", timeout=30_000)
        # The live window is 6 s; the seekable range grows past it: the DVR window is loaded.
        page.wait_for_function(
            "() => { const s = window.livePlayer.video.seekable;"
            " return s.length && s.end(s.length - 1) - s.start(0) > 16; }",
            timeout=40_000,
        )
        page.wait_for_function(f"() => {BEHIND} < 5", timeout=15_000)
        assert page.get_attribute("#live-badge", "data-edge") == "true"
        assert page.is_hidden("#jump-live")
        assert any(u.split("?")[0].endswith("/index.m3u8") for u in playlists)
        assert any("/live.m3u8?_hold=" in u for u in playlists)  # the hold polls the short one
        harness.screenshot(page, "dvr-at-edge.png")

        # Seek back 12 s into the window: DVR playback, not pulled back to the edge.
        page.evaluate("window.livePlayer.video.currentTime = window.livePlayer.livePosition() - 12")
        page.wait_for_function("() => document.getElementById('live-badge').dataset.edge === 'false'", timeout=5_000)
        assert page.is_visible("#jump-live")
        assert page.inner_text("#jump-live") == "Go live"
        assert "behind" in (page.get_attribute("#live-badge", "class") or "")
        assert page.evaluate("window.livePlayer.dvr") is True
        behind_then = page.evaluate(BEHIND)
        then = page.evaluate("window.livePlayer.video.currentTime")
        page.wait_for_timeout(6_000)  # several playlist updates: hls.js would have synced by now
        assert page.evaluate("window.livePlayer.video.currentTime") > then + 3  # still playing
        assert page.evaluate(BEHIND) > 8, (behind_then, page.evaluate("window.livePlayer.history"))
        assert page.get_attribute("#live-badge", "data-edge") == "false"
        harness.screenshot(page, "dvr-behind.png")

        page.click("#jump-live")
        page.wait_for_function("() => document.getElementById('live-badge').dataset.edge === 'true'", timeout=10_000)
        assert page.evaluate(BEHIND) < 5
        assert page.evaluate("window.livePlayer.dvr") is False
        assert page.is_hidden("#jump-live")
        at_edge = page.evaluate("window.livePlayer.video.currentTime")
        page.wait_for_function(f"() => window.livePlayer.video.currentTime > {at_edge + 2}", timeout=15_000)
        assert "behind" not in (page.get_attribute("#live-badge", "class") or "")
        page.close()

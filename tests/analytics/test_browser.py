"""Analytics in headless Chromium: the charts render from the embedded data, the live health
panel shows the pipeline falling behind, and qoe.js reports a real hls.js player's startup,
heartbeats and rendition switch to the QoE endpoint.

The web app runs in this process (pytest-django's live_server thread), so the documents the
test writes in mongomock are the ones the pages read, and the reports land where the test
reads them.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from analytics.documents import IngestSample, PlaybackEvent, SessionMetadata, ViewerSample
from livestream import devstack
from streams import playback
from tests.analytics.helpers import stream_with_session
from tests.browser import harness
from tests.browser.local_hls import live_ladder, static_server

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser() -> Iterator[Any]:
    with harness.chromium() as context:
        yield context


def test_charts_render_and_live_panel_warns(live_server: Any, browser: Any, user: User, settings: Any) -> None:
    settings.ANALYTICS_LAG_WARN_S = 6.0
    stream, session = stream_with_session(user, minutes_ago=20)
    start = session.started_at.replace(second=0, microsecond=0) + timedelta(minutes=1)  # minute-aligned buckets
    ViewerSample.objects.insert(
        [
            ViewerSample(
                stream_id=stream.pk,
                session_id=session.pk,
                at=start + timedelta(seconds=15 * i),
                viewers=10 + i % 7,
                interval_s=15,
            )
            for i in range(40)
        ]
    )
    IngestSample.objects.insert(
        [
            IngestSample(
                stream_id=stream.pk,
                session_id=session.pk,
                at=start + timedelta(seconds=2 * i),
                bitrate=3_000_000 + 1000 * i,
                fps=30.0,
                lag_s={"720p": 1.0 + i / 100},
                queue_depth=i % 3,
            )
            for i in range(120)
        ]
    )
    SessionMetadata(
        stream_id=stream.pk, session_id=session.pk, fps=30.0, width=1280, height=720, video_codec="h264"
    ).save()
    IngestSample(
        stream_id=stream.pk,
        session_id=session.pk,
        at=datetime.now(UTC),
        bitrate=2_500_000,
        fps=29.0,
        lag_s={"720p": 11.5, "source": 0.4},
        queue_depth=2,
    ).save()
    harness.sign_in(browser, live_server.url, user)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/analytics/streams/{stream.pk}/sessions/{session.pk}/")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('viewers-chart'))", timeout=15_000
    )
    points = page.evaluate("Chart.getChart(document.getElementById('viewers-chart')).data.labels.length")
    ingest_points = page.evaluate(
        "Chart.getChart(document.getElementById('ingest-chart')).data.datasets[0].data.length"
    )
    assert points == 10  # 40 samples of 15 s in 60 s buckets
    assert ingest_points >= 24  # 240 s of 2 s samples in 10 s buckets (+ the newest)
    assert page.evaluate("Chart.getChart(document.getElementById('lag-chart')).data.datasets.length") == 3
    harness.screenshot(page, "analytics-session.png")

    page.goto(f"{live_server.url}/analytics/streams/{stream.pk}/")
    page.wait_for_selector('#live-health .warnings li[data-code="lag"]', timeout=15_000)
    warning = page.text_content('#live-health .warnings li[data-code="lag"]') or ""
    assert "720p" in warning
    assert "source" not in warning
    assert page.text_content('#live-health [data-field="bitrate"]') == "2.50 Mb/s"
    assert "behind" in (page.get_attribute("#live-health", "class") or "")
    page.wait_for_function("() => Chart.getChart(document.getElementById('history-chart'))", timeout=10_000)
    harness.screenshot(page, "analytics-stream.png")
    assert errors == []


def test_qoe_reporter_sends_player_events(
    live_server: Any, browser: Any, user: User, settings: Any, tmp_path: Path
) -> None:
    stream, session = stream_with_session(user)
    session_dir = tmp_path / playback.prefix_of(session)
    with static_server(tmp_path) as edge, live_ladder(session_dir):
        # The stream's stable master lists the live session's playlists (as the pipeline's does):
        # the player starts only on a master of the session the page shows.
        lines = (session_dir / "master.m3u8").read_text().splitlines()
        stable = [line if not line or line.startswith("#") else f"{session_dir.name}/{line}" for line in lines]
        (session_dir.parent / "master.m3u8").write_text("\n".join(stable) + "\n")
        settings.HLS_EDGE_URL = edge
        page = browser.new_page()
        page.goto(live_server.url + stream.get_absolute_url())
        if not page.evaluate("Boolean(window.liveQoe)"):  # until the watch page includes it
            page.add_script_tag(url=f"{live_server.url}/static/js/qoe.js")
        page.wait_for_function("() => window.livePlayer.video.currentTime > 0.5", timeout=30_000)
        page.wait_for_function("() => window.liveQoe && window.liveQoe.pending() > 0", timeout=10_000)
        low = page.evaluate("window.livePlayer.hls.levels.findIndex(l => l.height === 180)")
        page.evaluate(f"window.livePlayer.setQuality({low})")
        page.wait_for_function(f"() => window.livePlayer.hls.currentLevel === {low}", timeout=15_000)
        time.sleep(11)  # one heartbeat period
        page.evaluate("window.liveQoe.flush()")

        def reported() -> bool:
            kinds = {e.kind for e in PlaybackEvent.objects(stream_id=stream.pk)}
            return {"startup", "heartbeat", "switch"} <= kinds

        devstack.wait_until(reported, 15, "QoE reports")
    events = list(PlaybackEvent.objects(stream_id=stream.pk))
    assert {e.session_id for e in events} == {session.pk}
    assert len({e.viewer_id for e in events}) == 1
    startup = next(e for e in events if e.kind == "startup")
    assert 0 < startup.value < 30
    assert any(e.kind == "switch" and e.rendition == "180p" for e in events)
    heartbeats = [e for e in events if e.kind == "heartbeat"]
    assert 0 < sum(e.value for e in heartbeats) <= 30


def test_admin_history_page_in_the_browser(live_server: Any, browser: Any, user: User) -> None:
    from streams import services
    from tests.factories import UserFactory, make_stream

    admin = UserFactory.create(is_staff=True, is_superuser=True)
    stream, _ = make_stream(user, title="Before")
    services.update_stream(stream, title="After", description="new text", keep_recordings=False)
    harness.sign_in(browser, live_server.url, admin)
    page = browser.new_page()
    page.goto(f"{live_server.url}/admin/streams/stream/{stream.pk}/history/")
    rows = page.locator("#change-history tbody tr")
    assert rows.count() == 2
    page.click("#change-history tbody tr:last-child a.button")  # restore the first version
    page.wait_for_selector("input[type=submit]")
    page.click("input[type=submit]")
    page.wait_for_selector("#change-history")
    assert page.locator("#change-history tbody tr").count() == 3
    assert "restore of version" in (page.text_content("#change-history tbody tr:first-child") or "")
    harness.screenshot(page, "analytics-admin-history.png")
    stream.refresh_from_db()
    assert stream.title == "Before"

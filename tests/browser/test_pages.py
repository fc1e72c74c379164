"""Server-rendered viewer pages (no browser): what each state shows, 404s, escaping, framing.

The browser tests in this folder prove that the pages actually play; these pin down the HTML
contract player.js reads (player-config JSON, element ids) and the access rules.
"""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from streams.models import SessionStatus, Stream, StreamSession, StreamStatus
from tests.factories import make_stream

pytestmark = pytest.mark.django_db


def _config(html: str) -> dict[str, object]:
    start = html.index('<script id="player-config" type="application/json">') + len(
        '<script id="player-config" type="application/json">'
    )
    return dict(json.loads(html[start : html.index("</script>", start)]))


def _ended_session(stream: Stream, *, minutes_ago: int, replay: bool) -> StreamSession:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    return StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=started,
        ended_at=started + timedelta(minutes=2),
        duration_s=120,
        is_replay=replay,
        storage_prefix=f"live/{stream.pk}/x",
    )


def test_offline_watch_page_shows_card_with_last_broadcast_and_no_playing_video(client: Client) -> None:
    stream, _ = make_stream(title="Cooking <b>night</b>")
    _ended_session(stream, minutes_ago=90, replay=True)
    response = client.get(stream.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="offline-card"' in html
    assert "Last broadcast" in html
    assert "Cooking &lt;b&gt;night&lt;/b&gt;" in html
    assert "<b>night</b>" not in html
    config = _config(html)
    assert config["live"] is False
    assert config["mode"] == "live"
    assert config["src"] == f"http://127.0.0.1:8080/live/{stream.pk}/master.m3u8"
    assert config["statusUrl"] == reverse("streams:status", args=[stream.slug])
    assert "vendor/hls.min.js" in html
    assert "cdn" not in html.lower()


def test_live_watch_page_has_player_quality_menu_and_embed_code(client: Client) -> None:
    stream, _ = make_stream(title='Say "hi"')
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    html = client.get(stream.get_absolute_url()).content.decode()
    assert _config(html)["live"] is True
    assert '<label class="quality" for="quality">' in html
    assert 'id="live-badge"' in html
    assert 'id="viewer-count">0<' in html
    # The embed code is attribute-escaped inside the input's value.
    assert f"/embed/{stream.slug}/" in html
    assert "title=&quot;Say &amp;quot;hi&amp;quot;&quot;" in html


def test_replays_listed_and_replay_page_plays_vod(client: Client) -> None:
    stream, _ = make_stream()
    kept = _ended_session(stream, minutes_ago=30, replay=True)
    not_kept = _ended_session(stream, minutes_ago=60, replay=False)
    html = client.get(stream.get_absolute_url()).content.decode()
    url = reverse("streams:replay", args=[stream.slug, kept.pk])
    assert url in html
    assert reverse("streams:replay", args=[stream.slug, not_kept.pk]) not in html
    replay = client.get(url)
    assert replay.status_code == 200
    config = _config(replay.content.decode())
    assert config == {
        "mode": "vod",
        "src": f"http://127.0.0.1:8080/{kept.storage_prefix}/master.m3u8",  # the stored prefix
        "live": False,
        "streamId": stream.pk,
        "sessionId": kept.pk,
    }
    assert client.get(reverse("streams:replay", args=[stream.slug, not_kept.pk])).status_code == 404
    other, _ = make_stream()
    assert client.get(reverse("streams:replay", args=[other.slug, kept.pk])).status_code == 404


def test_unknown_slug_is_404_everywhere(client: Client) -> None:
    for name in ("watch", "embed", "status"):
        assert client.get(reverse(f"streams:{name}", args=["no-such-stream"])).status_code == 404


def test_status_endpoint(client: Client) -> None:
    stream, _ = make_stream()
    response = client.get(reverse("streams:status", args=[stream.slug]))
    assert response.json() == {
        "status": "offline",
        "viewer_count": 0,
        "src": f"http://127.0.0.1:8080/live/{stream.pk}/master.m3u8",
    }
    assert response["Cache-Control"] == "no-store"
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    assert client.get(reverse("streams:status", args=[stream.slug])).json()["status"] == "live"


def test_embed_is_frameable_and_watch_page_is_not(client: Client) -> None:
    stream, _ = make_stream()
    embed = client.get(reverse("streams:embed", args=[stream.slug]))
    assert embed.status_code == 200
    assert "X-Frame-Options" not in embed
    assert 'class="topbar"' not in embed.content.decode()
    assert client.get(stream.get_absolute_url())["X-Frame-Options"] == "DENY"


def test_directory_lists_live_first_with_thumbnail_and_viewers(client: Client) -> None:
    live, _ = make_stream(title="Live one")
    recent, _ = make_stream(title="Was live")
    make_stream(title="Never live")
    now = timezone.now()
    Stream.objects.filter(pk=live.pk).update(status=StreamStatus.LIVE, last_live_at=now)
    Stream.objects.filter(pk=recent.pk).update(last_live_at=now - timedelta(hours=1))
    html = client.get(reverse("streams:directory")).content.decode()
    assert html.index("Live one") < html.index("Recently live") < html.index("Was live")
    assert "Never live" not in html
    assert f"http://127.0.0.1:8080/live/{live.pk}/thumb.jpg" in html
    assert "0 watching" in html

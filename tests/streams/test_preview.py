"""Private preview (ADR 0034): a broadcast that starts in preview exists for its owner only
(watch page, embed, status, directory, REST API, chat API) and tells nobody it is live (no
``stream.live`` webhook, no public socket event); "Go public" (dashboard or API) opens it and
sends ``stream.live`` then. Its HLS is at no guessable path while private ("Privacy of the
preview": no stable master or thumbnail, the session's path carries an HMAC tag)."""

import json
import subprocess

import pytest
import requests
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from livestream.events import stream_group
from streams import playback, sessions
from streams.models import Stream
from tests.factories import make_stream
from tests.fixtures.stack import latest_session
from tests.webhooks.servers import http_receiver
from transcoding import storage, thumbnails
from webhooks import services as webhooks
from webhooks.models import Delivery
from webhooks.tasks import deliver_webhook

pytestmark = pytest.mark.django_db(transaction=True)


def _pages(stream: Stream) -> list[str]:
    return [
        reverse("streams:watch", args=[stream.slug]),
        reverse("streams:embed", args=[stream.slug]),
        reverse("streams:status", args=[stream.slug]),
    ]


def _api(stream: Stream) -> list[str]:
    return [
        f"/api/v1/streams/{stream.pk}/",
        f"/api/v1/streams/{stream.pk}/live/",
        f"/api/v1/streams/{stream.pk}/sessions/",
        f"/api/v1/streams/{stream.pk}/chat/messages/",
    ]


def _clients(user, other_user) -> dict[str, tuple[Client, APIClient]]:
    owner_page, other_page = Client(), Client()
    owner_page.force_login(user)
    other_page.force_login(other_user)
    owner_api, other_api = APIClient(), APIClient()
    owner_api.force_authenticate(user)
    other_api.force_authenticate(other_user)
    return {
        "owner": (owner_page, owner_api),
        "other": (other_page, other_api),
        "anonymous": (Client(), APIClient()),
    }


def _listed(api: APIClient, stream: Stream) -> bool:
    ids = [s["id"] for s in api.get("/api/v1/streams/?page_size=100").json()["results"]]
    return stream.pk in ids


def _directory_lists(client: Client, stream: Stream) -> bool:
    return reverse("streams:watch", args=[stream.slug]) in client.get(reverse("streams:directory")).content.decode()


def test_preview_is_invisible_to_others_until_it_goes_public(user, other_user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    stream, key = make_stream(user, title="Preview show", start_in_preview=True)
    clients = _clients(user, other_user)
    with http_receiver() as receiver:
        webhooks.create_endpoint(user, url=receiver.url, events=["stream.live", "stream.offline"])

        grant = sessions.start_publish(key)  # what nginx-rtmp's on_publish calls
        stream.refresh_from_db()
        assert stream.status == "live"
        assert stream.in_preview
        assert grant.session.is_preview

        # Nobody is told: no webhook delivery.
        assert not Delivery.objects.filter(event="stream.live").exists()

        # The owner sees everything; others get 404 everywhere and no listing.
        page, api = clients["owner"]
        for url in _pages(stream):
            assert page.get(url).status_code == 200, url
        for url in _api(stream):
            assert api.get(url).status_code == 200, url
        assert _listed(api, stream)
        assert not _directory_lists(page, stream)  # the directory lists public broadcasts only
        assert "Private preview" in page.get(reverse("streams:manage", args=[stream.pk])).content.decode()
        for who in ("other", "anonymous"):
            page, api = clients[who]
            for url in _pages(stream):
                assert page.get(url).status_code == 404, (who, url)
            for url in _api(stream):
                assert api.get(url).status_code == 404, (who, url)
            assert not _listed(api, stream), who
            assert not _directory_lists(page, stream), who
            # Nor can they make it public (anonymous: sign in first).
            expected = 404 if who == "other" else 401
            assert api.post(f"/api/v1/streams/{stream.pk}/go-public/").status_code == expected

        # Go public (API): visible, listed, stream.live sent now.
        response = clients["owner"][1].post(f"/api/v1/streams/{stream.pk}/go-public/")
        assert response.status_code == 200, response.content
        assert response.json()["in_preview"] is False
        for who in ("other", "anonymous"):
            page, api = clients[who]
            for url in _pages(stream):
                assert page.get(url).status_code == 200, (who, url)
            assert api.get(f"/api/v1/streams/{stream.pk}/").status_code == 200
            assert _listed(api, stream)
            assert _directory_lists(page, stream)

        deliveries = list(Delivery.objects.filter(event="stream.live"))
        assert len(deliveries) == 1
        deliver_webhook.apply(args=(deliveries[0].pk,))
        received = receiver.wait_for(1)
        assert received[0].headers["X-Livestream-Event"] == "stream.live"
        assert received[0].json()["data"]["session"] == grant.session.pk

        # Twice: 409 with the shared error body.
        again = clients["owner"][1].post(f"/api/v1/streams/{stream.pk}/go-public/")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "not_in_preview"


def test_dashboard_go_public_and_reconnect_stays_private(user, other_user, settings):
    settings.RECONNECT_GRACE_SECONDS = 30
    stream, key = make_stream(user, title="Preview dash")
    owner = Client()
    owner.force_login(user)
    # The per-stream setting, from the dashboard form.
    form = {"title": "Preview dash", "latency_mode": "normal", "start_in_preview": "on", "keep_recordings": "on"}
    assert owner.post(reverse("streams:manage", args=[stream.pk]), form).status_code == 302
    stream.refresh_from_db()
    assert stream.start_in_preview

    grant = sessions.start_publish(key)
    # The publisher drops and comes back within the grace period: still a private preview,
    # and neither the drop nor the return was announced.
    sessions.disconnect(grant.session.pk, grant.connection)
    again = sessions.start_publish(key)
    assert again.session.pk == grant.session.pk
    stream.refresh_from_db()
    assert stream.in_preview
    assert not Delivery.objects.exists()  # no endpoint needed: enqueue writes none without one
    other = Client()
    other.force_login(other_user)
    assert other.get(reverse("streams:watch", args=[stream.slug])).status_code == 404

    response = owner.post(reverse("streams:go_public", args=[stream.pk]), follow=True)
    assert response.status_code == 200
    assert "You are public" in response.content.decode()
    assert other.get(reverse("streams:watch", args=[stream.slug])).status_code == 200
    stream.refresh_from_db()
    assert not stream.in_preview
    grant.session.refresh_from_db()
    assert grant.session.went_public_at is not None
    # Not in preview any more: the dashboard action says so instead of failing.
    response = owner.post(reverse("streams:go_public", args=[stream.pk]), follow=True)
    assert "no private preview" in response.content.decode()


def test_a_preview_never_made_public_is_not_kept_as_a_replay(user, settings):
    settings.RECONNECT_GRACE_SECONDS = 0
    stream, key = make_stream(user, title="Private rehearsal", start_in_preview=True, keep_recordings=True)
    grant = sessions.start_publish(key)
    sessions.disconnect(grant.session.pk, grant.connection)
    sessions.begin_ending(grant.session.pk)
    ended = sessions.end_session(grant.session.pk, duration_s=30.0)
    assert ended is not None
    assert not ended.is_replay
    stream.refresh_from_db()
    assert not stream.in_preview


def test_public_socket_hears_nothing_until_go_public(user):
    """The watch pages' group (``stream.<id>``): a marker sent while the preview is on air is the
    first thing it carries, then ``stream.live`` from going public."""
    stream, key = make_stream(user, title="Socket preview", start_in_preview=True)
    layer = get_channel_layer()

    async def scenario() -> tuple[int, dict, dict]:
        channel = await layer.new_channel()
        await layer.group_add(stream_group(stream.pk), channel)
        grant = await sync_to_async(sessions.start_publish)(key)
        await layer.group_send(stream_group(stream.pk), {"type": "marker"})
        await sync_to_async(sessions.go_public)(stream.pk)
        first = await layer.receive(channel)
        second = await layer.receive(channel)
        return grant.session.pk, first, second

    session_id, first, second = async_to_sync(scenario)()
    assert first["type"] == "marker"
    assert (second["event"], second["data"]["session"]) == ("stream.live", session_id)


def test_chat_socket_of_a_preview_is_the_owners_only(user, other_user):
    """The watch page's socket joins through ``chat.selectors.join_state``: a private preview does
    not exist for others there either (so no frame of it, ``stream.ready`` included, reaches them)."""
    from django.contrib.auth.models import AnonymousUser

    from chat.selectors import join_state

    stream, key = make_stream(user, title="Chat preview", start_in_preview=True)
    sessions.start_publish(key)
    assert join_state(stream.pk, user, 10) is not None
    assert join_state(stream.pk, other_user, 10) is None
    assert join_state(stream.pk, AnonymousUser(), 10) is None
    sessions.go_public(stream.pk)
    assert join_state(stream.pk, other_user, 10) is not None


def _status(url: str) -> int:
    return requests.get(url, timeout=10).status_code


@pytest.mark.pipeline
def test_preview_over_rtmp_then_public(live_stack, user, other_user, settings):
    """A real publish (nginx-rtmp, on_publish, ingest, workers) of a preview stream: playable for
    its owner (its session's own master, at an unguessable path), invisible to others, nothing at
    a guessable path (stable master, thumbnail, the session without its tag), no stream.live
    until the owner goes public; then the stable master appears and plays."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    stream, key = make_stream(user, title="RTMP preview", start_in_preview=True)
    clients = _clients(user, other_user)
    edge = live_stack.edge_url
    stable = f"{playback.stream_prefix(stream.pk)}/master.m3u8"
    with http_receiver() as receiver:
        webhooks.create_endpoint(user, url=receiver.url, events=["stream.live"])
        publisher = live_stack.publish(key, duration_s=24)
        try:
            live_stack.wait_live(stream.pk)
            session = latest_session(stream.pk)
            own = playback.replay_url(session)  # the session's master, under <session>-<tag>/
            # The owner's API and watch page give the session's own master, and it plays.
            assert clients["owner"][1].get(f"/api/v1/streams/{stream.pk}/").json()["playback_url"] == own
            watch = clients["owner"][0].get(reverse("streams:watch", args=[stream.slug]))
            assert watch.status_code == 200
            assert json.dumps(own) in watch.content.decode()
            renditions = live_stack.wait_segments(stream.pk, 1, master_url=own)
            stream.refresh_from_db()
            assert stream.in_preview
            for who in ("other", "anonymous"):
                page, api = clients[who]
                assert page.get(reverse("streams:watch", args=[stream.slug])).status_code == 404, who
                assert api.get(f"/api/v1/streams/{stream.pk}/").status_code == 404, who
                assert not _directory_lists(page, stream), who
            assert not Delivery.objects.filter(event="stream.live").exists()

            # Nothing at a guessable path: no stable master, no stable thumbnail (the preview's
            # own is under its session), in S3 or through the edge.
            assert thumbnails.make_thumbnail(session.pk) == "updated"
            assert storage.get_bytes(stable) is None
            assert storage.get_bytes(thumbnails.thumbnail_key(stream.pk)) is None
            assert storage.get_bytes(thumbnails.session_thumbnail_key(session)) is not None
            assert _status(f"{edge}/{stable}") == 404
            assert _status(thumbnails.thumbnail_url(stream.pk)) == 404
            # The session's path with a wrong tag, or without one (the old layout), is a 404 at
            # the edge and at the live origin; with its tag the same playlist is there.
            name, url = next(iter(renditions.items()))
            tagged = playback.prefix_of(session)
            wrong = f"{playback.stream_prefix(stream.pk)}/{session.pk}-{'0' * 16}"
            untagged = f"{playback.stream_prefix(stream.pk)}/{session.pk}"
            assert url.startswith(f"{edge}/{tagged}/")
            assert _status(url) == 200
            for prefix in (wrong, untagged):
                assert _status(f"{edge}/{prefix}/master.m3u8") == 404, prefix
                for kind in ("live", "index"):
                    assert _status(f"{edge}/{prefix}/{name}/{kind}.m3u8") == 404, (prefix, kind)
                    origin = clients["anonymous"][0].get(f"/internal/origin/{prefix}/{name}/{kind}.m3u8")
                    assert origin.status_code == 404, (prefix, kind)
            assert clients["anonymous"][0].get(f"/internal/origin/{tagged}/{name}/live.m3u8").status_code == 200

            assert clients["owner"][1].post(f"/api/v1/streams/{stream.pk}/go-public/").status_code == 200
            page, api = clients["anonymous"]
            assert page.get(reverse("streams:watch", args=[stream.slug])).status_code == 200
            assert _directory_lists(page, stream)
            assert api.get(f"/api/v1/streams/{stream.pk}/").json()["playback_url"] == playback.playback_url(stream)
            # The stable master appears with the next chunk, points at the session, and plays.
            live_stack.wait_segments(stream.pk, 1, timeout=30)
            master = requests.get(f"{edge}/{stable}", timeout=10).text
            assert f"{playback.session_dir(stream.pk, session.pk)}/" in master
            played = subprocess.run(
                ["ffmpeg", "-v", "error", "-nostdin", "-i", f"{edge}/{stable}", "-t", "2", "-f", "null", "-"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert played.returncode == 0, played.stderr[-2000:]
        finally:
            publisher.wait(timeout=60)
        live_stack.wait_session_ended(stream.pk, timeout=120)  # no callback left for the teardown
        deliveries = list(Delivery.objects.filter(event="stream.live"))
        assert len(deliveries) == 1
        deliver_webhook.apply(args=(deliveries[0].pk,))
        assert receiver.wait_for(1)[0].headers["X-Livestream-Event"] == "stream.live"

"""The owner is told where to publish over RTMP, RTMPS and SRT: the manage page (OBS's Server
and Stream Key) and the owner's view of a stream in the API (``ingest``); nobody else sees
them. The SRT URL carries the key only where the key itself is shown (create, regenerate)."""

import json
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client
from django.urls import reverse

from streams.models import Stream
from tests.factories import make_stream
from transcoding.srt_ingest import parse_stream_id

pytestmark = pytest.mark.django_db


@pytest.fixture
def ingest_settings(settings):
    settings.RTMP_PUBLIC_URL = "rtmp://ingest.example.org:1935/live"
    settings.RTMPS_PUBLIC_URL = "rtmps://ingest.example.org:443/live"
    settings.SRT_PUBLIC_URL = "srt://ingest.example.org:9998"
    settings.SRT_LATENCY_MS = 400
    settings.SRT_PASSPHRASE = ""
    return settings


def test_the_owner_gets_the_three_ingest_urls(auth_client, user, ingest_settings):
    created = auth_client.post("/api/v1/streams/", {"title": "Three doors"}, format="json").json()
    key = created["stream_key"]
    ingest = created["ingest"]
    assert ingest["rtmp_url"] == "rtmp://ingest.example.org:1935/live"
    assert ingest["rtmps_url"] == "rtmps://ingest.example.org:443/live"
    srt = urlparse(ingest["srt_url"])
    assert (srt.scheme, srt.netloc) == ("srt", "ingest.example.org:9998")
    query = parse_qs(srt.query)
    assert parse_stream_id(query["streamid"][0]) == key  # the listener reads the key back
    assert query["latency"] == ["400000"]  # microseconds, as OBS and ffmpeg take it
    assert ingest["srt_passphrase_required"] is False

    detail = auth_client.get(f"/api/v1/streams/{created['id']}/").json()
    assert detail["ingest"]["rtmps_url"] == ingest["rtmps_url"]
    assert key not in json.dumps(detail)  # the key is not stored: a placeholder stands for it
    assert "streamid=<stream key>" in detail["ingest"]["srt_url"]

    rotated = auth_client.post(f"/api/v1/streams/{created['id']}/regenerate-key/").json()
    assert (
        parse_stream_id(parse_qs(urlparse(rotated["ingest"]["srt_url"]).query)["streamid"][0]) == rotated["stream_key"]
    )


def test_others_do_not_see_them(api_client, other_user, user, ingest_settings):
    stream, _ = make_stream(user)
    assert "ingest" not in api_client.get(f"/api/v1/streams/{stream.pk}/").json()
    api_client.force_authenticate(other_user)
    assert "ingest" not in api_client.get(f"/api/v1/streams/{stream.pk}/").json()


def test_a_passphrase_is_mentioned_never_shown(auth_client, ingest_settings):
    ingest_settings.SRT_PASSPHRASE = "operators-secret-passphrase"
    body = auth_client.post("/api/v1/streams/", {"title": "Encrypted"}, format="json").json()
    assert body["ingest"]["srt_passphrase_required"] is True
    assert "operators-secret-passphrase" not in json.dumps(body)
    assert body["ingest"]["srt_url"].endswith("&passphrase=<passphrase>")


def test_the_manage_page_shows_rtmps_and_srt(user, ingest_settings):
    client = Client()
    client.force_login(user)
    client.post(reverse("streams:dashboard"), {"title": "Mine", "latency_mode": "normal"})
    stream = Stream.objects.get(owner=user)
    first = client.get(reverse("streams:manage", args=[stream.pk])).content.decode()
    assert 'value="rtmps://ingest.example.org:443/live"' in first
    assert "srt://ingest.example.org:9998?streamid=live_" in first  # the key, shown this once
    again = client.get(reverse("streams:manage", args=[stream.pk])).content.decode()
    assert "srt://ingest.example.org:9998?streamid=&lt;stream key&gt;&amp;latency=400000" in again
    assert "streamid=live_" not in again


def test_the_schema_documents_the_ingest_urls(api_client):
    schema = json.loads(api_client.get("/api/schema/?format=json").content)
    fields = schema["components"]["schemas"]["IngestUrls"]["properties"]
    assert {"rtmp_url", "rtmps_url", "srt_url", "srt_latency_ms", "srt_passphrase_required"} <= set(fields)

"""The stream's latency mode: API (field, validation, schema), dashboard form, and what the
ingest command carries to the segmenter."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from streams import keys
from streams.models import LatencyMode, Stream, chunk_seconds
from tests.api.conftest import assert_error
from tests.factories import DEFAULT_PASSWORD, make_stream
from transcoding import services, state

pytestmark = pytest.mark.django_db


def _logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    return client


def test_new_streams_are_low_latency_and_the_owner_switches_through_the_api(auth_client):
    body = auth_client.post("/api/v1/streams/", {"title": "Show"}, format="json").json()
    assert body["latency_mode"] == "low"
    url = f"/api/v1/streams/{body['id']}/"
    changed = auth_client.patch(url, {"latency_mode": "normal"}, format="json")
    assert changed.status_code == 200
    assert changed.json()["latency_mode"] == "normal"
    assert Stream.objects.get(pk=body["id"]).latency_mode == LatencyMode.NORMAL
    created = auth_client.post("/api/v1/streams/", {"title": "Two", "latency_mode": "normal"}, format="json")
    assert created.json()["latency_mode"] == "normal"


@pytest.mark.parametrize("value", ["ultra", "", None, 1, ["low"], "LOW"])
def test_an_unknown_latency_mode_is_a_clear_400(auth_client, user, value):
    stream, _ = make_stream(user, latency_mode="low")
    error = assert_error(
        auth_client.patch(f"/api/v1/streams/{stream.pk}/", {"latency_mode": value}, format="json"),
        400,
        field="latency_mode",
    )
    assert error["fields"]["latency_mode"]
    stream.refresh_from_db()
    assert stream.latency_mode == LatencyMode.LOW


def test_the_schema_documents_the_modes(api_client):
    schema = json.loads(api_client.get("/api/schema/?format=json").content)
    assert set(schema["components"]["schemas"]["LatencyModeEnum"]["enum"]) == {"low", "normal"}


def test_dashboard_form_sets_and_keeps_the_mode(user):
    client = _logged_in(user)
    client.post(reverse("streams:dashboard"), {"title": "Mine", "latency_mode": "normal"}, follow=True)
    stream = Stream.objects.get(owner=user)
    assert stream.latency_mode == LatencyMode.NORMAL
    page = client.get(reverse("streams:manage", args=[stream.pk])).content.decode()
    assert 'name="latency_mode"' in page
    assert '<option value="normal" selected>' in page
    # A post without the field (an older page) keeps it; an unknown value is refused.
    client.post(reverse("streams:manage", args=[stream.pk]), {"title": "Renamed"})
    stream.refresh_from_db()
    assert (stream.title, stream.latency_mode) == ("Renamed", LatencyMode.NORMAL)
    refused = client.post(reverse("streams:manage", args=[stream.pk]), {"title": "X", "latency_mode": "ultra"})
    assert refused.status_code == 400
    assert "latency_mode" in refused.context["form"].errors
    stream.refresh_from_db()
    assert stream.latency_mode == LatencyMode.NORMAL


def test_dashboard_creates_low_latency_streams_by_default(user):
    client = _logged_in(user)
    client.post(reverse("streams:dashboard"), {"title": "Default"})
    assert Stream.objects.get(owner=user).latency_mode == LatencyMode.LOW


def test_modes_map_to_chunk_durations(settings):
    settings.CHUNK_SECONDS = 2.0
    settings.LOW_LATENCY_CHUNK_SECONDS = 1.0
    assert chunk_seconds(LatencyMode.LOW) == 1.0
    assert chunk_seconds(LatencyMode.NORMAL) == 2.0


@pytest.mark.parametrize(("mode", "seconds"), [("low", 1.0), ("normal", 2.0)])
def test_the_ingest_command_carries_the_chunk_duration(user, settings, ingest_node, mode, seconds):
    settings.CHUNK_SECONDS = 2.0
    settings.LOW_LATENCY_CHUNK_SECONDS = 1.0
    stream, key = make_stream(user)
    Stream.objects.filter(pk=stream.pk).update(latency_mode=mode)
    while state.next_ingest_command(ingest_node, timeout_s=0.01) is not None:  # an empty queue
        pass
    services.accept_publish(key=key, client_id="77", node=ingest_node)
    raw = state.next_ingest_command(ingest_node, timeout_s=1)
    assert raw is not None
    command = json.loads(raw)
    assert command["stream"] == stream.pk
    assert command["chunk_s"] == seconds
    assert keys.matches(key, stream.key_hash)

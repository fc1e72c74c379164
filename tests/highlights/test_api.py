"""The highlights API (owner or staff; 404 to anybody else), its OpenAPI schema, and the
dashboard's list with "Clip it" / "Dismiss"."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from highlights.models import Suggestion, SuggestionStatus
from streams.models import SessionStatus, StreamSession
from tests.factories import DEFAULT_PASSWORD, make_stream

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 12, 2, 15, 0, 0, tzinfo=UTC)


def _suggestion(stream, *, score: float = 9.5, offset_s: int = 10) -> Suggestion:
    session = StreamSession.objects.filter(stream=stream).first() or StreamSession.objects.create(
        stream=stream, status=SessionStatus.LIVE, started_at=T0
    )
    start = T0 + timedelta(seconds=offset_s)
    return Suggestion.objects.create(
        stream=stream,
        session=session,
        start=start,
        end=start + timedelta(seconds=6),
        peak_at=start + timedelta(seconds=2),
        score=score,
        reasons={"chat": "20 messages in 2 s", "loudness": "peak -8.0 LUFS", "joins": "0 viewers joined"},
        signals={"z": {"chat": 10.0}},
    )


def _url(stream_id: int, pk: int | None = None, action: str = "") -> str:
    if pk is None:
        return f"/api/v1/streams/{stream_id}/highlights/"
    return f"/api/v1/streams/{stream_id}/highlights/{pk}/{action}/"


def test_owner_lists_best_first_with_the_clip_range(user, auth_client):
    stream, _ = make_stream(user)
    low, high = _suggestion(stream, score=5.0, offset_s=40), _suggestion(stream, score=12.0)
    response = auth_client.get(_url(stream.pk))
    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body] == [high.pk, low.pk]
    assert body[0]["session"] == high.session_id
    assert body[0]["stream"] == stream.pk
    assert datetime.fromisoformat(body[0]["start"].replace("Z", "+00:00")) == T0 + timedelta(seconds=10)
    assert datetime.fromisoformat(body[0]["end"].replace("Z", "+00:00")) == T0 + timedelta(seconds=16)
    assert body[0]["reasons"]["chat"] == "20 messages in 2 s"
    assert body[0]["status"] == "offered"


def test_dismiss_and_clipped(user, auth_client):
    stream, _ = make_stream(user)
    first, second = _suggestion(stream), _suggestion(stream, offset_s=40)
    response = auth_client.post(_url(stream.pk, first.pk, "dismiss"))
    assert response.status_code == 200
    assert response.json()["status"] == "dismissed"
    assert auth_client.post(_url(stream.pk, second.pk, "clipped")).json()["status"] == "clipped"
    assert auth_client.get(_url(stream.pk)).json() == []  # nothing offered any more
    everything = auth_client.get(_url(stream.pk), {"status": "all"}).json()
    assert {item["status"] for item in everything} == {"dismissed", "clipped"}
    assert [i["id"] for i in auth_client.get(_url(stream.pk), {"status": "dismissed"}).json()] == [first.pk]
    first.refresh_from_db()
    assert first.status == SuggestionStatus.DISMISSED


def test_others_get_404_and_anonymous_401(user, other_user, auth_client):
    stream, _ = make_stream(user)
    suggestion = _suggestion(stream)
    stranger = APIClient()
    stranger.force_authenticate(other_user)
    assert stranger.get(_url(stream.pk)).status_code == 404
    for action in ("dismiss", "clipped"):
        assert stranger.post(_url(stream.pk, suggestion.pk, action)).status_code == 404
    suggestion.refresh_from_db()
    assert suggestion.status == SuggestionStatus.OFFERED
    anonymous = APIClient()
    assert anonymous.get(_url(stream.pk)).status_code in (401, 403)
    assert anonymous.post(_url(stream.pk, suggestion.pk, "dismiss")).status_code in (401, 403)
    # A suggestion of another stream of the same owner is not found under this one.
    other_stream, _ = make_stream(user)
    assert auth_client.post(_url(other_stream.pk, suggestion.pk, "dismiss")).status_code == 404
    assert auth_client.get(_url(999_999)).status_code == 404
    assert auth_client.post(_url(stream.pk, 999_999, "dismiss")).status_code == 404


def test_bad_status_is_a_400(user, auth_client):
    stream, _ = make_stream(user)
    response = auth_client.get(_url(stream.pk), {"status": "everything"})
    assert response.status_code == 400
    assert "status" in str(response.json())


def test_openapi_documents_the_endpoints():
    schema = APIClient().get("/api/schema/?format=json").json()
    listing = schema["paths"]["/api/v1/streams/{stream_id}/highlights/"]["get"]
    assert "200" in listing["responses"]
    assert "404" in listing["responses"]
    item = schema["components"]["schemas"]["Suggestion"]["properties"]
    assert {"start", "end", "session", "score", "reasons", "status"} <= set(item)
    assert "/api/v1/streams/{stream_id}/highlights/{suggestion_id}/dismiss/" in schema["paths"], [
        p for p in schema["paths"] if "highl" in p
    ]


def test_dashboard_lists_offered_suggestions_with_clip_buttons(user, other_user):
    stream, _ = make_stream(user)
    suggestion = _suggestion(stream)
    _suggestion(stream, offset_s=60).delete()
    dismissed = _suggestion(stream, offset_s=90)
    dismissed.status = SuggestionStatus.DISMISSED
    dismissed.save()
    client = Client()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    page = client.get(reverse("streams:manage", args=[stream.pk])).content.decode()
    assert 'id="highlights"' in page
    assert f'data-suggestion="{suggestion.pk}"' in page
    assert f'data-suggestion="{dismissed.pk}"' not in page
    assert f'data-start="{suggestion.start.isoformat()}"' in page
    assert f'data-session="{suggestion.session_id}"' in page
    assert 'data-action="clip"' in page
    assert 'data-action="dismiss"' in page
    assert "js/highlights.js" in page
    # Nothing offered: no section.
    quiet, _ = make_stream(user)
    assert 'id="highlights"' not in client.get(reverse("streams:manage", args=[quiet.pk])).content.decode()
    # Another user cannot see the dashboard at all.
    stranger = Client()
    assert stranger.login(username=other_user.username, password=DEFAULT_PASSWORD)
    assert stranger.get(reverse("streams:manage", args=[stream.pk])).status_code == 404

"""Chat REST API: history with cursors, posting, moderation permissions, the log, CSRF."""

import pytest
from rest_framework.test import APIClient

from chat import services
from chat.models import Ban, ChatSettings, Message, ModerationAction, ModerationKind, Moderator
from tests.factories import UserFactory, make_stream

pytestmark = pytest.mark.django_db


def url(stream, tail=""):
    return f"/api/v1/streams/{stream.pk}/chat/{tail}"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def setup(user, other_user):
    stream, _ = make_stream(user)
    return stream, user, other_user


def test_history_pages_newest_first_with_cursor(setup, api_client):
    stream, owner, other = setup
    Message.objects.bulk_create(Message(stream=stream, user=other, text=f"m{i}") for i in range(7))
    Message.objects.filter(text="m6").update(deleted_by=owner, deleted_at="2026-01-01T00:00:00Z")
    first = api_client.get(url(stream, "messages/"), {"page_size": 4}).json()
    assert [m["text"] for m in first["results"]] == ["m5", "m4", "m3", "m2"]
    assert first["results"][0]["user"] == other.username
    second = api_client.get(first["next"]).json()
    assert [m["text"] for m in second["results"]] == ["m1", "m0"]
    assert second["next"] is None


def test_history_of_unknown_stream_is_404(api_client):
    response = api_client.get("/api/v1/streams/999999/chat/messages/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_post_message_and_its_refusals(setup, api_client):
    stream, _owner, other = setup
    assert api_client.post(url(stream, "messages/"), {"text": "hi"}).status_code in {401, 403}
    client = client_for(other)
    created = client.post(url(stream, "messages/"), {"text": "<b>hi</b>"}, format="json")
    assert created.status_code == 201
    assert created.json()["text"] == "<b>hi</b>"
    duplicate = client.post(url(stream, "messages/"), {"text": "<b>hi</b>"}, format="json")
    assert duplicate.status_code == 429
    assert duplicate.json()["error"]["code"] == "duplicate"
    Ban.objects.create(stream=stream, user=other)
    banned = client.post(url(stream, "messages/"), {"text": "let me"}, format="json")
    assert banned.status_code == 403
    assert banned.json()["error"]["code"] == "banned"
    assert list(Message.objects.values_list("text", flat=True)) == ["<b>hi</b>"]


def test_viewers_cannot_moderate(setup):
    stream, owner, other = setup
    message = services.post_message(stream_id=stream.pk, user=owner, text="mine")
    client = client_for(other)
    for response in (
        client.delete(url(stream, f"messages/{message.pk}/")),
        client.post(url(stream, "clear/")),
        client.patch(url(stream, "settings/"), {"slow_mode_s": 5}, format="json"),
        client.post(url(stream, "bans/"), {"user": owner.username}, format="json"),
        client.get(url(stream, "log/")),
        client.post(url(stream, "moderators/"), {"user": other.username}, format="json"),
    ):
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] in {"forbidden", "permission_denied"}
    assert Message.objects.get().deleted_at is None
    assert not ModerationAction.objects.exists()


def test_streamer_appoints_moderator_who_moderates_and_everything_is_logged(setup):
    stream, owner, mod = setup
    spammer = UserFactory()
    owner_client, mod_client = client_for(owner), client_for(mod)
    assert owner_client.post(url(stream, "moderators/"), {"user": mod.username}, format="json").status_code == 201
    assert Moderator.objects.filter(stream=stream, user=mod).exists()

    message = services.post_message(stream_id=stream.pk, user=spammer, text="buy stuff")
    assert mod_client.delete(url(stream, f"messages/{message.pk}/")).status_code == 204
    message.refresh_from_db()
    assert message.deleted_by == mod
    # The database itself recorded the change (pghistory trigger).
    assert message.events.filter(pgh_label="update", deleted_by=mod).exists()
    assert mod_client.delete(url(stream, "messages/424242/")).status_code == 404

    timeout = mod_client.post(url(stream, "bans/"), {"user": spammer.username, "duration_s": 600}, format="json")
    assert timeout.status_code == 201
    assert timeout.json()["expires_at"] is not None
    assert [b["user"] for b in mod_client.get(url(stream, "bans/")).json()] == [spammer.username]
    assert mod_client.post(url(stream, "bans/"), {"user": owner.username}, format="json").status_code == 403
    assert mod_client.post(url(stream, "bans/"), {"user": "nobody-here"}, format="json").status_code == 404
    assert mod_client.delete(url(stream, f"bans/{spammer.username}/")).status_code == 204
    assert mod_client.delete(url(stream, f"bans/{spammer.username}/")).status_code == 404
    assert mod_client.post(url(stream, "bans/"), {"user": spammer.username}, format="json").status_code == 201
    assert Ban.objects.get(user=spammer).expires_at is None

    bad = mod_client.patch(url(stream, "settings/"), {"slow_mode_s": -1}, format="json")
    assert bad.status_code == 400
    assert "slow_mode_s" in bad.json()["error"]["fields"]
    assert mod_client.patch(url(stream, "settings/"), {"slow_mode_s": 10}, format="json").json() == {"slow_mode_s": 10}
    assert ChatSettings.objects.get(stream=stream).slow_mode_s == 10

    services.post_message(stream_id=stream.pk, user=owner, text="still here")
    assert mod_client.post(url(stream, "clear/")).json() == {"cleared": 1}
    # Moderators cannot appoint or remove moderators; the streamer can.
    assert mod_client.delete(url(stream, f"moderators/{mod.username}/")).status_code == 403
    assert owner_client.delete(url(stream, f"moderators/{mod.username}/")).status_code == 204

    log = owner_client.get(url(stream, "log/")).json()["results"]
    assert [entry["kind"] for entry in reversed(log)] == [
        ModerationKind.ADD_MODERATOR,
        ModerationKind.DELETE,
        ModerationKind.TIMEOUT,
        ModerationKind.UNBAN,
        ModerationKind.BAN,
        ModerationKind.SLOW_MODE,
        ModerationKind.CLEAR,
        ModerationKind.REMOVE_MODERATOR,
    ]
    assert log[-2]["actor"] == mod.username
    assert log[-2]["details"]["text"] == "buy stuff"


def test_staff_moderate_any_stream(setup):
    stream, _owner, other = setup
    staff = UserFactory(is_staff=True)
    message = services.post_message(stream_id=stream.pk, user=other, text="hmm")
    assert client_for(staff).delete(url(stream, f"messages/{message.pk}/")).status_code == 204


def test_session_writes_need_csrf(setup):
    stream, owner, _ = setup
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    refused = client.post(url(stream, "clear/"))
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]["message"]
    client.get("/api/v1/me/")
    token = client.cookies.get("csrftoken")
    if token is None:  # the API does not set the cookie on GET; obtain one the browser way
        from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

        secret = _get_new_csrf_string()
        client.cookies["csrftoken"] = secret
        header = _mask_cipher_secret(secret)
    else:
        header = token.value
    assert client.post(url(stream, "clear/"), HTTP_X_CSRFTOKEN=header).status_code == 200

"""The chat panel: server-rendered HTML, the JS's escaping rule, and (marked ``browser``) the
panel in headless Chromium against uvicorn: send, escaping, moderation menu, reconnect
without duplicates, deletions while away."""

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from chat import services
from chat.models import Message
from tests.browser import harness
from tests.factories import UserFactory, make_stream

JS = Path(settings.BASE_DIR) / "static" / "js" / "chat.js"


def test_chat_js_never_parses_html() -> None:
    source = JS.read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, sink
    assert code.count("textContent") >= 5


@pytest.mark.django_db
def test_panel_on_watch_page_for_signed_in_and_anonymous(client: Client) -> None:
    stream, _ = make_stream(title="Panel")
    anonymous = client.get(stream.get_absolute_url()).content.decode()
    assert f'data-stream-id="{stream.pk}"' in anonymous
    assert "js/chat.js" in anonymous
    assert 'data-role="form"' not in anonymous
    assert "to chat" in anonymous
    user = UserFactory.create(username="pat")
    client.force_login(user)
    signed_in = client.get(stream.get_absolute_url()).content.decode()
    assert 'data-me="pat"' in signed_in
    assert 'data-role="form"' in signed_in
    assert 'name="csrfmiddlewaretoken"' in signed_in


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("chat-web") / "uvicorn.log"
    with harness.asgi_server({"CHAT_PRESENCE_POLL_S": "0.5"}, log) as base:
        yield base


@pytest.fixture
def browser() -> Iterator[Any]:
    with harness.chromium() as context:
        yield context


def _off_loop(fn: Any, /, **kwargs: Any) -> Any:
    """Run a service in another thread: Playwright's sync API keeps an event loop running in
    this one, where the services' on-commit broadcast (async_to_sync) cannot run."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, **kwargs).result(timeout=30)


def _rows(page: Any) -> list[str]:
    return list(page.locator(".chat-messages li.chat-row .chat-text").all_text_contents())


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_panel_in_chromium_sends_escapes_moderates_and_reconnects_without_duplicates(web: str, browser: Any) -> None:
    owner = UserFactory.create(username="streamer")
    viewer = UserFactory.create(username="viewer1")
    stream, _ = make_stream(owner, title="Browser chat")
    _off_loop(services.post_message, stream_id=stream.pk, user=viewer, text="before you came")
    harness.sign_in(browser, web, owner)
    page = browser.new_page()
    page.goto(web + stream.get_absolute_url())
    page.wait_for_function("document.querySelector('.chat-status').textContent === 'live'", timeout=15000)
    page.wait_for_function("document.querySelectorAll('.chat-messages li.chat-row').length === 1")
    assert _rows(page) == ["before you came"]
    assert page.locator(".chat-viewers").text_content() == "1 watching"

    payload = '<img src=x onerror="window.pwned=1"><b>bold?</b>'
    page.fill("[data-role=input]", payload)
    page.press("[data-role=input]", "Enter")
    page.wait_for_function("document.querySelectorAll('.chat-messages li.chat-row').length === 2")
    assert _rows(page)[-1] == payload
    assert page.locator(".chat-messages img, .chat-messages b").count() == 0
    assert page.evaluate("window.pwned === undefined")
    own_row = page.locator(".chat-messages li.chat-row").last
    assert own_row.locator(".chat-badge-streamer").count() == 1

    # The streamer moderates: the menu deletes a viewer's message for everyone.
    assert page.locator("[data-role=modbar]").is_visible()
    first = page.locator(".chat-messages li.chat-row").first
    first.hover()
    first.locator(".chat-mod-toggle").click()
    page.click("text=Delete message")
    page.wait_for_function("document.querySelectorAll('.chat-messages li.chat-row').length === 1")
    assert Message.objects.get(text="before you came").deleted_by == owner

    # Network drop: the socket reconnects by itself; history overlaps; no row is duplicated,
    # messages sent meanwhile arrive, one deleted meanwhile disappears.
    page.evaluate("window.LiveSocket.socket().drop()")
    page.wait_for_function("document.querySelector('.chat-status').textContent !== 'live'")
    while_away = _off_loop(services.post_message, stream_id=stream.pk, user=viewer, text="while you were away")
    _off_loop(services.post_message, stream_id=stream.pk, user=viewer, text="also while away")
    _off_loop(services.delete_message, actor=owner, stream=stream, message_id=while_away.pk)
    page.wait_for_function("document.querySelector('.chat-status').textContent === 'live'", timeout=15000)
    page.wait_for_function("document.querySelectorAll('.chat-messages li.chat-row').length === 2")
    assert _rows(page) == [payload, "also while away"]
    _off_loop(services.post_message, stream_id=stream.pk, user=viewer, text="live again")
    page.wait_for_function("document.querySelectorAll('.chat-messages li.chat-row').length === 3")
    assert _rows(page) == [payload, "also while away", "live again"]
    page.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_analytics_page_gets_owner_pushes_on_its_own_socket_and_is_not_a_viewer(web: str, browser: Any) -> None:
    from analytics import changes
    from chat import presence
    from streams.models import Stream, StreamStatus

    owner = UserFactory.create(username="analyst")
    stream, _ = make_stream(owner, title="Owner socket")
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    harness.sign_in(browser, web, owner)
    watch = browser.new_page()  # a viewer's watch page in the same browser
    watch.goto(web + stream.get_absolute_url())
    watch.wait_for_function("document.querySelector('.chat-status').textContent === 'live'", timeout=15000)
    watch.evaluate("window.seen = []; window.LiveSocket.on('*', (f) => window.seen.push(f.type))")
    page = browser.new_page()
    page.goto(f"{web}/analytics/streams/{stream.pk}/")
    page.wait_for_selector('#live-health[data-socket-state="open"]', timeout=15000)
    _off_loop(changes.publish, stream_id=stream.pk, name="analytics.ingest", data={"bitrate": 2_500_000})
    page.wait_for_selector('#live-health[data-pushes="1"]', timeout=10000)
    # The owner's page is not a viewer; the watch page is, and it never saw the analytics.
    assert presence.viewer_count(stream.pk) == 1
    assert watch.locator(".chat-viewers").text_content() == "1 watching"
    _off_loop(changes.publish, stream_id=stream.pk, name="analytics.viewers", data={"viewers": 1})
    page.wait_for_timeout(500)
    assert not [kind for kind in watch.evaluate("window.seen") if kind.startswith("analytics.")]
    page.close()
    watch.close()

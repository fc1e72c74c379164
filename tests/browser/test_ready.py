"""A viewer waiting on the watch page starts as soon as the stream is playable, on the
``stream.ready`` event, through the real pipeline (nginx-rtmp, ingest, Celery transcoding, S3,
edge) and headless Chromium; and a page opened on a playable stream starts from one master
request.

What the page does is counted in requests, not seconds (the machine is shared): after
``stream.ready`` arrives on the page's socket, no request for the master answers 404, the first
request to the edge is the master, and the first segment arrives after at most
``MAX_REQUESTS_TO_FIRST_SEGMENT`` edge requests.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from accounts.models import User
from tests.browser import harness
from tests.factories import make_stream

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

BROADCAST_S = 40
# master, the first level's playlist, a blocking reload, the first segment (+ slack: an ABR switch).
MAX_REQUESTS_TO_FIRST_SEGMENT = 6

# Before the page's scripts: remember the player's messages.
WATCH_JS = """
window.__messages = [];
document.addEventListener("DOMContentLoaded", () => {
  const message = document.getElementById("player-message");
  new MutationObserver(() => { if (message.textContent) window.__messages.push(message.textContent); })
    .observe(message, { childList: true, characterData: true, subtree: true });
});
"""


@pytest.fixture(scope="module")
def web(live_stack: Any, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with harness.asgi_server({"HLS_EDGE_URL": live_stack.edge_url}, log) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with harness.chromium() as context:
        context.add_init_script(WATCH_JS)
        yield context


def _player(page: Any, expression: str) -> Any:
    return page.evaluate(f"(() => {{ const p = window.livePlayer; return {expression}; }})()")


class Traffic:
    """What a page asked for and received, in order: edge requests/responses and socket frames."""

    def __init__(self, page: Any, edge: str) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.edge = edge
        page.on("request", lambda r: self._add("request", r.url, 0))
        page.on("response", lambda r: self._add("response", r.url, r.status))
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _add(self, kind: str, url: str, status: int) -> None:
        if url.startswith(self.edge):
            self.log.append((kind, url[len(self.edge) :].split("?", maxsplit=1)[0], status))

    def _frame(self, payload: str | bytes) -> None:
        text = payload if isinstance(payload, str) else payload.decode(errors="replace")
        for name in ("stream.live", "stream.ready", "stream.offline"):
            if f'"{name}"' in text:
                self.log.append(("frame", name, 0))

    def index(self, kind: str, name: str) -> int:
        return next(i for i, (k, n, _) in enumerate(self.log) if (k, n) == (kind, name))

    def master(self, status: int, since: int = 0) -> list[int]:
        return [
            i
            for i, (kind, name, code) in enumerate(self.log)
            if i >= since and kind == "response" and name.endswith("/master.m3u8") and code == status
        ]


def test_waiting_page_starts_on_stream_ready_without_polling(live_stack: Any, web: str, browser: Any, user: User):
    stream, key = make_stream(user, title="Starts when playable")
    master = f"/live/{stream.pk}/master.m3u8"
    page = browser.new_page()
    traffic = Traffic(page, live_stack.edge_url)
    page.goto(web + stream.get_absolute_url())
    assert page.is_visible("#offline-card")
    page.wait_for_function("() => window.LiveSocket && window.LiveSocket.isOpen()", timeout=15_000)
    assert _player(page, "p.transport") == "socket"

    publisher = live_stack.publish(key, duration_s=BROADCAST_S)
    try:
        page.wait_for_function("() => window.livePlayer.video.currentTime > 0.3", timeout=90_000)
        history = _player(page, "p.history")
        assert _player(page, "p.startedBy") == "ready", history
        steps = [" ".join(h.split()[1:]) for h in history]
        live_at = next(i for i, s in enumerate(steps) if s == "live")
        ready_at = next(i for i, s in enumerate(steps) if s.startswith("ready"))
        assert live_at < ready_at < steps.index("start (ready)"), steps
        # Between stream.live and stream.ready the page said it was starting.
        assert "Starting…" in page.evaluate("window.__messages")

        # Counted in requests: the frame arrived, then the master at once, no 404 poll after it.
        ready = traffic.index("frame", "stream.ready")
        assert traffic.master(404, since=ready) == [], traffic.log
        after = [name for kind, name, _ in traffic.log[ready:] if kind == "request"]
        assert after[0] == master, traffic.log[ready:]
        # The first segment came within a few requests of the event (no waiting for a poll).
        segment = next(
            i for i, (k, n, _) in enumerate(traffic.log) if i > ready and k == "response" and n.endswith(".ts")
        )
        requests = [n for k, n, _ in traffic.log[ready:segment] if k == "request"]
        assert len(requests) <= MAX_REQUESTS_TO_FIRST_SEGMENT, (requests, history)
        # Before the event the page asked the edge for the master once on stream.live (in case the
        # session was already playable), then only as the socket's safety net (every 10 s at the
        # soonest; a loaded machine can take that long to publish the first segment): not every 2 s.
        waited_s = (float(history[ready_at].split()[0]) - float(history[live_at].split()[0])) / 1000
        asked = [n for k, n, _ in traffic.log[:ready] if k == "request" and n == master]
        assert len(asked) <= 1 + int(waited_s // 10), (waited_s, traffic.log, history)

        # A page opened on the playable stream starts from one master request (the probe's
        # answer is handed to hls.js), without a 404.
        second = browser.new_page()
        late = Traffic(second, live_stack.edge_url)
        second.goto(web + stream.get_absolute_url())
        second.wait_for_function("() => window.livePlayer.video.currentTime > 0.3", timeout=30_000)
        assert _player(second, "p.startedBy") == "probe", _player(second, "p.history")
        assert [n for k, n, _ in late.log if k == "request" and n == master] == [master], late.log
        assert late.master(404) == []
        second.close()
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait(timeout=10)
    page.close()
    # The session ends (on_publish_done, the last chunks) before the test's database is flushed:
    # a process of the stack still writing then deadlocks the flush.
    live_stack.wait_session_ended(stream.pk, timeout=120)

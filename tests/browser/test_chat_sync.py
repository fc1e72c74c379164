"""Latency-synced chat and the chat of a replay in headless Chromium, through the real pipeline
(ADR 0035): nginx-rtmp ingest, Celery transcoding, S3, the edge, the site under uvicorn with its
WebSocket, messages posted through the REST API.

Live: two viewers of one stream, one of them 8 s further behind (a DVR seek), and the streamer's
page. A message appears for each viewer when their own playback (hls.js ``playingDate``)
reaches the message's program date-time (within 0.5 s), so later for the viewer further behind;
the streamer sees it at once; a deletion removes it everywhere, also where it was still held;
a viewer's own message and, with sync off, every message show at once.

Replay: messages appear at their original offsets while the replay plays, also after seeking
forward and back; the WebVTT export parses (webvtt-py) with cue times at the messages' offsets
in the replay playlist, like the JSON export; deleted messages appear nowhere.

What is compared is the page's playback position when a row appears against the message's
date-time or offset (outcomes), not how long anything took.
"""

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
import requests
import webvtt
from rest_framework.authtoken.models import Token

from accounts.models import User
from streams.playback import prefix_of, replay_url
from tests.browser import harness
from tests.factories import UserFactory, make_stream

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

TOLERANCE_MS = 500
BEHIND_S = 8

# Records, for every chat row added to the page, the player's position when it appeared.
OBSERVE = """(selector) => {
  window.__shown = {};
  const list = document.querySelector(selector + " [data-role=messages]");
  new MutationObserver((mutations) => {
    for (const m of mutations) for (const node of m.addedNodes) {
      if (!node.dataset || !node.dataset.id) continue;
      const p = window.livePlayer;
      window.__shown[node.dataset.id] = window.__shown[node.dataset.id] || {
        at: Date.now(), playing: p.playingDate(), time: p.video.currentTime};
    }
  }).observe(list, {childList: true});
}"""


# The same, installed before the page's own scripts: also records the rows of the join history.
OBSERVE_FROM_LOAD = """
window.__shown = {};
document.addEventListener("DOMContentLoaded", () => {
  const list = document.querySelector("[data-chat-panel] [data-role=messages]");
  new MutationObserver((mutations) => {
    for (const m of mutations) for (const node of m.addedNodes) {
      if (!node.dataset || !node.dataset.id) continue;
      const p = window.livePlayer;
      window.__shown[node.dataset.id] = window.__shown[node.dataset.id] || {
        at: Date.now(), playing: p ? p.playingDate() : null};
    }
  }).observe(list, {childList: true});
});
"""


@pytest.fixture(scope="module")
def web(live_stack: Any, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with harness.asgi_server({"HLS_EDGE_URL": live_stack.edge_url, "DVR_WINDOW_SECONDS": "600"}, log) as base:
        yield base


class Api:
    """The chat REST API of the site under test, as one user (token)."""

    def __init__(self, web: str, user: User, stream_pk: int) -> None:
        self.base = f"{web}/api/v1/streams/{stream_pk}/chat/"
        self.headers = {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}

    def post(self, text: str) -> dict[str, Any]:
        response = requests.post(self.base + "messages/", json={"text": text}, headers=self.headers, timeout=10)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def delete(self, message_id: int) -> None:
        response = requests.delete(f"{self.base}messages/{message_id}/", headers=self.headers, timeout=10)
        assert response.status_code == 204, response.text


@contextmanager
def _chromium() -> Iterator[Any]:
    """Headless Chromium (as harness.chromium launches it) with room for several contexts: the
    viewers' and the streamer's pages need different session cookies."""
    import os

    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=harness.CHROMIUM, headless=True, args=harness.CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _user(username: str) -> User:
    user: User = UserFactory.create(username=username)
    return user


def _pdt_ms(message: dict[str, Any]) -> int:
    return round(datetime.fromisoformat(message["pdt"]).timestamp() * 1000)


def _js(page: Any, expression: str) -> Any:
    return page.evaluate(f"(() => {{ const p = window.livePlayer; return {expression}; }})()")


def _lag_ms(page: Any) -> float:
    return float(_js(page, "Date.now() - p.playingDate()"))


def _row(page: Any, message_id: int) -> str:
    return f'[data-chat-panel] li[data-id="{message_id}"]'


def _shown(page: Any, message_id: int) -> dict[str, Any] | None:
    return page.evaluate(f"window.__shown[String({str(message_id)!r})] || null")


def _held(page: Any, message_id: int) -> bool:
    return bool(page.evaluate(f"document.querySelector('[data-chat-panel]').chatPanel.held.has({message_id})"))


def _open_watch(context: Any, url: str) -> Any:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(
        "() => window.livePlayer.video.currentTime > 0.5 && window.livePlayer.playingDate() !== null", timeout=60_000
    )
    page.wait_for_function(
        "() => document.querySelector('[data-chat-panel] [data-role=status]').textContent === 'live'"
    )
    page.evaluate(OBSERVE, "[data-chat-panel]")
    return page


@pytest.mark.parametrize("latency_mode", ["low", "normal"])
def test_live_chat_waits_for_each_viewers_playback(
    live_stack: Any, web: str, user: User, settings: Any, latency_mode: str
) -> None:
    settings.TRANSCODE_LADDER = ["360p:360:600:64"]
    stream, key = make_stream(user, title=f"Synced chat {latency_mode}", latency_mode=latency_mode)
    viewer, talker = _user(f"viewer-{latency_mode}"), _user(f"talker-{latency_mode}")
    talk, owner_api = Api(web, talker, stream.pk), Api(web, user, stream.pk)
    publisher = live_stack.publish(key, duration_s=90, gop_s=2.0)
    try:
        live_stack.wait_live(stream.pk)
        live_stack.wait_segments(stream.pk, 6, timeout=90)
        watch = web + stream.get_absolute_url()
        with _chromium() as browser:
            viewers, streamer = browser.new_context(), browser.new_context()  # two users' cookies
            harness.sign_in(viewers, web, viewer)
            harness.sign_in(streamer, web, user)
            near, behind, owner = _open_watch(viewers, watch), _open_watch(viewers, watch), _open_watch(streamer, watch)
            # The second viewer goes back in the DVR window: BEHIND_S further behind.
            behind.evaluate(f"window.livePlayer.video.currentTime -= {BEHIND_S}")
            behind.wait_for_function(
                "() => !window.livePlayer.video.seeking"
                f" && Date.now() - window.livePlayer.playingDate() > {BEHIND_S * 1000}",
                timeout=30_000,
            )
            behind.wait_for_function("() => window.livePlayer.video.currentTime > 0 && !window.livePlayer.video.paused")
            assert _lag_ms(behind) - _lag_ms(near) > (BEHIND_S - 2) * 1000

            # 0. A viewer who opens the page just after a message was sent: the join history
            #    holds it too, until their playback (which starts behind live) reaches it.
            early = talk.post("before you came")
            owner.wait_for_selector(_row(owner, early["id"]), timeout=10_000)
            late = viewers.new_page()
            late.add_init_script(OBSERVE_FROM_LOAD)
            late.goto(watch)
            late.wait_for_selector(_row(late, early["id"]), timeout=40_000)
            joined = _shown(late, early["id"])
            assert joined is not None
            assert joined["playing"] is not None, joined  # not shown before the video had a position
            assert joined["playing"] >= _pdt_ms(early) - TOLERANCE_MS, (joined, _pdt_ms(early))
            late.close()

            # 1. A message: the streamer at once, each viewer when their playback reaches it.
            first = talk.post("did you see that?")
            pdt = _pdt_ms(first)
            owner.wait_for_selector(_row(owner, first["id"]), timeout=10_000)
            seen_by_owner = _shown(owner, first["id"])
            assert seen_by_owner is not None
            assert seen_by_owner["playing"] < pdt  # shown before the streamer's own video got there
            for page in (near, behind):
                page.wait_for_selector(_row(page, first["id"]), timeout=40_000)
            at_near, at_behind = _shown(near, first["id"]), _shown(behind, first["id"])
            assert at_near is not None
            assert at_behind is not None
            assert abs(at_near["playing"] - pdt) <= TOLERANCE_MS, (at_near, pdt)
            assert abs(at_behind["playing"] - pdt) <= TOLERANCE_MS, (at_behind, pdt)
            assert at_behind["at"] - at_near["at"] > (BEHIND_S - 3) * 1000  # later for the one further behind

            # 1b. Paused: held until playback resumes and reaches it (ADR 0035: no spoilers).
            lag = _lag_ms(near)  # before the pause
            near.evaluate("window.livePlayer.video.pause()")
            frozen = float(_js(near, "p.playingDate()"))
            paused = talk.post("while you were away")
            owner.wait_for_selector(_row(owner, paused["id"]), timeout=10_000)
            near.wait_for_function(f"() => Date.now() > {_pdt_ms(paused) + 2000} + {lag}", timeout=30_000)
            assert _held(near, paused["id"])  # playing, it would have shown by now
            assert _shown(near, paused["id"]) is None
            assert float(_js(near, "p.playingDate()")) < _pdt_ms(paused)
            near.evaluate("window.livePlayer.video.play()")
            near.wait_for_selector(_row(near, paused["id"]), timeout=30_000)
            resumed = _shown(near, paused["id"])
            assert resumed is not None
            assert abs(resumed["playing"] - _pdt_ms(paused)) <= TOLERANCE_MS, (resumed, frozen)

            # 2. A deletion applies everywhere at once, also to a message a viewer still holds.
            second = talk.post("spoiler!")
            owner.wait_for_selector(_row(owner, second["id"]), timeout=10_000)
            behind.wait_for_function(
                f"() => document.querySelector('[data-chat-panel]').chatPanel.held.has({second['id']})", timeout=10_000
            )
            owner_api.delete(second["id"])
            owner_api.delete(first["id"])
            for page in (owner, near, behind):
                page.wait_for_selector(_row(page, first["id"]), state="detached", timeout=10_000)
                page.wait_for_selector(_row(page, second["id"]), state="detached", timeout=10_000)
            assert not _held(behind, second["id"])
            behind.wait_for_function(
                f"() => window.livePlayer.playingDate() > {_pdt_ms(second) + 1500}", timeout=30_000
            )
            assert _shown(behind, second["id"]) is None  # never appeared for the viewer behind

            # 3. A viewer's own message shows at once, though their video is behind.
            behind.fill("[data-chat-panel] [data-role=input]", "my own words")
            behind.press("[data-chat-panel] [data-role=input]", "Enter")
            behind.wait_for_function(
                "() => Array.from(document.querySelectorAll('[data-chat-panel] li[data-id]'))"
                ".some((li) => li.textContent.includes('my own words'))",
                timeout=10_000,
            )
            own_id = behind.evaluate(
                "Array.from(document.querySelectorAll('[data-chat-panel] li[data-id]'))"
                ".find((li) => li.textContent.includes('my own words')).dataset.id"
            )
            own = _shown(behind, own_id)
            own_pdt = behind.evaluate(f"Date.parse(document.querySelector('{_row(behind, own_id)}').dataset.pdt)")
            assert own is not None
            assert own["playing"] < own_pdt - (BEHIND_S - 3) * 1000

            # 4. Sync off (remembered): every message at once for the viewer behind.
            behind.uncheck("[data-chat-panel] [data-role=sync]")
            assert behind.evaluate("window.localStorage.getItem('chat.sync')") == "off"
            third = talk.post("no sync for me")
            behind.wait_for_selector(_row(behind, third["id"]), timeout=10_000)
            at_once = _shown(behind, third["id"])
            assert at_once is not None
            assert at_once["playing"] < _pdt_ms(third) - (BEHIND_S - 3) * 1000
            again = viewers.new_page()
            again.goto(watch)
            again.wait_for_selector("[data-chat-panel] [data-role=sync]")
            assert again.is_checked("[data-chat-panel] [data-role=sync]") is False
            harness.screenshot(behind, f"chat-sync-{latency_mode}.png")
    finally:
        if publisher.poll() is None:
            publisher.kill()
        publisher.wait(10)
    # The session ends (nginx-rtmp's on_publish_done, the last chunks) before the test's database
    # goes away: a callback arriving during teardown would fail the next test.
    live_stack.wait_session_ended(stream.pk, timeout=120)


def test_replay_chat_follows_playback_and_seeks_and_exports(
    live_stack: Any, web: str, user: User, settings: Any
) -> None:
    settings.TRANSCODE_LADDER = ["360p:360:600:64"]
    stream, key = make_stream(user, title="Chat replay", latency_mode="normal", keep_recordings=True)
    talker = _user("replay-talker")
    talk, owner_api = Api(web, talker, stream.pk), Api(web, user, stream.pk)
    publisher = live_stack.publish(key, duration_s=32)
    sent: list[dict[str, Any]] = []
    try:
        live_stack.wait_live(stream.pk)
        live_stack.wait_segments(stream.pk, 2)
        for i, text in enumerate(["hello <everyone> & all", "deleted later", "third", "fourth --> fifth"]):
            sent.append(talk.post(text))
            if i < 3:
                time.sleep(5)
        owner_api.delete(sent[1]["id"])
        assert publisher.wait(timeout=90) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
    session = live_stack.wait_session_ended(stream.pk, timeout=120)
    assert session.is_replay
    kept = [m for m in sent if m["id"] != sent[1]["id"]]

    # Offsets, independently: the replay playlist's program date-times at the edge.
    api = f"{web}/api/v1/streams/{stream.pk}/replays/{session.pk}/"
    replay_master = requests.get(replay_url(session), timeout=10)
    uri = next(line for line in replay_master.text.splitlines() if line and not line.startswith("#"))
    playlist = requests.get(f"{live_stack.edge_url}/{prefix_of(session)}/{uri}", timeout=10).text
    expected = {m["id"]: _offset_in(playlist, _pdt_ms(m)) for m in kept}

    exported = requests.get(api + "chat.json", timeout=10).json()
    assert [m["id"] for m in exported["messages"]] == [m["id"] for m in kept]
    for m in exported["messages"]:
        assert abs(m["offset_s"] - expected[m["id"]]) <= 0.01
    vtt_text = requests.get(api + "chat.vtt", timeout=10).text
    cues = webvtt.from_buffer(io.StringIO(vtt_text)).captions
    assert [int(c.identifier or 0) for c in cues] == [m["id"] for m in kept]
    for cue in cues:
        assert abs(cue.start_time.in_milliseconds() / 1000 - expected[int(cue.identifier or 0)]) <= 0.01
    assert cues[0].raw_text == f"{talker.public_name}: hello &lt;everyone&gt; &amp; all"
    assert "deleted later" not in vtt_text

    with harness.chromium() as browser:
        page = browser.new_page()
        page.goto(f"{web}/s/{stream.slug}/replays/{session.pk}/")
        page.wait_for_function("() => document.querySelector('[data-replay-chat]').dataset.shown !== undefined")
        page.evaluate(OBSERVE, "[data-replay-chat]")
        first = kept[0]
        page.wait_for_selector(f'[data-replay-chat] li[data-id="{first["id"]}"]', timeout=60_000)
        at = page.evaluate(f"window.__shown['{first['id']}']")
        assert abs(at["playing"] - _pdt_ms(first)) <= TOLERANCE_MS, (at, first)
        assert abs(at["time"] - expected[first["id"]]) <= TOLERANCE_MS / 1000

        # Seek forward past the last message: everything sent up to there, nothing deleted.
        last = expected[kept[-1]["id"]]
        page.evaluate(f"window.livePlayer.video.currentTime = {last + 1.5}")
        page.wait_for_function(
            f"() => document.querySelectorAll('[data-replay-chat] li[data-id]').length === {len(kept)}", timeout=20_000
        )
        ids = page.eval_on_selector_all("[data-replay-chat] li[data-id]", "els => els.map((e) => Number(e.dataset.id))")
        assert ids == [m["id"] for m in kept]

        # Seek back before the third message: it leaves, and comes back at its offset.
        third = kept[1]
        page.evaluate(f"window.livePlayer.video.currentTime = {expected[third['id']] - 3}")
        page.wait_for_selector(f'[data-replay-chat] li[data-id="{third["id"]}"]', state="detached", timeout=20_000)
        page.evaluate(OBSERVE, "[data-replay-chat]")
        page.wait_for_selector(f'[data-replay-chat] li[data-id="{third["id"]}"]', timeout=30_000)
        again = page.evaluate(f"window.__shown['{third['id']}']")
        assert abs(again["playing"] - _pdt_ms(third)) <= TOLERANCE_MS, (again, third)
        assert abs(again["time"] - expected[third["id"]]) <= TOLERANCE_MS / 1000

        # The WebVTT export is the video's "Chat" track, with the same cue times.
        starts = page.evaluate(
            "(() => { const t = Array.from(window.livePlayer.video.textTracks).find((t) => t.label === 'Chat');"
            " return t && t.cues ? Array.from(t.cues).map((c) => [Number(c.id), c.startTime]) : null; })()"
        )
        assert starts is not None
        assert [int(i) for i, _ in starts] == [m["id"] for m in kept]
        for message_id, start in starts:
            assert abs(start - expected[int(message_id)]) <= 0.01
        harness.screenshot(page, "chat-replay.png")


def _offset_in(playlist: str, pdt_ms: int) -> float:
    """Where a moment is in a media playlist: its segment's start plus the time into it."""
    offset, wall = 0.0, None
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            wall = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp() * 1000
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
            assert wall is not None
            if pdt_ms < wall + duration * 1000:
                return round(offset + max(0.0, pdt_ms - wall) / 1000, 3)
            offset += duration
    raise AssertionError("the moment is not in the replay")

"""Glass-to-glass latency of a viewer who joins a running stream, from pixels to pixels.

The publisher (``transcoding.golive``, the pipeline's test-pattern tool; ffmpeg at real time
with -re) burns the wall clock into every frame: a strip of 32 boxes of 16 px (on the 1280x720
source) at the top left, MSB first, = the wall clock in ms mod 2**32 read when the frame entered
the publisher's filter graph (``RTCTIME``), i.e. just before its encoder. Encoding, RTMP,
ingest, chunking, transcoding, upload, the edge, the player's buffer and decoding all count.
The page draws each presented frame (``requestVideoFrameCallback``) onto a canvas, decodes the
strip and subtracts it from ``Date.now()``; browser and ffmpeg share the machine's clock.
hls.js's own ``latency`` is printed next to it: it ignores everything before the playlist, so
it reads too low.

Each run: publish, wait until the stream has run a while, open the page (a viewer joining
late), let playback settle for WARMUP_S, then sample for WINDOW_S (30 s): median and p95 of
latency, and stalls (``waiting`` events while playing, not seeking).

Same page, same player (templates/streams/_player.html + static/js/player.js, our low-latency
config), two sources:
- ours: RTMP into the platform's pipeline (segmenter, Celery transcoding ladder, S3 origin,
  nginx edge), the stream's master playlist through the edge;
- peer: nginx-rtmp's own HLS (``hls on``, no transcoding at all), configured here.
Three runs, the publisher sending a keyframe every 2 s (the usual setting), WINDOW_S (60 s) each:
- peer: nginx-rtmp's HLS with 2 s fragments (the baseline);
- ours: standard HLS from our pipeline (a stream in the normal latency mode: 2 s MPEG-TS
  segments, the full ladder); target median <= 5 s, no stalls;
- ll: LL-HLS from our pipeline (a stream in the low latency mode: CMAF parts of ~0.25 s, the
  full ladder, blocking playlist reload through the edge; ADR 0031); target median <= 1.5 s,
  no stalls.
Rendition switches (hls.js LEVEL_SWITCHED in the window) and the renditions played are printed.

Time to first frame: a viewer waits on the real watch page (uvicorn: player, chat
socket) BEFORE the publisher starts; measured from the publisher's first frame (the clock burnt
into the first frame of the session's first segment, read back with ffmpeg) to the first frame
the page presents (``requestVideoFrameCallback``, ``Date.now()``). For 2 s and 1 s chunks, each
run on a fresh stream, alternating the page's start on ``stream.ready`` with the old start
(``?start=legacy``: hls.js on ``stream.live``, the master retried every 2 s on 404) as the
baseline measured in the same run; G2G_TTFF_RUNS runs of each (default 3), median. Target: no
later than chunk duration + 1.5 s. The load average is printed with the figures.
``G2G_PARTS=ttff`` (or ``steady``) runs only that part (default both), ``G2G_STEADY=ll`` only
those steady runs (default ``peer,ours,ll``); ``G2G_PAGE_QUERY`` is
appended to the steady-state pages' URL (e.g. ``?worker=1``: hls.js's transmuxing worker).
"""

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.template.loader import render_to_string

from livestream import devstack

ROOT = Path(__file__).resolve().parents[1]
# The clock strip of transcoding.golive (BOX px per bit on a WIDTH-wide source, BITS bits).
WIDTH = 1280
BOX = 16
BITS = 32
WARMUP_S = 5.0
WINDOW_S = float(os.environ.get("G2G_WINDOW_S", "60"))
RUNNING_BEFORE_JOIN_S = 12.0
NGINX_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
# Appended to the steady-state pages' URL, e.g. "?worker=1" (player.js page flags, docs/viewer.md).
PAGE_QUERY = os.environ.get("G2G_PAGE_QUERY", "")
# The streams of a run belong to users of that run (the bench database is kept between runs and
# a user may have at most 10 streams).
RUN_ID = f"{int(time.time())}"

# decode(video): the clock strip of the frame the video presents now (ms mod 2**32), or null.
DECODE_JS = """
  const BOX = %(box)d, WIDTH = %(width)d, BITS = %(bits)d, WRAP = 2 ** BITS;
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  function decode(video) {
    const w = video.videoWidth;
    if (!w) return null;
    const box = BOX * w / WIDTH, h = Math.max(1, Math.round(box)), cw = Math.ceil(box * BITS);
    canvas.width = cw; canvas.height = h;
    ctx.drawImage(video, 0, 0, cw, h, 0, 0, cw, h);
    const data = ctx.getImageData(0, 0, cw, h).data, y = Math.floor(h / 2);
    let v = 0;
    for (let b = 0; b < BITS; b++) {
      const o = (y * cw + Math.floor((b + 0.5) * box)) * 4;
      v = v * 2 + ((data[o] + data[o + 1] + data[o + 2]) / 3 > 128 ? 1 : 0);
    }
    return v;
  }
"""

# Decodes the clock strip of every presented frame; collects latency, hls.js latency, stalls.
CLOCK_JS = """
(() => {
  %(decode)s
  const g2g = window.g2g = { samples: [], hlsLatency: [], stalls: [], switches: [], bad: 0, playing: false };
  function attach(player) {
    const video = player.video;
    const onFrame = () => {
      const now = Date.now(), value = decode(video);
      const ms = value === null ? -1 : (((now %% WRAP) - value) %% WRAP + WRAP) %% WRAP;
      // A misread strip gives nonsense; a real reading is between 0 and 60 s old.
      if (ms < 0 || ms > 60000) g2g.bad += 1; else g2g.samples.push([now, ms / 1000]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    video.addEventListener("playing", () => { g2g.playing = true; });
    video.addEventListener("waiting", () => { if (g2g.playing && !video.seeking) g2g.stalls.push(Date.now()); });
    setInterval(() => {
      if (player.hls && player.hls.latency) g2g.hlsLatency.push([Date.now(), player.hls.latency]);
    }, 500);
    const watchLevels = (p) => {
      if (!p.hls || p.hls.__g2g) return;
      p.hls.__g2g = true;
      p.hls.on(window.Hls.Events.LEVEL_SWITCHED, (_e, d) => {
        const level = p.hls.levels[d.level];
        g2g.switches.push([Date.now(), level ? level.height : d.level]);
      });
    };
    watchLevels(player);
    document.addEventListener("live-player-ready", (e) => watchLevels(e.detail));
  }
  attach(window.livePlayer);
})();
"""

# On the waiting watch page: when stream.live / stream.ready reached the page, and the first
# presented frame (Date.now() and its burnt-in clock).
TTFF_JS = """
(() => {
  %(decode)s
  const t = window.ttff = { liveAt: 0, readyAt: 0, shownAt: 0, shownClock: null };
  const video = window.livePlayer.video;
  video.requestVideoFrameCallback(() => {
    t.shownAt = Date.now(); t.shownClock = decode(video);
    // The player's steps after stream.ready: the edge requests until this frame (ms after it).
    const from = window.livePlayer.readyAt;
    t.requests = performance.getEntriesByType("resource")
      .filter((e) => from && e.startTime >= from && /\\.(m3u8|ts)/.test(e.name))
      .map((e) => `${Math.round(e.startTime - from)}-${Math.round(e.responseEnd - from)} ${e.name.split("/").pop()}`);
    const b = video.buffered;
    t.at = { time: video.currentTime, buffered: b.length ? [b.start(0), b.end(b.length - 1)] : null,
             shown: Math.round(performance.now() - from), history: window.livePlayer.history.slice(-6) };
  });
  window.LiveSocket.on("stream.live", () => { t.liveAt = t.liveAt || Date.now(); });
  window.LiveSocket.on("stream.ready", () => { t.readyAt = t.readyAt || Date.now(); });
})();
"""


@dataclass
class Result:
    name: str
    chunk: float
    median: float
    p95: float
    hls_median: float
    stalls: int
    frames: int
    # Median seconds from a segment's last ingested frame (PROGRAM-DATE-TIME + EXTINF) to its
    # first listing at the edge: the pipeline's share of the latency (ours only).
    listed_after: float | None = None
    switches: int = 0  # rendition switches in the window
    levels: list[int] | None = None  # heights of the renditions played (from the start)

    def line(self) -> str:
        listed = "" if self.listed_after is None else f"; segments listed at the edge {self.listed_after:.2f} s "
        listed += "after their last frame was ingested" if listed else ""
        return (
            f"g2g {self.name:<5} chunk {self.chunk:g}s: median {self.median:.2f} s, p95 {self.p95:.2f} s, "
            f"stalls {self.stalls} in {WINDOW_S:.0f} s, rendition switches {self.switches} "
            f"(played {'/'.join(f'{h}p' for h in self.levels or []) or '?'}) "
            f"(hls.js latency says {self.hls_median:.2f} s{listed}; {self.frames} frames decoded)"
        )


class ListingWatch(threading.Thread):
    """Polls a live media playlist at the edge every 100 ms and records, per segment, how long
    after its last ingested frame (PROGRAM-DATE-TIME + EXTINF) it was first listed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.delays: dict[str, float] = {}

    def run(self) -> None:
        seen: set[str] = set()
        first = True
        while not self.stop.wait(0.1):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310 (our edge)
                    text = response.read().decode()
            except (urllib.error.URLError, OSError):
                continue
            now, pdt, duration = time.time(), None, 0.0
            for line in text.splitlines():
                if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                    pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
                elif line.startswith("#EXTINF:"):
                    duration = float(line[8:].split(",")[0])
                elif line and not line.startswith("#"):
                    if line not in seen and not first and pdt is not None:
                        self.delays[line] = now - (pdt + duration)
                    seen.add(line)
                    pdt = None
            first = False  # segments already listed at the first look have unknown listing times

    def median(self) -> float | None:
        return statistics.median(self.delays.values()) if self.delays else None


def publisher_command(url: str, gop_s: float = 2.0) -> list[str]:
    """The pipeline's own test-pattern publisher (``manage.py golive``, transcoding/golive.py):
    720p30, a keyframe every ``gop_s`` (2 s: what streamers are told to set), zero-latency x264,
    AAC, and the clock strip: 32 boxes of 16 px, MSB first, = wall clock ms mod 2**32 of each frame."""
    from transcoding.golive import PublishOptions, publish_args

    return publish_args(PublishOptions(url=url, clock_boxes=True, gop_s=gop_s))


def nginx_config(base: Path, rtmp_port: int, http_port: int) -> Path:
    """nginx-rtmp with ``hls on`` per chunk length (the peer), and an HTTP server for its HLS
    and the bench pages (one origin, so no CORS in the peer's path)."""
    apps = "\n".join(
        f"""    application peer{chunk} {{
      live on;
      hls on;
      hls_path {base}/www/peer{chunk};
      hls_fragment {chunk}s;
      hls_playlist_length {chunk * 6}s;
      hls_cleanup on;
    }}"""
        for chunk in (1, 2)
    )
    config = f"""load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 256; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    chunk_size 4096;
{apps}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {base}/tmp-body;
  proxy_temp_path {base}/tmp-proxy;
  fastcgi_temp_path {base}/tmp-fastcgi;
  uwsgi_temp_path {base}/tmp-uwsgi;
  scgi_temp_path {base}/tmp-scgi;
  types {{
    text/html html; application/javascript js; text/css css;
    application/vnd.apple.mpegurl m3u8; video/mp2t ts;
  }}
  server {{
    listen 127.0.0.1:{http_port};
    root {base}/www;
    add_header Cache-Control no-cache;
    add_header Access-Control-Allow-Origin *;
  }}
}}
"""  # noqa: S108 (temp paths inside the bench's private temp dir)
    path = base / "nginx.conf"
    path.write_text(config)
    return path


def _decode_js() -> str:
    return DECODE_JS % {"box": BOX, "width": WIDTH, "bits": BITS}


def write_page(www: Path, name: str, src: str) -> str:
    """The bench page: the watch page's player markup and scripts, plus the clock decoder."""
    player = render_to_string(
        "streams/_player.html",
        {
            "stream": {"title": name, "owner": {"public_name": "bench"}},
            "player_config": {"mode": "live", "src": src, "live": True, "streamId": 0, "statusUrl": ""},
        },
    )
    clock = CLOCK_JS % {"decode": _decode_js()}
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<link rel="stylesheet" href="/static/app.css"><link rel="stylesheet" href="/static/player.css"></head>
<body style="width:1280px">{player}
<script src="/static/hls.min.js"></script><script src="/static/player.js"></script>
<script>{clock}</script></body></html>"""
    (www / f"{name}.html").write_text(html)
    return f"/{name}.html"


def copy_static(www: Path) -> None:
    static = www / "static"
    static.mkdir(parents=True, exist_ok=True)
    for rel in ("vendor/hls.min.js", "js/player.js", "css/app.css", "css/player.css"):
        shutil.copy(ROOT / "static" / rel, static / Path(rel).name)


def measure(context: Any, url: str, name: str, chunk: float) -> Result:
    """Open ``url`` as a late joiner; sample WINDOW_S of steady play after WARMUP_S."""
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function("() => window.g2g && window.g2g.samples.length > 0", timeout=90_000)
        page.wait_for_timeout(WARMUP_S * 1000)
        start = page.evaluate("Date.now()")
        page.wait_for_timeout(WINDOW_S * 1000)
        data = page.evaluate(f"""(() => {{
          const g = window.g2g, s = {start};
          return {{ samples: g.samples.filter(x => x[0] >= s).map(x => x[1]),
                    hls: g.hlsLatency.filter(x => x[0] >= s).map(x => x[1]),
                    stalls: g.stalls.filter(t => t >= s).length,
                    switches: g.switches.filter(x => x[0] >= s).map(x => x[1]),
                    levels: g.switches.map(x => x[1]) }};
        }})()""")
    finally:
        page.close()
    samples = sorted(data["samples"])
    if len(samples) < WINDOW_S * 5:
        raise RuntimeError(f"{name}: only {len(samples)} frames decoded in {WINDOW_S:.0f} s (clock strip unreadable?)")
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    hls = data["hls"] or [float("nan")]
    return Result(
        name,
        chunk,
        statistics.median(samples),
        p95,
        statistics.median(hls),
        data["stalls"],
        len(samples),
        switches=len(data["switches"]),
        levels=sorted({int(h) for h in data["levels"]}),
    )


@contextmanager
def browser() -> Iterator[Any]:
    from tests.browser.harness import chromium

    with chromium({"width": 1280, "height": 900}) as context:
        yield context


def run_peer(context: Any, base: Path, rtmp_port: int, http_port: int, chunk: int) -> Result:
    url = f"rtmp://127.0.0.1:{rtmp_port}/peer{chunk}/bench"
    with devstack.running(publisher_command(url), base / f"publish-peer{chunk}.log"):
        playlist = base / "www" / f"peer{chunk}" / "bench.m3u8"
        devstack.wait_until(playlist.exists, 30, "nginx-rtmp HLS playlist")
        time.sleep(RUNNING_BEFORE_JOIN_S)
        page = write_page(base / "www", f"peer{chunk}", f"/peer{chunk}/bench.m3u8")
        return measure(context, f"http://127.0.0.1:{http_port}{page}{PAGE_QUERY}", "peer", chunk)


def run_ours(context: Any, live: Any, base: Path, http_port: int, chunk: int, *, mode: str = "normal") -> Result:
    """Publish into the platform's pipeline (a stream in latency ``mode``: ``normal`` = standard
    HLS with ``chunk``-second segments, ``low`` = LL-HLS) and watch via the edge."""
    live.set_chunk(chunk)
    stream_id, publish_url = live.new_stream(f"g2g {mode} {chunk}s", owner=f"bench-g2g-{RUN_ID}", mode=mode)
    name = "ll" if mode == "low" else "ours"
    with devstack.running(publisher_command(publish_url), base / f"publish-{name}{chunk}.log"):
        live.wait_playable(stream_id, timeout=60)
        watch = ListingWatch(live.media_playlist_url(stream_id))
        watch.start()
        try:
            time.sleep(RUNNING_BEFORE_JOIN_S)
            page = write_page(base / "www", f"{name}{chunk}", live.playback_url(stream_id))
            result = measure(context, f"http://127.0.0.1:{http_port}{page}{PAGE_QUERY}", name, chunk)
        finally:
            watch.stop.set()
            watch.join(timeout=5)
        result.listed_after = watch.median()
        return result


@dataclass
class FirstFrame:
    """One viewer waiting before the publish: seconds after the publisher's first frame."""

    mode: str  # "ready" (stream.ready) or "legacy" (stream.live + 2 s retries)
    shown: float  # the page presented its first frame
    ready: float | None  # stream.ready reached the page
    live: float | None  # stream.live reached the page
    into: float | None  # which frame it was: seconds after the publisher's first one
    load: float  # 1-minute load average at the time


def _since(epoch_ms: int, clock_ms: int) -> float:
    """Seconds from the clock value ``clock_ms`` (ms mod 2**32) to ``epoch_ms``; negative when
    before it (stream.live reaches the page before the publisher's first frame is encoded)."""
    wrap = 2**BITS
    delta = (epoch_ms % wrap - clock_ms) % wrap
    return (delta - wrap if delta > wrap // 2 else delta) / 1000


def _first_segment_clock(live: Any, stream_id: int) -> int:
    """The clock strip of the publisher's first frame: the first frame of the session's first
    published segment of its first rendition (read through the edge with ffmpeg)."""
    from streams.playback import session_prefix
    from transcoding.golive import read_clock

    session = live.session_id(stream_id)
    base = f"{live.edge_url}/{session_prefix(stream_id, session)}/"
    _, master = _get_text(base + "master.m3u8")
    lines = master.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF"))
    width = int(lines[index].split("RESOLUTION=")[1].split("x")[0])
    playlist_uri = lines[index + 1]
    _, playlist = _get_text(base + playlist_uri)
    segment = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
    folder = playlist_uri.rsplit("/", 1)[0]
    maps = [line.split('URI="')[1].rstrip('"') for line in playlist.splitlines() if line.startswith("#EXT-X-MAP:")]
    if maps:  # CMAF (LL-HLS): the segment decodes after its init section
        with tempfile.NamedTemporaryFile(suffix=".mp4") as joined:
            for uri in (maps[0], segment):
                with urllib.request.urlopen(f"{base}{folder}/{uri}", timeout=5) as response:  # noqa: S310 (our edge)
                    joined.write(response.read())
            joined.flush()
            clock = read_clock(joined.name, width=width)
    else:
        clock = read_clock(f"{base}{folder}/{segment}", width=width)
    if clock is None:
        raise RuntimeError(f"no clock in the first segment of stream {stream_id}")
    return clock


def _get_text(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own edge)
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def measure_first_frame(context: Any, live: Any, base: Path, chunk: int, *, mode: str, latency: str) -> FirstFrame:
    """A viewer on the stream's watch page before the publisher starts; the publisher starts;
    when does the page show its first frame? ``latency``: the stream's latency mode."""
    owner = f"bench-ttff-{RUN_ID}-{latency}-{mode}"
    stream_id, publish_url = live.new_stream(f"ttff {latency} {chunk}s {mode}", owner=owner, mode=latency)
    page = context.new_page()
    try:
        page.goto(live.watch_url(stream_id) + ("?start=legacy" if mode == "legacy" else ""))
        page.wait_for_function("() => window.LiveSocket && window.LiveSocket.isOpen()", timeout=30_000)
        page.evaluate(TTFF_JS % {"decode": _decode_js()})
        with devstack.running(publisher_command(publish_url), base / f"publish-ttff-{latency}-{mode}.log"):
            page.wait_for_function("() => window.ttff.shownAt > 0", timeout=90_000)
            load = os.getloadavg()[0]
            data = page.evaluate("window.ttff")
            first = _first_segment_clock(live, stream_id)
    finally:
        page.close()

    if os.environ.get("G2G_VERBOSE"):
        print(f"  ttff {mode} {chunk}s: {data}", flush=True)

    def since(epoch_ms: int) -> float | None:
        return _since(epoch_ms, first) if epoch_ms else None

    shown = since(data["shownAt"])
    assert shown is not None
    clock = data["shownClock"]
    into = ((clock - first) % 2**BITS) / 1000 if clock is not None else None
    return FirstFrame(mode, shown, since(data["readyAt"]), since(data["liveAt"]), into, load)


def _median(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def first_frame_lines(runs: list[FirstFrame], chunk: int, label: str) -> list[str]:
    lines = []
    for mode in ("ready", "legacy"):
        mine = [r for r in runs if r.mode == mode]
        if not mine:
            continue
        start = "stream.ready" if mode == "ready" else "legacy 2 s polling"
        lines.append(
            f"ttff {mode:<6} {label}: median {_median([r.shown for r in mine]):.2f} s "
            f"(runs {', '.join(f'{r.shown:.2f}' for r in mine)}; {start}; "
            f"stream.live at the page {_median([r.live for r in mine]):+.2f} s, "
            f"stream.ready {_median([r.ready for r in mine]):.2f} s (the pipeline's share), first frame "
            f"{_median([_player_share(r) for r in mine]):.2f} s after it (the player's); first frame shown = "
            f"publisher's +{_median([r.into for r in mine]):.2f} s; load {_median([r.load for r in mine]):.1f})"
        )
    ready = _median([r.shown for r in runs if r.mode == "ready"])
    legacy = _median([r.shown for r in runs if r.mode == "legacy"])
    player_ready = _median([_player_share(r) for r in runs if r.mode == "ready"])
    player_legacy = _median([_player_share(r) for r in runs if r.mode == "legacy"])
    target = chunk + 1.5
    verdict = "meets" if ready <= target else "MISSES"
    lines.append(
        f"time_to_first_frame {label}: stream.ready {ready:.2f} s vs legacy polling {legacy:.2f} s "
        f"(player's share {player_ready:.2f} s vs {player_legacy:.2f} s); {verdict} target <= {target:g} s "
        f"(chunk + 1.5 s); load average {os.getloadavg()[0]:.1f} (2 cores)"
    )
    return lines


def _player_share(r: FirstFrame) -> float | None:
    """From stream.ready reaching the page to its first frame (legacy pages get the event too)."""
    return None if r.ready is None else r.shown - r.ready


def run_first_frames(context: Any, live: Any, base: Path, chunk: int, runs: int, *, latency: str) -> list[str]:
    live.set_chunk(chunk)
    results: list[FirstFrame] = []
    for _ in range(runs):
        for mode in ("ready", "legacy"):  # alternated, so both see the same load
            results.append(measure_first_frame(context, live, base, chunk, mode=mode, latency=latency))
    label = "LL-HLS" if latency == "low" else f"chunk {chunk}s"
    return first_frame_lines(results, chunk, label)


def run(args: argparse.Namespace) -> list[str]:
    global WINDOW_S, RUNNING_BEFORE_JOIN_S
    if getattr(args, "quick", False):
        WINDOW_S, RUNNING_BEFORE_JOIN_S = 10.0, 6.0
    from bench import _live_stack

    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="g2g-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the stack's nginx workers run unprivileged when started as root
        (base / "www").mkdir()
        copy_static(base / "www")
        rtmp_port, http_port = devstack.free_port(), devstack.free_port()
        config = nginx_config(base, rtmp_port, http_port)
        with (
            devstack.running(["nginx", "-p", str(base), "-c", str(config)], base / "nginx.log"),
            _live_stack.stack(base / "stack") as live,
            browser() as context,
        ):
            devstack.wait_until(
                lambda: devstack.port_open(http_port) and devstack.port_open(rtmp_port), 10, "nginx-rtmp"
            )
            parts = os.environ.get("G2G_PARTS", "steady,ttff").split(",")
            runs = int(os.environ.get("G2G_TTFF_RUNS", "2" if getattr(args, "quick", False) else "3"))
            for latency in ("normal", "low") if "ttff" in parts else ():
                try:
                    lines.extend(run_first_frames(context, live, base, 2, runs, latency=latency))
                except Exception as exc:  # report, and go on
                    lines.append(f"ttff {latency}: FAILED: {type(exc).__name__}: {exc}")
            if "steady" in parts:
                lines.extend(run_steady(context, live, base, rtmp_port, http_port))
    return lines


def run_steady(context: Any, live: Any, base: Path, rtmp_port: int, http_port: int) -> list[str]:
    """The nginx-rtmp baseline, standard HLS and LL-HLS from our pipeline, keyframes every 2 s."""
    lines: list[str] = []
    results: dict[str, Result] = {}
    wanted = os.environ.get("G2G_STEADY", "peer,ours,ll").split(",")
    for name, run_one in (
        ("peer", lambda: run_peer(context, base, rtmp_port, http_port, 2)),
        ("ours", lambda: run_ours(context, live, base, http_port, 2, mode="normal")),
        ("ll", lambda: run_ours(context, live, base, http_port, 2, mode="low")),
    ):
        if name not in wanted:
            continue
        try:
            results[name] = run_one()
            lines.append(results[name].line())
        except Exception as exc:  # report, and go on with the others
            lines.append(f"g2g {name}: FAILED: {type(exc).__name__}: {exc}")
    peer, ours, ll = results.get("peer"), results.get("ours"), results.get("ll")
    if peer and ours:
        verdict = "meets" if ours.median <= 5.0 and ours.stalls == 0 else "MISSES"
        lines.append(
            f"glass_to_glass standard HLS: ours median {ours.median:.2f} s vs nginx-rtmp HLS {peer.median:.2f} s = "
            f"{ours.median / peer.median:.2f}x; stalls {ours.stalls} vs {peer.stalls}; {verdict} target median <= 5 s, "
            "no stalls"
        )
    if ll and peer and ours:
        verdict = "meets" if ll.median <= 1.5 and ll.stalls == 0 else "MISSES"
        lines.append(
            f"glass_to_glass LL-HLS: median {ll.median:.2f} s, p95 {ll.p95:.2f} s vs standard HLS {ours.median:.2f} s "
            f"({ll.median / ours.median:.2f}x) vs nginx-rtmp HLS {peer.median:.2f} s ({ll.median / peer.median:.2f}x); "
            f"stalls {ll.stalls}, rendition switches {ll.switches}; {verdict} target median <= 1.5 s, no stalls"
        )
    return lines

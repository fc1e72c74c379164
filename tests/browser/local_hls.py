"""Stand-in HLS for browser tests of player plumbing: ffmpeg writes a two-rendition live (or
VOD) HLS ladder into a directory laid out like the edge (``live/<stream>/master.m3u8``), served
over HTTP with CORS by a small threaded server. The acceptance test of the watch page uses the
real pipeline instead (tests/browser/test_watch.py).
"""

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from livestream import devstack


class _CorsHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _DvrHandler(_CorsHandler):
    """Serves a ladder written with every segment kept (``dvr_ladder``) the way the origin serves
    a live session (ADR 0029): the master points at ``<rendition>/live.m3u8``, the newest
    ``LIVE_WINDOW`` segments of ``index.m3u8``, which is the DVR window."""

    LIVE_WINDOW = 6

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if path.name == "master.m3u8" and path.exists():
            self._playlist(path.read_text().replace("/index.m3u8", "/live.m3u8"))
        elif path.name == "live.m3u8" and path.with_name("index.m3u8").exists():
            self._playlist(self._window(path.with_name("index.m3u8").read_text()))
        else:
            super().do_GET()

    def _window(self, text: str) -> str:
        head, segments, pending, sequence = [], [], [], 0
        for line in text.splitlines():
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                sequence = int(line.split(":", 1)[1])
            elif line.startswith(("#EXTINF", "#EXT-X-PROGRAM-DATE-TIME")):
                pending.append(line)
            elif line and not line.startswith("#"):
                segments.append([*pending, line])
                pending = []
            elif not segments and line != "#EXT-X-ENDLIST":
                head.append(line)
        dropped = max(0, len(segments) - self.LIVE_WINDOW)
        head = [f"#EXT-X-MEDIA-SEQUENCE:{sequence + dropped}" if h.startswith("#EXT-X-MEDIA") else h for h in head]
        if not any(h.startswith("#EXT-X-MEDIA-SEQUENCE") for h in head):
            head.append(f"#EXT-X-MEDIA-SEQUENCE:{sequence + dropped}")
        tail = ["#EXT-X-ENDLIST"] if "#EXT-X-ENDLIST" in text else []
        return "\n".join([*head, *(line for seg in segments[dropped:] for line in seg), *tail]) + "\n"

    def _playlist(self, text: str) -> None:
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apple.mpegurl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def static_server(root: Path, *, dvr: bool = False) -> Iterator[str]:
    """``root`` over HTTP with CORS; with ``dvr``, live playlists as the origin serves them."""
    handler = _DvrHandler if dvr else _CorsHandler
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def ladder_command(out_dir: Path, *, seconds: float | None, vod: bool, keep_all: bool = False) -> list[str]:
    """Two renditions (360p, 180p) of a test pattern with 1 s segments and a master playlist;
    live with ``keep_all``: every segment stays listed (the DVR layout of ``_DvrHandler``)."""
    live_flags = ["-hls_flags", "independent_segments" if keep_all else "delete_segments+independent_segments"]
    duration = ["-t", str(seconds)] if seconds else []
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        *([] if vod else ["-re"]), "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        *([] if vod else ["-re"]), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        *duration,
        "-filter_complex", "[0:v]split=2[a][b];[b]scale=320:180[c]",
        "-map", "[a]", "-map", "[c]", "-map", "1:a", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-keyint_min", "30",
        "-sc_threshold", "0", "-b:v:0", "800k", "-b:v:1", "200k", "-c:a", "aac", "-b:a", "64k",
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "0" if vod or keep_all else "6",
        *(["-hls_playlist_type", "vod"] if vod else live_flags),
        "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,a:0 v:1,a:1",
        "-hls_segment_filename", str(out_dir / "%v" / "seg_%05d.ts"), str(out_dir / "%v" / "index.m3u8"),
    ]  # fmt: skip


@contextmanager
def live_ladder(out_dir: Path, *, keep_all: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """A running live HLS ladder in ``out_dir`` (master written once the first segments exist)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(ladder_command(out_dir, seconds=None, vod=False, keep_all=keep_all), stderr=subprocess.PIPE)
    try:
        devstack.wait_until(
            lambda: (out_dir / "master.m3u8").exists() and (out_dir / "1" / "index.m3u8").exists(), 30, "ffmpeg HLS"
        )
        yield proc
    finally:
        devstack.stop_process(proc)


def vod_ladder(out_dir: Path, seconds: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(ladder_command(out_dir, seconds=seconds, vod=True), check=True, timeout=120, capture_output=True)

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


@contextmanager
def static_server(root: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_CorsHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def ladder_command(out_dir: Path, *, seconds: float | None, vod: bool) -> list[str]:
    """Two renditions (360p, 180p) of a test pattern with 1 s segments and a master playlist."""
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
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "0" if vod else "6",
        *(["-hls_playlist_type", "vod"] if vod else ["-hls_flags", "delete_segments+independent_segments"]),
        "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,a:0 v:1,a:1",
        "-hls_segment_filename", str(out_dir / "%v" / "seg_%05d.ts"), str(out_dir / "%v" / "index.m3u8"),
    ]  # fmt: skip


@contextmanager
def live_ladder(out_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running live HLS ladder in ``out_dir`` (master written once the first segments exist)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(ladder_command(out_dir, seconds=None, vod=False), stderr=subprocess.PIPE)
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

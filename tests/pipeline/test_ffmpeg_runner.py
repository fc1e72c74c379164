"""transcoding/ffmpeg.py, the one module that runs ffmpeg/ffprobe: real ffmpeg processes."""

import shutil
import threading
import time

import pytest

from transcoding import ffmpeg

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

# Reads raw audio from stdin until it closes: runs for as long as its stdin stays open.
READS_STDIN = [ffmpeg.FFMPEG, "-hide_banner", "-nostdin", "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "pipe:0",
               "-f", "null", "-"]  # fmt: skip
# Works in real time for ever (as a segmenter's ffmpeg does while the publish goes on). An ffmpeg
# blocked reading an idle stdin does not act on SIGTERM (its read restarts): that one ends at
# EOF, when its parent's end closes the pipe.
RUNS = [ffmpeg.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "anullsrc",
        "-f", "null", "-"]  # fmt: skip


def test_run_bytes_returns_stdout_and_feeds_stdin():
    raw = ffmpeg.run_bytes(
        [ffmpeg.FFMPEG, "-v", "error", "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "pipe:0", "-f", "s16le", "-"],
        input=b"\x01\x02" * 800,
        timeout=20,
        context={},
    )
    assert raw == b"\x01\x02" * 800


def test_a_failure_raises_with_the_tail_of_stderr():
    with pytest.raises(ffmpeg.FFmpegError, match="exited") as failed:
        ffmpeg.run_bytes([ffmpeg.FFMPEG, "-v", "error", "-i", "/nonexistent/input.ts"], timeout=20, context={})
    assert "/nonexistent/input.ts" in failed.value.stderr


def test_a_timeout_kills_it_and_raises():
    started = time.monotonic()
    with pytest.raises(ffmpeg.FFmpegError, match="timed out"):
        ffmpeg.run_bytes(
            [ffmpeg.FFMPEG, "-v", "error", "-re", "-f", "lavfi", "-i", "anullsrc", "-f", "null", "-"],
            timeout=1,
            context={},
        )
    assert time.monotonic() - started < 10


def test_a_spawned_ffmpeg_dies_with_the_thread_that_started_it():
    """The segmenter's ffmpeg never outlives its thread, even when nobody stops it (the
    parent-death signal), although its stdin is still open here."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    spawned = []

    def segmenter() -> None:
        spawned.append(ffmpeg.spawn(RUNS))
        time.sleep(1)  # a segmenter's life: setpriv has set the signal and exec'd ffmpeg by now

    thread = threading.Thread(target=segmenter)
    thread.start()
    thread.join()
    proc = spawned[0]
    assert proc.args[:2] == ["setpriv", "--pdeathsig"]
    try:
        assert proc.wait(timeout=10) != 0  # SIGTERM from the kernel
    finally:
        ffmpeg.stop(proc)


def test_stop_ends_a_spawned_ffmpeg():
    proc = ffmpeg.spawn(READS_STDIN)
    assert proc.poll() is None
    ffmpeg.stop(proc, timeout=5)
    assert proc.returncode is not None

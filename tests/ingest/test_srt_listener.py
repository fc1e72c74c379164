"""The libsrt binding (``transcoding.srt``) with a real ffmpeg as the SRT caller: the listener
judges each caller by its stream id during the handshake, an accepted connection delivers
every byte of the MPEG-TS the caller sent, and a passphrase set on the listener refuses
callers without it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from livestream import devstack
from transcoding import srt

FRAMES = 60  # 2 s at 30 fps


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("srt") / "clip.ts"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-frames:v", str(FRAMES),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-f", "mpegts", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def call(url: str, clip: Path) -> subprocess.CompletedProcess[bytes]:
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-re", "-i", str(clip), "-c", "copy"]
    return subprocess.run([*argv, "-f", "mpegts", url], capture_output=True, timeout=60, check=False)


def receive_all(listener: srt.Listener, out: list[bytes], ids: list[str]) -> None:
    connection = None
    for _ in range(40):
        connection = listener.accept(500)
        if connection is not None:
            break
    if connection is None:
        return
    ids.append(connection.stream_id)
    try:
        while True:
            out.append(connection.recv(2000))
    except srt.ConnectionClosedError:
        pass
    finally:
        connection.close()


def video_frames(path: Path) -> int:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return int(result.stdout.split()[0])  # (printed once per program too)


@pytest.mark.parametrize("passphrase", ["", "a-good-passphrase"])
def test_accepted_callers_deliver_everything_refused_ones_get_no_connection(clip, tmp_path, passphrase):
    callers: list[srt.Caller] = []

    def decide(caller: srt.Caller) -> int | None:
        callers.append(caller)
        return None if caller.stream_id == "good" else srt.REJECT_FORBIDDEN

    port = devstack.free_port()
    listener = srt.Listener("127.0.0.1", port, decide, latency_ms=120, passphrase=passphrase)
    try:
        suffix = f"&passphrase={passphrase}" if passphrase else ""
        refused = call(f"srt://127.0.0.1:{port}?streamid=bad{suffix}", clip)
        assert refused.returncode != 0
        assert b"REJECT" in refused.stderr or b"failed" in refused.stderr, refused.stderr
        assert [c.stream_id for c in callers] == ["bad"]
        assert callers[0].address.startswith("127.0.0.1:")

        if passphrase:  # no passphrase, or a wrong one: no connection either
            for wrong in ("", "&passphrase=another-passphrase"):
                assert call(f"srt://127.0.0.1:{port}?streamid=good{wrong}", clip).returncode != 0

        received: list[bytes] = []
        ids: list[str] = []
        receiver = threading.Thread(target=receive_all, args=(listener, received, ids))
        receiver.start()
        accepted = call(f"srt://127.0.0.1:{port}?streamid=good{suffix}", clip)
        receiver.join(timeout=30)
        assert accepted.returncode == 0, accepted.stderr
        assert ids == ["good"]
        out = tmp_path / "received.ts"
        out.write_bytes(b"".join(received))
        assert len(out.read_bytes()) % 188 == 0
        assert video_frames(out) == FRAMES
    finally:
        listener.close()


def test_a_listener_refuses_a_port_in_use():
    port = devstack.free_port()
    first = srt.Listener("127.0.0.1", port, lambda caller: None, latency_ms=120)
    try:
        with pytest.raises(srt.SrtError, match="already listening"):
            srt.Listener("127.0.0.1", port, lambda caller: None, latency_ms=120)
    finally:
        first.close()


def test_socket_addresses():
    assert srt.sockaddr("127.0.0.1", 9998)[:4] == b"\x02\x00\x27\x0e"
    assert len(srt.sockaddr("::1", 9998)) == 28

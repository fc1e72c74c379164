"""How a relay's end is told in plain words (``simulcast.relay.failure_reason``), from stderr
that ffmpeg 5.1 really printed in each case, and the retry schedule."""

import subprocess

import pytest

from livestream import devstack
from simulcast.relay import MASK, backoff_s, failure_reason
from transcoding import ffmpeg

SOURCE = "rtmp://127.0.0.1:1935/live/s5c1"
TARGET = "rtmp://a.example:1935/live/secret-key"


def reason(lines: list[str], *, target: str = TARGET, was_live: bool = False, code: int | None = 1) -> tuple[str, str]:
    return failure_reason(lines, target_url=target, source=SOURCE, was_live=was_live, code=code)


def test_connection_refused_names_the_host_and_port():
    lines = [
        "[tcp @ 0x55abbf36d340] Connection to tcp://a.example:1935?tcp_nodelay=0 failed: Connection refused",
        "[rtmp @ 0x55abbf36f7c0] Cannot open connection tcp://a.example:1935?tcp_nodelay=0",
        f"rtmp://a.example:1935/live/{MASK}: Connection refused",
    ]
    assert reason(lines) == ("output", "connection refused by a.example:1935")


def test_unknown_host():
    lines = [
        "[tcp @ 0x55c38eca9880] Failed to resolve hostname nosuchhost.invalid: Name or service not known",
        f"rtmp://nosuchhost.invalid/live/{MASK}: Input/output error",
    ]
    got = reason(lines, target="rtmp://nosuchhost.invalid/live/k")
    assert got == ("output", "the host name nosuchhost.invalid does not resolve")


def test_a_target_that_accepts_and_never_answers_times_out():
    lines = ["[rtmp @ 0x563ad64e7a40] Cannot read RTMP handshake response", f"{TARGET}: Connection timed out"]
    assert reason(lines) == ("output", "no answer from a.example:1935 (timed out)")


def test_publish_denied_by_the_service():
    lines = [
        "av_interleaved_write_frame(): Broken pipe",
        "[flv @ 0x55fa33e2d980] Failed to update header with correct duration.",
        f"Error writing trailer of rtmps://a.example:443/app/{MASK}: Broken pipe",
    ]
    side, why = reason(lines, target="rtmps://a.example/app/k")
    assert side == "output"
    assert why.startswith("publish rejected by a.example:443: authentication rejected")
    assert reason(lines, was_live=True) == ("output", "a.example:1935 closed the connection")


def test_server_error_that_names_authentication():
    lines = ["[rtmp @ 0x1] Server error: Authentication failed.", f"rtmp://a.example:1935/live/{MASK}: Unknown error"]
    assert reason(lines) == ("output", "authentication rejected by a.example:1935: Authentication failed.")


def test_unknown_application_on_the_target():
    lines = [f"rtmp://a.example:1935/nosuchapp/{MASK}: Input/output error"]
    assert reason(lines) == (
        "output",
        "publish rejected by a.example:1935: the server closed the connection (Input/output error; check the key)",
    )


def test_the_local_stream_missing_or_ended_is_not_the_targets_fault():
    lines = [
        "[tcp @ 0x560f8985d900] Connection to tcp://127.0.0.1:1935?tcp_nodelay=0 failed: Connection refused",
        f"{SOURCE}: Connection refused",
    ]
    assert reason(lines)[0] == "input"
    assert reason([], code=0) == ("input", "the live stream ended")


def test_a_real_relay_without_its_local_stream_fails_on_the_input_side():
    """The real ffmpeg command of a relay, its local stream absent (nothing on that port)."""
    port = devstack.free_port()
    source = f"rtmp://127.0.0.1:{port}/live/s1c1"
    done = subprocess.run(
        ffmpeg.relay_args(source, "rtmp://a.example/live/k", timeout_s=3), capture_output=True, timeout=30, check=False
    )
    lines = done.stderr.decode().splitlines()
    side, _ = failure_reason(lines, target_url="rtmp://a.example/live/k", source=source, was_live=False, code=1)
    assert done.returncode != 0
    assert side == "input", lines


@pytest.mark.parametrize(("failures", "wait"), [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)])
def test_backoff_doubles_up_to_the_cap(settings, failures, wait):
    settings.SIMULCAST_RETRY_MIN_S, settings.SIMULCAST_RETRY_MAX_S = 2.0, 60.0
    assert backoff_s(failures) == wait


def test_relay_command_copies_without_reencoding():
    args = ffmpeg.relay_args(SOURCE, TARGET)
    assert args[args.index("-i") + 1] == SOURCE
    assert args[-1] == TARGET
    assert args[args.index("-c") + 1] == "copy"
    assert args[args.index("-f", args.index("-i")) + 1] == "flv"
    assert not any(a.startswith(("-c:v", "-vf", "-b:v")) for a in args)


def test_untrusted_certificate_of_an_rtmps_target():
    """What ffmpeg (GnuTLS) prints when the target's certificate fails verification."""
    lines = [
        "[tls @ 0x5598d0556c80] Peer certificate failed verification",
        "[rtmps @ 0x5598d05598c0] Cannot open connection tls://a.example:443",
        f"rtmps://a.example:443/app/{MASK}: Input/output error",
    ]
    side, why = reason(lines, target="rtmps://a.example/app/k")
    assert side == "output"
    assert why.startswith("the TLS certificate of a.example:443 is not trusted")


def test_rtmps_targets_are_verified_rtmp_ones_have_nothing_to_verify():
    from transcoding import ffmpeg

    secure = ffmpeg.relay_args("rtmp://127.0.0.1/live/s1c1", "rtmps://a.example/app/k", ca_file="/ca.pem")
    assert secure[secure.index("-tls_verify") + 1] == "1"
    assert secure[secure.index("-ca_file") + 1] == "/ca.pem"
    assert secure.index("-ca_file") < secure.index("rtmps://a.example/app/k")
    plain = ffmpeg.relay_args("rtmp://127.0.0.1/live/s1c1", "rtmp://a.example/app/k", ca_file="/ca.pem")
    assert "-tls_verify" not in plain

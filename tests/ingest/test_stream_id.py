"""The SRT stream id names the stream key (``transcoding.srt_ingest.parse_stream_id``), and the
SRT URL streamers are shown carries it (``streams.playback.srt_url``)."""

import pytest

from streams.playback import srt_url as public_url
from transcoding import srt
from transcoding.srt_ingest import StreamIdError, parse_stream_id

KEY = "live_Ab3-_xYz0123456789abcdefghijklmn"


@pytest.mark.parametrize(
    "stream_id",
    [
        KEY,
        f"  {KEY}\n",
        f"live/{KEY}",
        f"#!::r={KEY},m=publish",
        f"#!::m=publish,r={KEY}",
        f"#!::r={KEY}",  # no mode: this listener only takes publishers
        f"#!::u=alice,r=live/{KEY},m=publish,s=abc123,t=stream",
        f"#!:: r = {KEY} , m = publish",
        f"publish:{KEY}",
        f"publish:live/{KEY}",
        f"%23!::r={KEY},m=publish",  # "#" percent-encoded in a URL, passed on undecoded
        f"%23%21%3A%3Ar%3D{KEY}%2Cm%3Dpublish",
    ],
)
def test_every_accepted_form_gives_the_key(stream_id):
    assert parse_stream_id(stream_id) == KEY


@pytest.mark.parametrize(
    ("stream_id", "says", "reject"),
    [
        ("", "no stream id", srt.REJECT_BAD_REQUEST),
        ("   ", "no stream id", srt.REJECT_BAD_REQUEST),
        (f"#!::r={KEY},m=request", "publishers only", srt.REJECT_BAD_MODE),
        (f"#!::r={KEY},m=bidirectional", "publishers only", srt.REJECT_BAD_MODE),
        (f"#!::r={KEY},t=file", "t=stream", srt.REJECT_BAD_MODE),
        (f"read:{KEY}", "publishers only", srt.REJECT_BAD_MODE),
        ("#!::m=publish", "no r=", srt.REJECT_BAD_REQUEST),
        (f"#!::r={KEY},m", "malformed stream id item", srt.REJECT_BAD_REQUEST),
        (f"#!::r={KEY},r=other", "given twice", srt.REJECT_BAD_REQUEST),
        ("#!::r=,m=publish", "names no stream key", srt.REJECT_BAD_REQUEST),
        ("live/", "names no stream key", srt.REJECT_BAD_REQUEST),
        ("other/" + KEY, "malformed stream key", srt.REJECT_BAD_REQUEST),
        ("live_not a key!", "malformed stream key", srt.REJECT_BAD_REQUEST),
        ("live_%2Fx", "malformed stream key", srt.REJECT_BAD_REQUEST),
        (f"%23!::r={KEY},m=request", "publishers only", srt.REJECT_BAD_MODE),
        ("live_ключ", "malformed stream key", srt.REJECT_BAD_REQUEST),
        ("x" * 201, "malformed stream key", srt.REJECT_BAD_REQUEST),
        ("x" * 513, "too long", srt.REJECT_BAD_REQUEST),
    ],
)
def test_a_stream_id_without_a_usable_key_is_refused_with_a_reason(stream_id, says, reject):
    with pytest.raises(StreamIdError, match=says) as caught:
        parse_stream_id(stream_id)
    assert caught.value.reject == reject


def test_the_url_shown_to_streamers(settings):
    settings.SRT_PUBLIC_URL = "srt://ingest.example.org:9998"
    settings.SRT_LATENCY_MS = 250
    settings.SRT_PASSPHRASE = ""
    assert public_url(KEY) == f"srt://ingest.example.org:9998?streamid={KEY}&latency=250000"
    assert public_url() == "srt://ingest.example.org:9998?streamid=<stream key>&latency=250000"
    settings.SRT_PASSPHRASE = "a-long-passphrase"
    assert public_url(KEY).endswith("&passphrase=<passphrase>")
    assert parse_stream_id(public_url(KEY).split("streamid=")[1].split("&")[0]) == KEY

"""A source whose audio is not AAC (MP3 here, as older encoder setups send): the segmenter
encodes it to AAC once for the whole stream; chunk tasks still copy audio."""

import json
import subprocess

import pytest

from tests.factories import make_stream

pytestmark = pytest.mark.django_db(transaction=True)


def _audio_codecs(url: str) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name", "-of", "json", url],
        capture_output=True, check=True, timeout=30, text=True,
    ).stdout  # fmt: skip
    return [s["codec_name"] for s in json.loads(out)["streams"]]


def test_mp3_audio_is_encoded_to_aac_once_by_the_segmenter(live_stack, user):
    stream, key = make_stream(user, title="MP3 source", keep_recordings=False)
    publisher = live_stack.publish(key, duration_s=12, audio="mp3")
    try:
        playlists = live_stack.wait_segments(stream.pk, 3)
        assert {"source", "480p", "360p"} <= set(playlists)
        master = live_stack.get(f"{live_stack.edge_url}/live/{stream.pk}/master.m3u8").text
        assert "mp4a.40.2" in master
        for url in playlists.values():
            text = live_stack.get(url).text
            segments = [line for line in text.splitlines() if line.startswith("seg_")]
            for name in segments[:3]:
                assert _audio_codecs(url.rsplit("/", 1)[0] + "/" + name) == ["aac"]
    finally:
        publisher.wait(timeout=60)
    live_stack.wait_session_ended(stream.pk)

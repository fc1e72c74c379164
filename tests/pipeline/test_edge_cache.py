"""The edge cache (nginx in front of S3): collapsing and freshness, through the real edge."""

import time
import uuid

import pytest

from transcoding import storage

pytestmark = pytest.mark.django_db(transaction=True)


def _in_one_slot(live_stack, *urls: str) -> list:
    """GET ``urls`` one after the other within one 100 ms slot of the clock (retried when a slow
    request crosses into the next slot)."""
    for _ in range(10):
        while time.time() % 0.1 > 0.02:
            time.sleep(0.002)
        slot = int(time.time() * 10)
        responses = [live_stack.get(url) for url in urls]
        if int(time.time() * 10) == slot:
            return responses
    pytest.fail("could not make the requests within one 100 ms slot")


def test_playlists_are_collapsed_within_a_slot_and_fresh_a_tenth_of_a_second_later(live_stack):
    key = f"edge-test/{uuid.uuid4().hex}/live.m3u8"
    storage.put_playlist(key, "#EXTM3U\n# v1\n")
    try:
        first, second = _in_one_slot(live_stack, f"{live_stack.edge_url}/{key}", f"{live_stack.edge_url}/{key}")
        assert first.status_code == 200
        assert first.text.endswith("# v1\n")
        assert first.headers["X-Cache-Status"] == "MISS"
        assert second.headers["X-Cache-Status"] == "HIT"  # N viewers, one origin fetch
        storage.put_playlist(key, "#EXTM3U\n# v2\n")
        # nginx alone would keep "max-age=1" up to 2 s; the slot key bounds staleness at 0.1 s.
        time.sleep(0.15)
        assert live_stack.get(f"{live_stack.edge_url}/{key}").text.endswith("# v2\n")
    finally:
        storage.delete_key(key)


def test_query_strings_neither_bust_the_edge_cache_nor_reach_the_origin(live_stack):
    key = f"edge-test/{uuid.uuid4().hex}/live.m3u8"
    storage.put_playlist(key, "#EXTM3U\n# v1\n")
    try:
        first, second = _in_one_slot(
            live_stack, f"{live_stack.edge_url}/{key}?_hold=1", f"{live_stack.edge_url}/{key}?_hold=2&acl"
        )
        assert first.status_code == second.status_code == 200
        assert second.text == "#EXTM3U\n# v1\n"  # the object, not an S3 sub-resource answer
        assert second.headers["X-Cache-Status"] == "HIT"
    finally:
        storage.delete_key(key)


def test_segments_are_cached_and_playlists_and_segments_allow_cross_origin_reads(live_stack):
    key = f"edge-test/{uuid.uuid4().hex}/seg_000001.ts"
    storage.put_segment(key, b"\x47" * 188)
    try:
        first = live_stack.get(f"{live_stack.edge_url}/{key}")
        second = live_stack.get(f"{live_stack.edge_url}/{key}")
        assert first.content == b"\x47" * 188
        assert second.headers["X-Cache-Status"] == "HIT"
        assert "immutable" in second.headers["Cache-Control"]
        assert second.headers["Access-Control-Allow-Origin"] == "*"
        assert "Seaweed-X-Amz-Owner" not in second.headers
    finally:
        storage.delete_key(key)

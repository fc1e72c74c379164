"""The edge cache (nginx in front of S3): collapsing and freshness, through the real edge."""

import time
import uuid

import pytest

from transcoding import storage

pytestmark = pytest.mark.django_db(transaction=True)


def _at_slot_start() -> None:
    """Sleep until the clock is early in a quarter-second slot (requests then share one slot)."""
    while time.time() % 0.25 > 0.05:
        time.sleep(0.005)


def test_playlists_are_collapsed_within_a_slot_and_fresh_after_a_quarter_second(live_stack):
    key = f"edge-test/{uuid.uuid4().hex}/live.m3u8"
    storage.put_playlist(key, "#EXTM3U\n# v1\n")
    try:
        _at_slot_start()
        first = live_stack.get(f"{live_stack.edge_url}/{key}")
        second = live_stack.get(f"{live_stack.edge_url}/{key}")
        assert first.status_code == 200
        assert first.text.endswith("# v1\n")
        assert first.headers["X-Cache-Status"] == "MISS"
        assert second.headers["X-Cache-Status"] == "HIT"  # N viewers, one origin fetch
        storage.put_playlist(key, "#EXTM3U\n# v2\n")
        # nginx alone would keep "max-age=1" up to 2 s; the slot key bounds staleness at 0.25 s.
        time.sleep(0.3)
        assert live_stack.get(f"{live_stack.edge_url}/{key}").text.endswith("# v2\n")
    finally:
        storage.delete_key(key)


def test_query_strings_neither_bust_the_edge_cache_nor_reach_the_origin(live_stack):
    key = f"edge-test/{uuid.uuid4().hex}/live.m3u8"
    storage.put_playlist(key, "#EXTM3U\n# v1\n")
    try:
        _at_slot_start()
        first = live_stack.get(f"{live_stack.edge_url}/{key}?_hold=1")
        second = live_stack.get(f"{live_stack.edge_url}/{key}?_hold=2&acl")
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

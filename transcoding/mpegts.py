"""Small MPEG-TS helpers: continuity counters across independently muxed segments, and the
RFC 6381 codec strings of a segment.

Each chunk is muxed by its own ffmpeg, so every segment starts its continuity counters at 0
and a player that concatenates segments sees a counter jump at each boundary ("Packet
corrupt"). ``continue_counters`` rewrites a segment's counters to continue from the previous
segment's final ones, so the rendition is one continuous transport stream, byte for byte what
a single muxer would have produced. Only packets with a payload advance a counter (ISO 13818-1
2.4.3.3).
"""

from __future__ import annotations

PACKET = 188
AVC_PROFILES = frozenset({66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128})
SYNC = 0x47


def _packets(data: bytes | bytearray) -> range:
    if len(data) % PACKET:
        raise ValueError(f"not a whole number of TS packets ({len(data)} bytes)")
    return range(0, len(data), PACKET)


def _pid(data: bytes | bytearray, offset: int) -> int:
    return ((data[offset + 1] & 0x1F) << 8) | data[offset + 2]


def _has_payload(data: bytes | bytearray, offset: int) -> bool:
    return bool(data[offset + 3] & 0x10)


def payload_counts(data: bytes) -> dict[int, int]:
    """Packets carrying a payload per PID (what advances each continuity counter)."""
    counts: dict[int, int] = {}
    for offset in _packets(data):
        if data[offset] != SYNC:
            raise ValueError(f"lost TS sync at byte {offset}")
        if _has_payload(data, offset):
            pid = _pid(data, offset)
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def continue_counters(data: bytes, start: dict[int, int]) -> tuple[bytes, dict[int, int]]:
    """Rewrite counters so PID ``p`` starts at ``start[p]`` (0 when absent).

    Returns the new bytes and the counter each PID would use next (the ``start`` of the
    following segment). Idempotent for the same ``start``.
    """
    out = bytearray(data)
    nxt = dict(start)
    for offset in _packets(out):
        if out[offset] != SYNC:
            raise ValueError(f"lost TS sync at byte {offset}")
        pid = _pid(out, offset)
        if pid == 0x1FFF:  # null packets carry no meaningful counter
            continue
        counter = nxt.get(pid, 0)
        out[offset + 3] = (out[offset + 3] & 0xF0) | counter
        if _has_payload(out, offset):
            nxt[pid] = (counter + 1) % 16
    return bytes(out), nxt


def counters_ok(data: bytes, start: dict[int, int] | None = None) -> bool:
    """True when every PID's counter advances by one per payload packet (starting at
    ``start`` if given)."""
    expected: dict[int, int] = dict(start or {})
    for offset in _packets(data):
        pid = _pid(data, offset)
        if pid == 0x1FFF:
            continue
        counter = data[offset + 3] & 0x0F
        if pid in expected and counter != expected[pid] and _has_payload(data, offset):
            return False
        if _has_payload(data, offset):
            expected[pid] = (counter + 1) % 16
    return True


def avc_codec_string(data: bytes) -> str | None:
    """``avc1.PPCCLL`` from the first H.264 SPS found in ``data`` (None if there is none)."""
    index = 0
    while True:
        index = data.find(b"\x00\x00\x01", index)
        if index < 0 or index + 6 >= len(data):
            return None
        header = data[index + 3]
        profile, constraints, level = data[index + 4], data[index + 5], data[index + 6]
        # An SPS NAL header (forbidden bit 0, nal_ref_idc > 0, type 7) and a known profile_idc.
        if header in (0x27, 0x47, 0x67) and profile in AVC_PROFILES:
            return f"avc1.{profile:02x}{constraints:02x}{level:02x}"
        index += 3


def aac_codec_string(audio_profile: str) -> str:
    """RFC 6381 string for an AAC profile as named by ffprobe."""
    profile = audio_profile.upper()
    if "HE-AACV2" in profile:
        return "mp4a.40.29"
    if "HE" in profile:
        return "mp4a.40.5"
    return "mp4a.40.2"

"""FLV as nginx-rtmp records a publish (``record all``): tags read incrementally, and the few
facts of each tag the segmenter needs (codec, H.264 access unit type, keyframe flag).

An FLV file is a 9-byte header, a 4-byte ``PreviousTagSize0``, then tags: 11 bytes of header
(type, 24-bit body size, 24+8-bit millisecond timestamp, stream id), the body, and the 4-byte
size of the tag. nginx-rtmp writes each RTMP message as one tag the moment it arrives, so a
reader that follows the growing file sees every frame the publisher sent, from the first.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SIZE = 13  # FLV header (9) + PreviousTagSize0 (4)
TAG_HEADER = 11
AUDIO, VIDEO, SCRIPT = 8, 9, 18
# FLV header flags byte (offset 4)
HAS_AUDIO, HAS_VIDEO = 0x04, 0x01

KEYFRAME, INTER = 1, 2  # video frame types (high nibble of the first body byte)
AVC = 7  # video codec id of H.264
AVC_SEQUENCE_HEADER, AVC_NALU = 0, 1  # AVCPacketType
AAC = 10  # sound format of AAC
AAC_SEQUENCE_HEADER = 0  # AACPacketType

NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS = 1, 5, 6, 7, 8

VIDEO_CODECS = {
    2: "Sorenson H.263",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha",
    6: "Screen video 2",
    7: "H.264",
    12: "HEVC",
}
AUDIO_CODECS = {
    0: "PCM",
    1: "ADPCM",
    2: "MP3",
    3: "PCM",
    4: "Nellymoser",
    5: "Nellymoser",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    10: "AAC",
    11: "Speex",
    14: "MP3",
    15: "device-specific sound",
}


def header(*, audio: bool, video: bool) -> bytes:
    """An FLV file header (with PreviousTagSize0) announcing exactly these streams."""
    flags = (HAS_AUDIO if audio else 0) | (HAS_VIDEO if video else 0)
    return b"FLV\x01" + bytes([flags]) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


@dataclass
class Tag:
    """One FLV tag: ``raw`` holds it whole (header, body, trailing size), ``offset`` is where it
    starts in the file."""

    offset: int
    raw: bytearray

    @property
    def type(self) -> int:
        return self.raw[0]

    @property
    def timestamp(self) -> int:
        """Milliseconds (24 bits + 8 extended bits)."""
        return int.from_bytes(self.raw[4:7], "big") | (self.raw[7] << 24)

    @property
    def body(self) -> memoryview:
        return memoryview(self.raw)[TAG_HEADER:-4]

    @property
    def end(self) -> int:
        return self.offset + len(self.raw)

    # --- video -----------------------------------------------------------------------------
    @property
    def video_codec(self) -> str:
        """The codec name of a video tag ("H.264", or the FourCC of an enhanced-RTMP tag)."""
        first = self.raw[TAG_HEADER]
        if first & 0x80:  # enhanced RTMP: a FourCC follows (hvc1, av01, vp09...)
            return bytes(self.raw[TAG_HEADER + 1 : TAG_HEADER + 5]).decode("latin-1")
        return VIDEO_CODECS.get(first & 0x0F, f"video codec {first & 0x0F}")

    @property
    def is_avc(self) -> bool:
        return self.type == VIDEO and len(self.raw) > TAG_HEADER + 1 + 4 and self.raw[TAG_HEADER] & 0x8F == AVC

    @property
    def avc_packet_type(self) -> int:
        return self.raw[TAG_HEADER + 1]

    @property
    def frame_type(self) -> int:
        return (self.raw[TAG_HEADER] >> 4) & 0x07

    def set_frame_type(self, frame_type: int) -> None:
        self.raw[TAG_HEADER] = (frame_type << 4) | (self.raw[TAG_HEADER] & 0x0F)

    def nal_types(self, length_size: int = 4) -> list[int]:
        """NAL unit types of an H.264 NALU tag (AVCC: each NAL prefixed by its length)."""
        body = self.body[5:]
        types = []
        pos = 0
        while pos + length_size < len(body):
            size = int.from_bytes(body[pos : pos + length_size], "big")
            types.append(body[pos + length_size] & 0x1F)
            pos += length_size + size
        return types

    # --- audio -----------------------------------------------------------------------------
    @property
    def sound_format(self) -> int:
        return self.raw[TAG_HEADER] >> 4

    @property
    def audio_codec(self) -> str:
        return AUDIO_CODECS.get(self.sound_format, f"audio codec {self.sound_format}")

    @property
    def is_config(self) -> bool:
        """An AVC or AAC sequence header (decoder configuration, not media)."""
        if len(self.raw) <= TAG_HEADER + 2 + 4:
            return False
        if self.type == VIDEO:
            return self.is_avc and self.avc_packet_type == AVC_SEQUENCE_HEADER
        return self.type == AUDIO and self.sound_format == AAC and self.raw[TAG_HEADER + 1] == AAC_SEQUENCE_HEADER


def avc_length_size(config: Tag) -> int:
    """NAL length field size from an AVC sequence header (AVCDecoderConfigurationRecord)."""
    record = config.body[5:]
    return (record[4] & 0x03) + 1 if len(record) > 4 else 4


class TagReader:
    """Incremental FLV reader: ``feed`` bytes as they arrive, iterate the complete tags."""

    def __init__(self, offset: int = 0, *, has_header: bool = True) -> None:
        self._buffer = bytearray()
        self._offset = offset  # file offset of the buffer's first byte
        self._need_header = has_header
        self.header: bytes | None = None

    @property
    def offset(self) -> int:
        """File offset just past the last complete tag returned."""
        return self._offset

    @property
    def position(self) -> int:
        """File offset of the next byte to feed."""
        return self._offset + len(self._buffer)

    def feed(self, data: bytes) -> list[Tag]:
        """The tags completed by ``data`` (a tag split across reads comes with the next)."""
        self._buffer += data
        if self._need_header:
            if len(self._buffer) < HEADER_SIZE:
                return []
            if self._buffer[:3] != b"FLV":
                raise ValueError("not an FLV stream")
            self.header = bytes(self._buffer[:HEADER_SIZE])
            del self._buffer[:HEADER_SIZE]
            self._offset += HEADER_SIZE
            self._need_header = False
        tags = []
        pos = 0
        while len(self._buffer) - pos >= TAG_HEADER:
            size = TAG_HEADER + int.from_bytes(self._buffer[pos + 1 : pos + 4], "big") + 4
            if len(self._buffer) - pos < size:
                break
            tags.append(Tag(self._offset + pos, self._buffer[pos : pos + size]))
            pos += size
        del self._buffer[:pos]
        self._offset += pos
        return tags

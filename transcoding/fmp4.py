"""Fragmented MP4 (ISO/IEC 14496-12 movie fragments, CMAF-style) for Low-Latency HLS parts,
written in pure Python from the encoder's packets. Pure: no I/O, no Django, no clock.

Why not libavformat's mp4 muxer: LL-HLS needs each part to end exactly where the caller says
(every few frames, not where the muxer flushes), decode times that are absolute so chunks encoded
on different workers join into one timeline (the muxer starts every output at 0 unless told
otherwise, and edits the start with an edit list), and an initialisation segment whose bytes
depend only on the codec configuration (the muxer writes creation times and its version string),
so every worker producing a rendition's init writes the same object.

Input is what ``transcoding/encoder.py`` has: H.264 packets as an Annex B byte stream (start
codes, SPS/PPS in band before IDRs, maybe access unit delimiters) and AAC packets framed as ADTS
(possibly several frames a packet), timestamps in 1/90000.

What is written (the references are the clauses checked):
- init (``init_segment``): ``ftyp`` (major ``iso6``: movie fragments with ``tfdt`` and
  default-base-is-moof) + ``moov``: ``mvhd``, a ``trak`` per track with empty sample tables
  (MSE rejects an init whose tables hold samples), ``mvex``/``trex``. Video is track 1 in
  1/90000 with an ``avc1`` entry (parameter sets out of band in ``avcC``, ISO/IEC 14496-15
  5.3.3; so samples never carry them); audio is track 2 in 1/sample-rate with ``mp4a`` + ``esds``
  (ISO/IEC 14496-14; the AudioSpecificConfig of ISO/IEC 14496-3 1.6.2.1). No creation times,
  no encoder name. The CMAF brand ``cmfc`` is not claimed: a CMAF track holds one media stream
  (ISO/IEC 23000-19 7.3) while these fragments mux audio and video (which HLS accepts), and a
  video CMAF header wants boxes not written here (``colr``, ``pasp``); players do not need it.
- fragments (``Fragmenter.flush``): ``moof`` (``mfhd`` + a ``traf`` per track, video first) +
  one ``mdat``. Each ``traf``: ``tfhd`` with default-base-is-moof, ``tfdt`` version 1 (64-bit
  absolute decode time of the fragment's first sample: the video dts, the audio pts converted
  to the sample rate, continuing the previous fragment's audio when within rounding of it),
  ``trun`` with the data offset from the ``moof``. Video samples are 4-byte length-prefixed NAL
  units without SPS/PPS/AUD/filler, with per-sample duration, size, flags (sync: depends on
  nothing; others: depends on others, non-sync) and signed composition offsets (``trun``
  version 1, pts - dts, so B-frames need no edit list). Audio samples are raw AAC frames, all
  sync, 1024 ticks each.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass

VIDEO_TRACK = 1
AUDIO_TRACK = 2
VIDEO_TIMESCALE = 90000  # the MPEG-TS clock: video decode times are the source dts, untouched
MOVIE_TIMESCALE = 1000
AAC_FRAME_SAMPLES = 1024  # AAC-LC frame length (frameLengthFlag 0)
DEFAULT_VIDEO_DURATION = 3000  # one frame at 30 fps, when nothing else tells a duration
# Samples an audio pts converted from 90 kHz may be off the sample grid: half a 90 kHz tick
# (up to 0.53 samples at 96 kHz) plus the rounding to a sample; anything more is a real gap.
AUDIO_ROUNDING = 2

NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12
OUT_OF_SAMPLE_NALS = frozenset({NAL_SPS, NAL_PPS, NAL_AUD, NAL_FILLER})
# ISO/IEC 14496-15 5.3.3.1.2: avcC carries chroma format and bit depths for these profiles.
AVCC_EXTENDED_PROFILES = frozenset({100, 110, 122, 144})
# SPS syntax (ITU-T H.264 7.3.2.1.1): chroma_format_idc and bit depths follow for these.
SPS_CHROMA_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

ADTS_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)

# Sample flags (ISO/IEC 14496-12 8.8.3.1): is_leading(2) depends_on(2) is_depended_on(2)
# has_redundancy(2) padding(3) non_sync(1) degradation_priority(16), under 4 reserved bits.
SYNC_SAMPLE = 0x02000000  # sample_depends_on = 2 (an I picture)
NON_SYNC_SAMPLE = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1

TFHD_DEFAULT_DURATION = 0x000008
TFHD_DEFAULT_FLAGS = 0x000020
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
TRUN_DATA_OFFSET = 0x000001
TRUN_DURATION = 0x000100
TRUN_SIZE = 0x000200
TRUN_FLAGS = 0x000400
TRUN_CTO = 0x000800

UNITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
LANGUAGE_UND = ((ord("u") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("d") - 0x60)


@dataclass(frozen=True)
class VideoConfig:
    width: int
    height: int
    sps: bytes  # raw NAL unit, no start code
    pps: bytes


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int
    channels: int
    asc: bytes  # AudioSpecificConfig (2 bytes for AAC-LC)


# --- bitstreams -------------------------------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, without start codes (ITU-T H.264 B.2). Zero bytes
    before a start code belong to the byte stream (leading/trailing_zero_8bits), not to the NAL
    unit: a NAL unit never ends with 0x00."""
    units: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        start = data.find(b"\x00\x00\x01", begin)
        end = len(data) if start < 0 else start
        unit = data[begin:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def _nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def _rbsp(unit: bytes) -> bytes:
    """The NAL unit's payload without its header and emulation prevention bytes (7.4.1)."""
    return unit[1:].replace(b"\x00\x00\x03", b"\x00\x00")


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bit(self) -> int:
        byte = self._data[self._pos >> 3]  # IndexError past the end: a truncated SPS
        value = (byte >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        """Exp-Golomb unsigned (H.264 9.1)."""
        zeros = 0
        while self.bit() == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.bits(zeros)


def _sps_chroma(sps: bytes) -> tuple[int, int, int]:
    """(chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8) of an SPS."""
    reader = _BitReader(_rbsp(sps))
    profile = reader.bits(8)
    reader.bits(16)  # constraint flags, level_idc
    reader.ue()  # seq_parameter_set_id
    if profile not in SPS_CHROMA_PROFILES:
        return 1, 0, 0  # 4:2:0, 8 bits (inferred, 7.4.2.1.1)
    chroma = reader.ue()
    if chroma == 3:
        reader.bit()  # separate_colour_plane_flag
    return chroma, reader.ue(), reader.ue()


def video_config(annexb_idr: bytes, width: int, height: int) -> VideoConfig | None:
    """The SPS and PPS carried in a packet (an IDR access unit); None if either is missing."""
    units = split_annexb(annexb_idr)
    sps = next((u for u in units if _nal_type(u) == NAL_SPS and len(u) >= 4), None)
    pps = next((u for u in units if _nal_type(u) == NAL_PPS), None)
    if sps is None or pps is None:
        return None
    return VideoConfig(width=width, height=height, sps=sps, pps=pps)


def _audio_specific_config(object_type: int, rate_index: int, channels: int) -> bytes:
    """AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) for GASpecificConfig with
    frameLengthFlag, dependsOnCoreCoder and extensionFlag all 0 (what ADTS can carry)."""
    return ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")


def _adts_config(header: bytes) -> AudioConfig:
    object_type = (header[2] >> 6) + 1  # ADTS profile = audio object type - 1
    rate_index = (header[2] >> 2) & 0x0F
    channel_config = ((header[2] & 0x01) << 2) | (header[3] >> 6)
    if rate_index >= len(ADTS_SAMPLE_RATES):
        raise ValueError(f"ADTS: reserved sampling frequency index {rate_index}")
    if channel_config == 0:
        raise ValueError("ADTS: channel configuration 0 (in-band PCE) is not supported")
    channels = 8 if channel_config == 7 else channel_config
    asc = _audio_specific_config(object_type, rate_index, channel_config)
    return AudioConfig(sample_rate=ADTS_SAMPLE_RATES[rate_index], channels=channels, asc=asc)


def adts_frames(data: bytes) -> list[tuple[bytes, AudioConfig]]:
    """Raw AAC frames (ADTS header and CRC stripped) with the configuration their header
    describes (ISO/IEC 13818-7 6.2 / 14496-3 1.A.2). A packet may hold several frames."""
    frames: list[tuple[bytes, AudioConfig]] = []
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 7]
        if len(header) < 7 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
            raise ValueError(f"ADTS: no frame header at byte {offset}")
        length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
        header_size = 7 if header[1] & 0x01 else 9  # protection_absent = 0: 16-bit CRC follows
        if header[6] & 0x03:
            raise ValueError("ADTS: frames with several raw data blocks are not supported")
        if length <= header_size or offset + length > len(data):
            raise ValueError(f"ADTS: bad frame length {length} at byte {offset}")
        frames.append((data[offset + header_size : offset + length], _adts_config(header)))
        offset += length
    return frames


def codec_string(video: VideoConfig) -> str:
    """RFC 6381 ``avc1.PPCCLL``: profile_idc, constraint flags, level_idc from the SPS."""
    return f"avc1.{video.sps[1]:02x}{video.sps[2]:02x}{video.sps[3]:02x}"


def aac_string(audio: AudioConfig) -> str:
    """RFC 6381 ``mp4a.40.<audio object type>`` (ISO/IEC 14496-3 1.6.2.1, escape 31 -> 32+)."""
    object_type = audio.asc[0] >> 3
    if object_type == 31:
        object_type = 32 + (((audio.asc[0] & 0x07) << 3) | (audio.asc[1] >> 5))
    return f"mp4a.40.{object_type}"


# --- boxes ------------------------------------------------------------------------------------


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _ftyp() -> bytes:
    return _box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"mp41")


def _mvhd(next_track: int) -> bytes:
    return _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, MOVIE_TIMESCALE, 0),  # times, timescale, duration (fragmented: 0)
        struct.pack(">IH10x", 0x00010000, 0x0100),  # rate 1.0, volume 1.0
        UNITY_MATRIX,
        bytes(24),  # pre_defined
        struct.pack(">I", next_track),
    )  # fmt: skip


def _tkhd(track: int, *, volume: int, width: int, height: int) -> bytes:
    enabled_in_movie = 0x000003
    return _full_box(
        b"tkhd", 0, enabled_in_movie,
        struct.pack(">IIIII", 0, 0, track, 0, 0),  # times, track_ID, reserved, duration
        struct.pack(">8xhhH2x", 0, 0, volume),  # layer, alternate_group, volume
        UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )  # fmt: skip


def _mdia(timescale: int, handler: bytes, name: bytes, media_header: bytes, sample_entry: bytes) -> bytes:
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, LANGUAGE_UND, 0))
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name + b"\x00")
    dref = _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1))  # media in this file
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        _full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    return _box(b"mdia", mdhd, hdlr, _box(b"minf", media_header, _box(b"dinf", dref), stbl))


def _avcc(video: VideoConfig) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1), 4-byte NAL lengths."""
    sps, pps = video.sps, video.pps
    record = struct.pack(">BBBBBB", 1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1)
    record += struct.pack(">H", len(sps)) + sps + struct.pack(">BH", 1, len(pps)) + pps
    if sps[1] in AVCC_EXTENDED_PROFILES:
        chroma, luma_depth, chroma_depth = _sps_chroma(sps)
        record += struct.pack(">BBBB", 0xFC | chroma, 0xF8 | luma_depth, 0xF8 | chroma_depth, 0)
    return _box(b"avcC", record)


def _video_trak(video: VideoConfig) -> bytes:
    avc1 = _box(
        b"avc1",
        struct.pack(">6xH", 1),  # reserved, data_reference_index
        struct.pack(">16xHH", video.width, video.height),  # pre_defined, reserved
        struct.pack(">III", 0x00480000, 0x00480000, 0),  # 72 dpi, reserved
        struct.pack(">H32sHh", 1, b"", 0x0018, -1),  # frame_count, compressorname, depth, pre_defined
        _avcc(video),
    )
    vmhd = _full_box(b"vmhd", 0, 1, bytes(8))  # graphicsmode copy, opcolor
    mdia = _mdia(VIDEO_TIMESCALE, b"vide", b"VideoHandler", vmhd, avc1)
    return _box(b"trak", _tkhd(VIDEO_TRACK, volume=0, width=video.width, height=video.height), mdia)


def _descriptor(tag: int, *payload: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1 8.3.3): tag, size in 7-bit groups, payload."""
    body = b"".join(payload)
    size = len(body)
    groups = [size & 0x7F]
    while size > 0x7F:
        size >>= 7
        groups.append(0x80 | (size & 0x7F))
    return bytes([tag, *reversed(groups)]) + body


def _esds(audio: AudioConfig) -> bytes:
    """ES_Descriptor (14496-1 7.2.6.5) with ES_ID 0 (14496-14: set in the file, the track
    identifies the stream). Decoder buffer: 6144 bits per channel, the AAC decoder input buffer
    (14496-3 4.5.3.1), which also bounds the bitrate (a frame never exceeds it); average 0 =
    variable bitrate (14496-1 7.2.6.6.2)."""
    buffer_bytes = 6144 // 8 * audio.channels
    max_bitrate = 6144 * audio.sample_rate // AAC_FRAME_SAMPLES * audio.channels
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BB", 0x40, (0x05 << 2) | 1),  # MPEG-4 Audio; AudioStream, reserved bit 1
        buffer_bytes.to_bytes(3, "big"),
        struct.pack(">II", max_bitrate, 0),
        _descriptor(0x05, audio.asc),
    )
    sl_config = _descriptor(0x06, b"\x02")  # predefined: reserved for MP4 files
    return _full_box(b"esds", 0, 0, _descriptor(0x03, struct.pack(">HB", 0, 0), decoder_config, sl_config))


def _audio_trak(audio: AudioConfig) -> bytes:
    rate = audio.sample_rate if audio.sample_rate < 0x10000 else 0  # 16.16: the ASC has the rate
    mp4a = _box(
        b"mp4a",
        struct.pack(">6xH", 1),
        struct.pack(">8xHHHH", audio.channels, 16, 0, 0),  # channelcount, samplesize, pre_defined
        struct.pack(">I", rate << 16),
        _esds(audio),
    )
    smhd = _full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))  # balance
    mdia = _mdia(audio.sample_rate, b"soun", b"SoundHandler", smhd, mp4a)
    return _box(b"trak", _tkhd(AUDIO_TRACK, volume=0x0100, width=0, height=0), mdia)


def _trex(track: int) -> bytes:
    return _full_box(b"trex", 0, 0, struct.pack(">IIIII", track, 1, 0, 0, 0))


def init_segment(video: VideoConfig | None, audio: AudioConfig | None) -> bytes:
    """The Media Initialization Section (``EXT-X-MAP``): ftyp + moov. Same configs, same bytes."""
    if video is None and audio is None:
        raise ValueError("an init segment needs at least one track")
    traks: list[bytes] = []
    trexs: list[bytes] = []
    if video is not None:
        traks.append(_video_trak(video))
        trexs.append(_trex(VIDEO_TRACK))
    if audio is not None:
        traks.append(_audio_trak(audio))
        trexs.append(_trex(AUDIO_TRACK))
    moov = _box(b"moov", _mvhd(AUDIO_TRACK + 1), *traks, _box(b"mvex", *trexs))
    return _ftyp() + moov


# --- fragments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VideoSample:
    data: bytes  # length-prefixed NAL units
    pts: int
    dts: int
    key: bool


def _length_prefixed(annexb: bytes) -> bytes:
    units = [u for u in split_annexb(annexb) if _nal_type(u) not in OUT_OF_SAMPLE_NALS]
    return b"".join(struct.pack(">I", len(u)) + u for u in units)


def _traf(track: int, tfhd_flags: int, defaults: bytes, decode_time: int, trun: bytes) -> bytes:
    if decode_time < 0:
        raise ValueError(f"track {track}: negative decode time {decode_time}")
    tfhd = _full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF | tfhd_flags, struct.pack(">I", track), defaults)
    tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    return _box(b"traf", tfhd, tfdt, trun)


class Fragmenter:
    """Collects one rendition's samples and writes fragments (moof+mdat).

    The caller decides the boundaries (an LL-HLS part every few frames) and calls ``flush``;
    every fragment carries everything pending, video first. Decode times are absolute, so the
    fragments of chunks encoded independently (another ``Fragmenter``, another worker) continue
    the same timeline after the same init segment. Audio within one fragment is taken as
    contiguous AAC frames (one encoder's output); each fragment re-anchors at its first frame's
    pts (``_audio_anchor``), so a gap in the source's audio shows at the next fragment.
    """

    def __init__(self, *, has_video: bool, has_audio: bool, audio_rate: int, sequence_start: int) -> None:
        if has_audio and audio_rate <= 0:
            raise ValueError("audio needs its sample rate")
        self._has_video = has_video
        self._has_audio = has_audio
        self._audio_rate = audio_rate
        self._sequence = sequence_start
        self._video: list[_VideoSample] = []
        self._audio: list[bytes] = []
        self._audio_start = 0  # decode time of the first pending audio frame, 1/audio_rate
        self._audio_end: int | None = None  # decode time after the last audio frame written
        self._last_duration = DEFAULT_VIDEO_DURATION  # of the last video sample written

    def add_video(self, annexb: bytes, pts: int, dts: int, key: bool) -> None:  # noqa: FBT001
        """One access unit (Annex B), timestamps in 1/90000. Parameter sets, delimiters and
        filler are left out of the sample (the init's avcC has the parameter sets)."""
        if not self._has_video:
            raise ValueError("this rendition has no video track")
        if self._video and dts <= self._video[-1].dts:
            raise ValueError(f"video dts not increasing: {dts} after {self._video[-1].dts}")
        data = _length_prefixed(annexb)
        if data:  # an access unit of parameter sets alone is no picture
            self._video.append(_VideoSample(data, pts, dts, key))

    def add_audio(self, adts: bytes, pts: int) -> None:
        """ADTS-framed AAC (one or more frames), pts of the first frame in 1/90000."""
        if not self._has_audio:
            raise ValueError("this rendition has no audio track")
        frames = adts_frames(adts)
        for _, config in frames:
            if config.sample_rate != self._audio_rate:
                raise ValueError(f"AAC at {config.sample_rate} Hz in a {self._audio_rate} Hz track")
        if frames and not self._audio:
            self._audio_start = self._audio_anchor(pts)
        self._audio.extend(raw for raw, _ in frames)

    def _audio_anchor(self, pts: int) -> int:
        """Decode time of a fragment's first AAC frame: its pts at the sample rate, unless that
        is within rounding of where this Fragmenter's previous audio ended. MPEG-TS audio pts are
        sample counts rounded to 90 kHz from an origin that need not fall on a sample (44.1 kHz:
        1024 samples are 2089.8 ticks), so converting each back may land a sample off the run
        before: kept, that would be a 1-sample gap or overlap at a part boundary."""
        start = round(pts * self._audio_rate / VIDEO_TIMESCALE)
        if self._audio_end is not None and abs(start - self._audio_end) <= AUDIO_ROUNDING:
            return self._audio_end
        return start

    def pending_video(self) -> int:
        """Video samples not yet written."""
        return len(self._video)

    def flush(self, *, next_video_dts: int | None = None, next_audio_pts: int | None = None) -> bytes | None:
        """One fragment (moof + mdat) with everything pending; None if nothing is pending.

        The last video sample lasts until ``next_video_dts`` when given, else as long as the
        sample before it (in this fragment or the previous one; 3000 for a Fragmenter's first
        fragment of one sample). AAC frames always last 1024 samples, so ``next_audio_pts`` changes
        nothing (accepted for symmetry; the next fragment's tfdt re-anchors audio)."""
        del next_audio_pts
        if not self._video and not self._audio:
            return None
        video = self._video_run(next_video_dts) if self._video else None
        audio = self._audio_run() if self._audio else None
        payload = [run[1] for run in (video, audio) if run is not None]
        # Data offsets count from the moof's first byte (default-base-is-moof); they do not
        # change the moof's size, so a first pass with zero offsets measures it.
        moof_size = len(self._moof(video, audio, 0))
        fragment = self._moof(video, audio, moof_size + 8) + _box(b"mdat", *payload)
        self._sequence += 1
        if self._audio:
            self._audio_end = self._audio_start + AAC_FRAME_SAMPLES * len(self._audio)
        self._video = []
        self._audio = []
        return fragment

    def _video_run(self, next_dts: int | None) -> tuple[list[_VideoSample], bytes, list[int]]:
        samples = self._video
        durations = [b.dts - a.dts for a, b in itertools.pairwise(samples)]
        if next_dts is not None:
            last = next_dts - samples[-1].dts
        else:
            last = durations[-1] if durations else self._last_duration
        if last <= 0:
            raise ValueError(f"next video dts {next_dts} is not after {samples[-1].dts}")
        durations.append(last)
        self._last_duration = last
        return samples, b"".join(s.data for s in samples), durations

    def _audio_run(self) -> tuple[list[bytes], bytes]:
        return self._audio, b"".join(self._audio)

    def _moof(
        self,
        video: tuple[list[_VideoSample], bytes, list[int]] | None,
        audio: tuple[list[bytes], bytes] | None,
        data_offset: int,
    ) -> bytes:
        trafs: list[bytes] = []
        if video is not None:
            samples, data, durations = video
            trafs.append(self._video_traf(samples, durations, data_offset))
            data_offset += len(data)
        if audio is not None:
            trafs.append(self._audio_traf(audio[0], data_offset))
        return _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", self._sequence)), *trafs)

    @staticmethod
    def _video_traf(samples: list[_VideoSample], durations: list[int], data_offset: int) -> bytes:
        flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS | TRUN_CTO
        entries = b"".join(
            struct.pack(">IIIi", duration, len(s.data), SYNC_SAMPLE if s.key else NON_SYNC_SAMPLE, s.pts - s.dts)
            for s, duration in zip(samples, durations, strict=True)
        )
        trun = _full_box(b"trun", 1, flags, struct.pack(">Ii", len(samples), data_offset), entries)
        return _traf(VIDEO_TRACK, 0, b"", samples[0].dts, trun)

    def _audio_traf(self, frames: list[bytes], data_offset: int) -> bytes:
        sizes = b"".join(struct.pack(">I", len(frame)) for frame in frames)
        trun = _full_box(b"trun", 0, TRUN_DATA_OFFSET | TRUN_SIZE, struct.pack(">Ii", len(frames), data_offset), sizes)
        defaults = struct.pack(">II", AAC_FRAME_SAMPLES, SYNC_SAMPLE)
        flags = TFHD_DEFAULT_DURATION | TFHD_DEFAULT_FLAGS
        return _traf(AUDIO_TRACK, flags, defaults, self._audio_start, trun)


def init_name(init: bytes) -> str:
    """An init section's object name, from its content: ``init_<sha256 prefix>.mp4``. A name
    is written once and never with other bytes (a new codec configuration is a new name)."""
    return f"init_{hashlib.sha256(init).hexdigest()[:16]}.mp4"


def aac_lc_config(sample_rate: int, channels: int) -> AudioConfig | None:
    """The AAC-LC configuration of a probed source (when no packet was seen yet), None for a
    rate or channel count an AudioSpecificConfig cannot index."""
    if sample_rate not in ADTS_SAMPLE_RATES or not 1 <= channels <= 7:
        return None
    asc = _audio_specific_config(2, ADTS_SAMPLE_RATES.index(sample_rate), channels)
    return AudioConfig(sample_rate=sample_rate, channels=channels, asc=asc)

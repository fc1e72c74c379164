"""Renditions and the ladder chosen from the probed source.

The ``source`` rendition is a pass-through copy (lowest latency, no quality loss). Encoded
rungs come from ``settings.TRANSCODE_LADDER`` and only those strictly below the source height
are used: a ladder never upscales.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class SourceInfo:
    """What ffprobe found in the first chunk of a session."""

    video_codec: str
    video_profile: str
    width: int
    height: int
    fps: float
    video_bitrate: int  # bits/s, 0 when unknown
    audio_codec: str  # "" when the source has no audio
    audio_profile: str
    audio_channels: int
    audio_layout: str
    audio_sample_rate: int
    audio_bitrate: int

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codec)


@dataclass(frozen=True)
class Rendition:
    """One output of the ladder. ``copy`` renditions remux the source without re-encoding."""

    name: str
    width: int
    height: int
    video_kbps: int  # 0 for copy: the source bitrate applies
    audio_kbps: int
    copy: bool = False

    @property
    def peak_bandwidth(self) -> int:
        """Configured peak bits/s (maxrate + audio), before any segment was measured."""
        return int((self.video_kbps * 1.1 + self.audio_kbps) * 1000)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rendition:
        return cls(**data)


def parse_rung(spec: str) -> tuple[str, int, int, int]:
    """``"480p:480:1400:128"`` -> (name, height, video_kbps, audio_kbps); ValueError if malformed."""
    name, height, video, audio = spec.split(":")
    if not name.isidentifier() and not name.replace("p", "").isdigit():
        raise ValueError(f"bad rendition name in {spec!r}")
    return name, int(height), int(video), int(audio)


def even(value: float) -> int:
    """Round to the nearest even integer (H.264 4:2:0 needs even dimensions)."""
    return max(2, round(value / 2) * 2)


def ladder_for(source: SourceInfo) -> list[Rendition]:
    """The renditions for ``source``: ``source`` first, then configured rungs below its height,
    highest first. Widths keep the source aspect ratio."""
    renditions = [
        Rendition(
            "source", source.width, source.height, source.video_bitrate // 1000, source.audio_bitrate // 1000, copy=True
        )
    ]
    rungs = sorted((parse_rung(spec) for spec in settings.TRANSCODE_LADDER), key=lambda r: -r[1])
    for name, height, video_kbps, audio_kbps in rungs:
        if height >= source.height:
            continue
        width = even(source.width * height / source.height)
        renditions.append(Rendition(name, width, height, video_kbps, audio_kbps))
    return renditions


def ladder_to_json(renditions: list[Rendition]) -> str:
    return json.dumps([r.to_dict() for r in renditions])


def ladder_from_json(raw: str | bytes) -> list[Rendition]:
    return [Rendition.from_dict(item) for item in json.loads(raw)]

"""Helpers of the pipeline tests: HLS parsing and ffprobe checks of downloaded segments."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


@dataclass
class Variant:
    uri: str
    attrs: dict[str, str]


def parse_master(text: str) -> list[Variant]:
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U", text
    out = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = {k: v.strip('"') for k, v in ATTR.findall(line.split(":", 1)[1])}
            out.append(Variant(lines[i + 1], attrs))
    return out


def segment_uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def extinf(text: str) -> list[float]:
    return [float(line.split(":", 1)[1].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF:")]


def download_rendition(playlist_url: str, dest: Path) -> tuple[str, list[Path]]:
    """Download a media playlist and all its segments; returns (playlist text, segment files)."""
    text = requests.get(playlist_url, timeout=5).text
    base = playlist_url.rsplit("/", 1)[0]
    files = []
    dest.mkdir(parents=True, exist_ok=True)
    for uri in segment_uris(text):
        response = requests.get(f"{base}/{uri}", timeout=10)
        assert response.status_code == 200, (uri, response.status_code)
        path = dest / uri
        path.write_bytes(response.content)
        files.append(path)
    return text, files


def decode_errors(path: Path) -> str:
    """ffmpeg's complaints while decoding ``path`` fully (empty string = clean)."""
    done = subprocess.run(
        ["ffmpeg", "-v", "warning", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.decode("utf-8", "replace").strip()


def packets(path: Path) -> dict[str, list[tuple[float, float]]]:
    """codec_type -> [(dts, duration)] in file order."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,dts_time,duration_time",
            "-show_entries",
            "stream=index,codec_type",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    data = json.loads(out)
    kinds = {s["index"]: s["codec_type"] for s in data["streams"]}
    result: dict[str, list[tuple[float, float]]] = {}
    for p in data["packets"]:
        if p.get("dts_time") in (None, "N/A"):
            continue
        result.setdefault(kinds[p["stream_index"]], []).append(
            (float(p["dts_time"]), float(p.get("duration_time") or 0))
        )
    return result


def largest_gap(series: list[tuple[float, float]]) -> tuple[float, bool]:
    """(largest hole between one packet's end and the next's start, dts strictly increasing)."""
    gap = 0.0
    monotonic = True
    for (dts, dur), (nxt, _) in itertools.pairwise(series):
        if nxt <= dts:
            monotonic = False
        gap = max(gap, nxt - (dts + dur))
    return gap, monotonic

"""EBU R128 momentary loudness of a chunk's audio (ITU-R BS.1770-4), measured in the transcode
worker as segments are produced (highlight suggestions, ``docs/highlights.md``, ADR 0037), and
the integrated loudness the ingest doctor judges the source by (``block_powers`` + ``integrated``,
ADR 0034): one BS.1770 implementation for both.

The transcode copies the audio packets (AAC, ADTS) into every rendition without decoding them;
``AudioTap`` keeps a copy of those packets while the chunk is demuxed (bytes only: nothing on the
latency path), and ``AudioTap.measure`` decodes them once after the chunk is published.

The measurement is BS.1770's: each channel K-weighted (a high shelf, then a 38 Hz high-pass; the
filter designed for the actual sample rate as libebur128 does), mean square over 400 ms windows
every 100 ms, channels summed with their weights (surround 1.41, LFE 0), ``-0.691 + 10 log10``.
The cascade is applied as its impulse response (``IMPULSE_S`` long, the recursion's tail is
below 1e-9 by then) by FFT convolution: numpy has no recursive filter, and one FFT per chunk
costs about a millisecond. Windows are taken within the chunk (a chunk is measured on its own,
on any worker); a chunk shorter than one window is measured as a whole.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import av
import av.error
import numpy as np

WINDOW_S = 0.4  # momentary loudness: 400 ms windows
STEP_S = 0.1  # one every 100 ms (what ffmpeg's ebur128 filter reports)
IMPULSE_S = 0.2  # length of the K-weighting's impulse response used
FLOOR_LUFS = -70.0  # silence and anything below is reported as this (BS.1770's absolute gate)

# Channel weights (BS.1770-4 table 3) by FFmpeg channel name; others count 1.0.
_WEIGHTS = {"LFE": 0.0, "LFE2": 0.0, "SL": 1.41, "SR": 1.41, "BL": 1.41, "BR": 1.41}


@dataclass(frozen=True)
class Loudness:
    """A chunk's loudness in LUFS (``FLOOR_LUFS`` for silence)."""

    momentary_max: float  # the loudest 400 ms window of the chunk
    mean: float  # the whole chunk's mean power, ungated
    seconds: float  # audio measured
    momentary: list[float] = field(default_factory=list)  # every 100 ms (window ends at 0.4, 0.5, ...)


@functools.lru_cache(maxsize=8)
def k_weighting(rate: int) -> np.ndarray:
    """The impulse response of BS.1770's K-weighting at ``rate`` Hz (float64)."""
    # Stage 1, the head's high shelf (+4 dB above ~1.7 kHz), and stage 2, the RLB high-pass:
    # libebur128's bilinear designs, which give BS.1770's published 48 kHz coefficients.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b1 = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    a1 = [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    b2 = [1.0, -2.0, 1.0]
    a2 = [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    n = max(16, int(rate * IMPULSE_S))
    signal = [0.0] * n
    signal[0] = 1.0
    for b, a in ((b1, a1), (b2, a2)):  # direct form I, once per sample rate (cached)
        out = [0.0] * n
        x1 = x2 = y1 = y2 = 0.0
        for i, x0 in enumerate(signal):
            y0 = b[0] * x0 + b[1] * x1 + b[2] * x2 - a[0] * y1 - a[1] * y2
            out[i] = y0
            x2, x1, y2, y1 = x1, x0, y1, y0
        signal = out
    return np.asarray(signal, dtype=np.float64)


def _lufs(power: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        values = -0.691 + 10.0 * np.log10(power)
    return np.maximum(np.nan_to_num(values, neginf=FLOOR_LUFS), FLOOR_LUFS)


def _weighted_power(samples: np.ndarray, rate: int, weights: list[float] | None) -> np.ndarray:
    """The K-weighted power of planar ``samples`` per sample, summed over channels with their
    BS.1770 weights."""
    data = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    channels, count = data.shape
    gains = np.asarray(weights if weights is not None else [1.0] * channels, dtype=np.float64)
    impulse = k_weighting(rate)
    size = 1 << (count + len(impulse) - 1).bit_length()
    spectrum = np.fft.rfft(impulse, size)
    filtered = np.fft.irfft(np.fft.rfft(data, size, axis=1) * spectrum, size, axis=1)[:, :count]
    return np.asarray((filtered * filtered * gains[:, None]).sum(axis=0))


def measure(samples: np.ndarray, rate: int, weights: list[float] | None = None) -> Loudness | None:
    """The loudness of planar ``samples`` (channels x samples, full scale 1.0) at ``rate``;
    None without samples."""
    data = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    channels, count = data.shape
    if count == 0 or channels == 0 or rate <= 0:
        return None
    power = _weighted_power(data, rate, weights)
    cumulative = np.concatenate(([0.0], np.cumsum(power)))
    window, step = round(WINDOW_S * rate), round(STEP_S * rate)
    ends = np.arange(window, count + 1, step)
    momentary = _lufs((cumulative[ends] - cumulative[ends - window]) / window) if len(ends) else np.array([])
    mean = float(_lufs(np.array([cumulative[-1] / count]))[0])
    top = float(momentary.max()) if len(momentary) else mean
    return Loudness(
        momentary_max=round(top, 2),
        mean=round(mean, 2),
        seconds=round(count / rate, 3),
        momentary=[round(float(v), 2) for v in momentary],
    )


def block_powers(samples: np.ndarray, rate: int, weights: list[float] | None = None) -> list[float]:
    """K-weighted mean square per 100 ms block (``STEP_S``), summed over channels: what
    ``integrated`` gates. Blocks of consecutive chunks can be joined into one list."""
    data = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    step = round(STEP_S * rate) if rate > 0 else 0
    if step == 0 or data.shape[1] < step:
        return []
    power = _weighted_power(data, rate, weights)
    n = len(power) // step
    return [float(x) for x in power[: n * step].reshape(n, step).mean(axis=1)]


def integrated(blocks: list[float]) -> tuple[float, float]:
    """(integrated, maximum momentary) loudness in LUFS of 100 ms ``block_powers``: 400 ms gating
    blocks with 75 % overlap, absolute gate -70 LUFS, relative gate -10 LU (BS.1770-4). Silence
    is ``-inf``."""
    values = np.asarray(blocks, dtype=np.float64)
    if len(values) < 4:
        return -math.inf, -math.inf
    gating = np.convolve(values, np.full(4, 0.25), mode="valid")
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10.0 * np.log10(gating)
    momentary = float(loud.max())
    above = gating[loud > FLOOR_LUFS]
    if not len(above):
        return -math.inf, momentary
    relative = -0.691 + 10.0 * math.log10(float(above.mean())) - 10.0
    with np.errstate(divide="ignore"):
        kept = above[-0.691 + 10.0 * np.log10(above) > relative]
    return -0.691 + 10.0 * math.log10(float(kept.mean())), momentary


def channel_weights(layout: Any) -> list[float]:
    """BS.1770 weights of a PyAV audio layout's channels."""
    return [_WEIGHTS.get(getattr(c, "name", ""), 1.0) for c in layout.channels]


def decode(packets: Iterable[bytes], codec: str = "aac") -> tuple[np.ndarray, int, list[float]] | None:
    """Decode compressed audio packets (AAC with ADTS headers, as MPEG-TS carries it) to planar
    float samples; returns (samples, rate, channel weights), or None when nothing decodes."""
    context: Any = av.CodecContext.create(codec, "r")
    resampler: Any = None
    planes: list[np.ndarray] = []
    rate, weights = 0, [1.0]

    def take(frames: Any) -> None:
        nonlocal resampler, rate, weights
        for frame in frames:
            if frame.format.name != "fltp":
                resampler = resampler or av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                for converted in resampler.resample(frame):
                    planes.append(converted.to_ndarray())
            else:
                planes.append(frame.to_ndarray())
            rate, weights = frame.sample_rate, channel_weights(frame.layout)

    for data in packets:
        try:
            take(context.decode(av.Packet(data)))
        except av.error.FFmpegError:
            continue  # a damaged packet: the others still measure
    with contextlib.suppress(av.error.FFmpegError):
        take(context.decode(None))
    planes = [p for p in planes if p.size]
    if not planes or not rate:
        return None
    width = min(p.shape[0] for p in planes)
    return np.concatenate([p[:width] for p in planes], axis=1), rate, weights[:width]


class AudioTap:
    """The audio packets of one chunk, copied as the transcode demuxes them (``encoder``), for
    ``measure`` once the chunk is published."""

    def __init__(self) -> None:
        self.codec = ""
        self.packets: list[bytes] = []
        self.chunk: Any = None  # what the caller attaches: the chunk's meta (times, wall clock)

    def add(self, codec: str, packet: Any) -> None:
        self.codec = self.codec or codec
        self.packets.append(bytes(packet))

    def measure(self) -> Loudness | None:
        """The chunk's loudness; None without audio (or audio that does not decode)."""
        if not self.packets or not self.codec:
            return None
        try:
            decoded = decode(self.packets, self.codec)
        except (av.error.FFmpegError, ValueError):
            return None
        if decoded is None:
            return None
        samples, rate, weights = decoded
        return measure(samples, rate, weights)

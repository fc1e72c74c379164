"""Capacity planning from measured per-stream figures (pure arithmetic; ``bench/capacity.py``
prints it and docs/capacity.md explains it).

Every input is a figure per stream-second (what one live stream costs for each second it is
live), measured by ``python -m bench capacity``. The assumptions about a core and a Redis shard
are explicit defaults of ``Assumptions``; the derivation shows its arithmetic so an operator can
redo it with their own numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_MONTH = 30 * 24 * 3600


@dataclass(frozen=True)
class PerStream:
    """What one live stream costs per second of stream (measured)."""

    cpu_s: float  # CPU seconds of the transcode workers (Redis: see its shards; S3: the provider's)
    redis_commands: float  # pipeline (state) Redis commands
    redis_bytes: float  # pipeline Redis network bytes, in + out
    redis_memory: float  # pipeline Redis bytes held per live stream (state + in-flight chunks)
    broker_commands: float  # Celery broker Redis commands
    s3_puts: float
    s3_put_bytes: float


@dataclass(frozen=True)
class Assumptions:
    """What one unit of each resource is assumed to sustain (state them with the table)."""

    core_busy: float = 0.7  # a transcode core planned at 70% busy: headroom for bursts and keyframes
    shard_ops: float = 80_000  # commands/s one Redis shard (one core) sustains with these value sizes
    shard_bytes: float = 250e6  # network bytes/s per shard (in + out; ~2 Gbit/s of a 10 Gbit/s NIC)
    shard_memory: float = 8 * 2**30  # usable memory per shard (maxmemory)
    shard_busy: float = 0.5  # a shard planned at half of each limit (failover, resharding, bursts)


@dataclass(frozen=True)
class Row:
    what: str
    value: float
    arithmetic: str


def _fmt(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def plan(per: PerStream, streams: int = 1000, a: Assumptions | None = None) -> list[Row]:
    """Cores, Redis shards and S3 requests for ``streams`` concurrent live streams."""
    a = a or Assumptions()
    rows: list[Row] = []
    cpu = per.cpu_s * streams
    cores = math.ceil(cpu / a.core_busy - 1e-9)
    rows.append(
        Row("transcode cores", cores, f"{_fmt(per.cpu_s)} CPU-s/stream-s x {streams} / {a.core_busy:g} busy = {cores}")
    )
    ops = per.redis_commands * streams
    by_ops = ops / (a.shard_ops * a.shard_busy)
    rows.append(
        Row(
            "state Redis commands/s",
            ops,
            f"{_fmt(per.redis_commands)} x {streams} = {_fmt(ops)}/s"
            f" -> {by_ops:.2f} shards at {a.shard_ops:,.0f} ops/s x {a.shard_busy:g}",
        )
    )
    traffic = per.redis_bytes * streams
    by_bytes = traffic / (a.shard_bytes * a.shard_busy)
    rows.append(
        Row(
            "state Redis bytes/s",
            traffic,
            f"{_fmt(per.redis_bytes / 1e6)} MB x {streams} = {_fmt(traffic / 1e6)} MB/s"
            f" -> {by_bytes:.2f} shards at {a.shard_bytes / 1e6:,.0f} MB/s x {a.shard_busy:g}",
        )
    )
    memory = per.redis_memory * streams
    by_memory = memory / (a.shard_memory * a.shard_busy)
    rows.append(
        Row(
            "state Redis memory",
            memory,
            f"{_fmt(per.redis_memory / 1e6)} MB x {streams} = {_fmt(memory / 2**30)} GiB"
            f" -> {by_memory:.2f} shards at {a.shard_memory / 2**30:g} GiB x {a.shard_busy:g}",
        )
    )
    shards = max(1, math.ceil(max(by_ops, by_bytes, by_memory) - 1e-9))
    rows.append(
        Row("state Redis shards", shards, f"ceil(max({by_ops:.2f}, {by_bytes:.2f}, {by_memory:.2f})) = {shards}")
    )
    broker = per.broker_commands * streams
    broker_shards = max(1, math.ceil(broker / (a.shard_ops * a.shard_busy) - 1e-9))
    rows.append(
        Row(
            "broker Redis shards",
            broker_shards,
            f"{_fmt(per.broker_commands)} x {streams} = {_fmt(broker)} commands/s"
            f" / ({a.shard_ops:,.0f} x {a.shard_busy:g}) -> {broker_shards}",
        )
    )
    puts = per.s3_puts * streams
    rows.append(Row("S3 PUTs/s", puts, f"{_fmt(per.s3_puts)} x {streams} = {_fmt(puts)}/s"))
    month = puts * SECONDS_PER_MONTH
    rows.append(Row("S3 PUTs per 30-day month", month, f"{_fmt(puts)} x {SECONDS_PER_MONTH:,} s = {month:,.3g}"))
    upload = per.s3_put_bytes * streams
    rows.append(
        Row(
            "S3 upload bytes/s",
            upload,
            f"{_fmt(per.s3_put_bytes / 1e6)} MB x {streams} = {_fmt(upload / 1e6)} MB/s"
            f" ({_fmt(upload * 8 / 1e9)} Gbit/s)",
        )
    )
    return rows


def table(per: PerStream, streams: int = 1000, a: Assumptions | None = None) -> list[str]:
    """The plan as Markdown table lines."""
    lines = [f"| for {streams:,} streams | value | arithmetic |", "| --- | --- | --- |"]
    lines += [f"| {row.what} | {_fmt(row.value)} | {row.arithmetic} |" for row in plan(per, streams, a)]
    return lines

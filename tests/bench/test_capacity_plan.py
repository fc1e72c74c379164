"""The capacity plan's arithmetic (bench/_capacity_plan.py): what docs/capacity.md derives from
the measured per-stream figures."""

import pytest

from bench._capacity_plan import SECONDS_PER_MONTH, Assumptions, PerStream, plan, table

PER = PerStream(
    cpu_s=0.5,
    redis_commands=60.0,
    redis_bytes=2_000_000.0,
    redis_memory=3_000_000.0,
    broker_commands=10.0,
    s3_puts=2.0,
    s3_put_bytes=800_000.0,
)
EASY = Assumptions(core_busy=0.5, shard_ops=100_000, shard_bytes=1e9, shard_memory=2**30, shard_busy=0.5)


def values(per=PER, streams=1000, assumptions=EASY):
    return {row.what: row.value for row in plan(per, streams, assumptions)}


def test_cores_are_cpu_per_stream_times_streams_over_the_planned_busy_share():
    assert values()["transcode cores"] == 1000  # 0.5 x 1000 / 0.5


def test_redis_shards_follow_the_tightest_of_ops_bytes_and_memory():
    got = values()
    assert got["state Redis commands/s"] == pytest.approx(60_000)  # 1.2 shards at 100k x 0.5
    assert got["state Redis bytes/s"] == pytest.approx(2e9)  # 4 shards at 1 GB/s x 0.5
    assert got["state Redis memory"] == pytest.approx(3e9)  # 5.59 shards at 1 GiB x 0.5
    assert got["state Redis shards"] == 6
    lighter = PerStream(**{**PER.__dict__, "redis_memory": 1000.0})
    assert values(lighter)["state Redis shards"] == 4  # now bytes/s bind


def test_at_least_one_shard_and_exact_multiples_do_not_round_up():
    tiny = PerStream(0.001, 1.0, 1.0, 1.0, 1.0, 0.01, 1.0)
    got = values(tiny, streams=10)
    assert got["state Redis shards"] == 1
    assert got["broker Redis shards"] == 1
    assert got["transcode cores"] == 1
    exact = PerStream(**{**PER.__dict__, "cpu_s": 0.35})
    assert values(exact, assumptions=Assumptions(core_busy=0.7))["transcode cores"] == 500


def test_s3_requests_per_second_and_per_month():
    got = values()
    assert got["S3 PUTs/s"] == 2000
    assert got["S3 PUTs per 30-day month"] == 2000 * SECONDS_PER_MONTH
    assert got["S3 upload bytes/s"] == pytest.approx(8e8)


def test_the_table_shows_its_arithmetic():
    lines = table(PER, 1000, EASY)
    assert lines[0].startswith("| for 1,000 streams |")
    cores = next(line for line in lines if line.startswith("| transcode cores |"))
    assert "| 1,000 | 0.5 CPU-s/stream-s x 1000 / 0.5 busy = 1000 |" in cores
    shards = next(line for line in lines if line.startswith("| state Redis shards |"))
    assert "| 6 | ceil(max(1.20, 4.00, 5.59)) = 6 |" in shards

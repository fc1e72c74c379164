"""Benchmark settings: like test (own Redis DBs, own bucket, mongomock), real processes."""

from livestream.settings.test import *  # noqa: F403
from livestream.settings.test import env

S3_BUCKET = env.str("BENCH_S3_BUCKET", default="livestream-bench")

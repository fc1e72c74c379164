"""Benchmark settings: like test (own Redis DBs, own bucket, mongomock), real processes."""

from livestream.settings import base
from livestream.settings.test import *  # noqa: F403
from livestream.settings.test import REST_FRAMEWORK, env

S3_BUCKET = env.str("BENCH_S3_BUCKET", default="livestream-bench")
# API throttles as configured for a deployment (API_THROTTLE_*, base defaults), not the test
# suite's 10000/min: the web load benchmark measures the server with realistic limits.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": base.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]}

"""Threads per transcode: the host's cores shared among the transcodes running on it (real Redis)."""

import time

from django.test import override_settings

from livestream.redis import redis_client
from transcoding import cores


def test_threads_divide_the_cores_among_running_transcodes():
    assert cores.threads_for(2, 1) == 2
    assert cores.threads_for(2, 2) == 1
    assert cores.threads_for(2, 5) == 1
    assert cores.threads_for(8, 3) == 2


@override_settings(X264_THREADS=0, TRANSCODE_HOST_CORES=2)
def test_a_lone_transcode_gets_every_core_and_concurrent_ones_share_them():
    with cores.core_share() as first:
        assert first == 2
        with cores.core_share() as second:
            assert second == 1
            assert redis_client().zcard(cores.running_key()) == 2
        with cores.core_share() as third:  # the second one has finished
            assert third == 1
    assert redis_client().zcard(cores.running_key()) == 0
    with cores.core_share() as alone:
        assert alone == 2


@override_settings(X264_THREADS=0, TRANSCODE_HOST_CORES=2, TRANSCODE_TIMEOUT_S=60)
def test_a_crashed_worker_does_not_hold_its_share_forever():
    redis_client().zadd(cores.running_key(), {"killed-worker": time.time() - 3600})
    with cores.core_share() as threads:
        assert threads == 2


@override_settings(X264_THREADS=3, TRANSCODE_HOST_CORES=2)
def test_a_fixed_thread_count_is_used_as_is():
    with cores.core_share() as threads:
        assert threads == 3
    assert redis_client().zcard(cores.running_key()) == 0

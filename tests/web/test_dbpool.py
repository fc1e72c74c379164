"""Each process's database pool (livestream/dbpool.py, ADR 0009): its settings, and that a
thread ending without closing its connection does not shrink the pool for ever."""

import logging
import threading

import pytest
from django.conf import settings
from django.db import close_old_connections, connection

from livestream import dbpool

URL_SETTINGS = {"NAME": "x", "USER": "u", "PASSWORD": "p", "HOST": "h", "PORT": 5432, "ENGINE": "postgresql"}


def test_pool_settings() -> None:
    built = dbpool.build_database_settings(
        {**URL_SETTINGS, "CONN_MAX_AGE": 60, "OPTIONS": {"sslmode": "require"}},
        pool_max=7,
        pool_min=9,
        pool_timeout_s=3.0,
        max_idle_s=60.0,
        connect_timeout_s=1,
        application_name="web",
    )
    assert built["CONN_MAX_AGE"] == 0  # persistent per-thread connections are what docs/adr/0009 is about
    assert built["CONN_HEALTH_CHECKS"] is True
    options = built["OPTIONS"]
    assert options["sslmode"] == "require"  # options of the URL are kept
    assert options["connect_timeout"] == 2  # libpq's minimum
    assert options["application_name"] == "web"
    assert options["pool"]["max_size"] == 7
    assert options["pool"]["min_size"] == 7  # never above the maximum
    assert options["pool"]["timeout"] == 3.0
    assert options["pool"]["reconnect_timeout"] == dbpool.RECONNECT_TIMEOUT_S


def test_no_pool_with_max_zero() -> None:
    built = dbpool.build_database_settings(
        {**URL_SETTINGS, "OPTIONS": {}},
        pool_max=0,
        pool_min=1,
        pool_timeout_s=3.0,
        max_idle_s=60.0,
        connect_timeout_s=5,
        application_name="web",
    )
    assert "pool" not in built["OPTIONS"]
    assert built["CONN_MAX_AGE"] == 0


def test_this_process_has_a_bounded_pool(db: None) -> None:
    assert dbpool.pool_max() == settings.DATABASE_POOL_MAX > 0
    connection.ensure_connection()
    assert dbpool.pool_stats()["pool_max"] == settings.DATABASE_POOL_MAX


@pytest.mark.django_db(transaction=True)
def test_threads_that_forget_to_close_do_not_drain_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    """More threads than the pool holds each query and end without closing: every one still
    gets a connection promptly (each would otherwise keep one for ever, and the next would
    wait DATABASE_POOL_TIMEOUT_S and fail)."""
    caplog.set_level(logging.WARNING, logger="livestream.dbpool")  # whatever earlier tests did to the root
    errors: list[BaseException] = []

    def query() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except BaseException as exc:
            errors.append(exc)

    with connection.cursor() as cursor:  # this thread holds one connection meanwhile
        cursor.execute("SELECT 1")
    for _ in range(3 * settings.DATABASE_POOL_MAX):
        thread = threading.Thread(target=query)
        thread.start()
        thread.join(timeout=settings.DATABASE_POOL_TIMEOUT_S + 5)
    assert not errors
    assert "without closing its database connection" in caplog.text
    close_old_connections()

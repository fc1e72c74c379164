"""Bounded PostgreSQL connections in every process (docs/adr/0009-database-connections.md).

Each process (a uvicorn worker, a Celery worker process, beat, the ingest supervisor, the
change follower, a management command) owns one Django connection pool (psycopg 3's
``psycopg_pool``) of at most ``DATABASE_POOL_MAX`` connections. A request, task or thread
borrows a connection at its first query and gives it back when Django closes it (end of the
request or task); a request that finds every connection busy waits up to
``DATABASE_POOL_TIMEOUT_S`` and then fails with ``OperationalError`` (answered 503 by
``livestream.unavailable``). Connections are checked before each loan, so none broken by a
PostgreSQL restart is handed out twice, and the pool reconnects by itself.

This module is imported by the settings: nothing here may import ``django.db`` at the top.
"""

import logging
import os
import queue
import threading
import weakref
from typing import Any

logger = logging.getLogger(__name__)

RECONNECT_TIMEOUT_S = 5.0


def build_database_settings(
    database: dict[str, Any],
    *,
    pool_max: int,
    pool_min: int,
    pool_timeout_s: float,
    max_idle_s: float,
    connect_timeout_s: int,
    application_name: str,
) -> dict[str, Any]:
    """``DATABASES["default"]`` with the pool options (or, with ``pool_max`` 0, without a pool:
    a connection per request or task, never kept)."""
    result = dict(database)
    options = dict(result.get("OPTIONS") or {})
    options.setdefault("connect_timeout", max(2, connect_timeout_s))  # libpq's minimum is 2 s
    options.setdefault("application_name", application_name)
    # Persistent connections are per thread; under ASGI every request runs in a thread of its
    # own, so they add up without bound (docs/adr/0009): never keep one outside the pool.
    result["CONN_MAX_AGE"] = 0
    if pool_max > 0:
        options["pool"] = {
            "min_size": max(0, min(pool_min, pool_max)),
            "max_size": pool_max,
            "timeout": pool_timeout_s,
            "max_idle": max_idle_s,
            # A connection at most this old is handed out (then replaced): spreads reconnects.
            "max_lifetime": 3600.0,
            # A failed connection attempt is retried after 1, 2, 4... s, and given up (the pool
            # shrinks, then grows again on demand with a fresh attempt) after this long. The
            # default (300 s) lets the backoff grow to minutes: after a long outage a process
            # would stay without connections that long after PostgreSQL is back.
            "reconnect_timeout": RECONNECT_TIMEOUT_S,
        }
        # The pool checks each connection before lending it (an empty query): one broken by a
        # PostgreSQL restart is discarded instead of failing the request that gets it.
        result["CONN_HEALTH_CHECKS"] = True
    else:
        options.pop("pool", None)
    result["OPTIONS"] = options
    return result


def pool_max() -> int:
    """The configured ceiling of this process's connections (0: no pool, so no ceiling)."""
    from django.db import connections

    options = connections["default"].settings_dict.get("OPTIONS") or {}
    return int((options.get("pool") or {}).get("max_size", 0))


def pool_stats() -> dict[str, int]:
    """psycopg_pool's counters for this process (empty without a pool or before first use)."""
    from django.db import connections

    wrapper: Any = connections["default"]
    pools = getattr(type(wrapper), "_connection_pools", {})
    pool = pools.get(wrapper.alias)
    return dict(pool.get_stats()) if pool is not None else {}


def probe(timeout_s: float) -> str:
    """Run ``SELECT 1`` on a connection of this process's pool, waiting at most ``timeout_s``
    for one (or connecting directly when there is no pool); a description of the result.
    Raises what the connection raised (the health checks report it)."""
    from django.db import connection

    pool = getattr(connection, "pool", None)
    if pool is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "query ok"
    pool.open()
    with pool.connection(timeout=timeout_s) as conn:
        conn.execute("SELECT 1")
    stats = pool.get_stats()
    return (
        f"query ok; pool: {stats.get('pool_size', 0)} open, {stats.get('pool_available', 0)} idle,"
        f" max {pool.max_size}, {stats.get('requests_waiting', 0)} waiting"
    )


# --- connections of threads that ended without giving them back ------------------------------
#
# Django gives a connection back to the pool when it closes it: at the end of a request or a
# Celery task, or in ``close_old_connections()``. A thread of our own that queries and ends
# without that would keep its connection out of the pool for ever (psycopg_pool does not notice
# a lost connection): after DATABASE_POOL_MAX such threads the process could not query at all.
# So the first time a thread borrows a connection, its Django connection object is noted in a
# thread-local holder (no reference cycle: freed as soon as the thread ends). The holder's
# finalizer queues it (SimpleQueue.put is safe in finalizers) and a reaper thread gives back the
# connection that object still holds, if any: Django drops its reference when it gives a
# connection back, in the owning thread, so one still referenced is one never returned, and no
# other thread can be using it.

_loans = threading.local()
_ended: "queue.SimpleQueue[list[Any]]" = queue.SimpleQueue()
_reaper_pid = 0
_reaper_lock = threading.Lock()


class _Holder:
    """Lives in ``_loans`` for one thread; ``state`` lists that thread's Django connection
    objects (one per database alias, normally just one)."""

    __slots__ = ("__weakref__", "state")

    def __init__(self) -> None:
        self.state: list[Any] = []


def remember_loan(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver (a connection was just borrowed or opened)."""
    if getattr(connection.connection, "_pool", None) is None:
        return
    holder = getattr(_loans, "holder", None)
    if holder is None:
        holder = _loans.holder = _Holder()
        finalizer = weakref.finalize(holder, _ended.put, holder.state)
        finalizer.atexit = False  # type: ignore[misc]  # a documented attribute the stubs miss
        _start_reaper()
    if not any(wrapper is connection for wrapper in holder.state):
        holder.state.append(connection)


def _start_reaper() -> None:
    global _reaper_pid  # noqa: PLW0603 - one reaper per process (a forked child starts its own)
    with _reaper_lock:
        if _reaper_pid != os.getpid():
            _reaper_pid = os.getpid()
            threading.Thread(target=_reap, name="db-loan-reaper", daemon=True).start()


def _reap() -> None:
    while True:
        wrappers = _ended.get()
        while wrappers:
            _give_back(wrappers.pop())


def _give_back(wrapper: Any) -> None:
    conn = getattr(wrapper, "connection", None)
    pool = getattr(conn, "_pool", None)
    if pool is None:  # given back already (or never pooled): nothing to do
        return
    logger.warning(
        "a thread ended without closing its database connection; it goes back to the pool"
        " (call django.db.close_old_connections() when a thread of your own is done)"
    )
    wrapper.connection = None
    try:
        pool.putconn(conn)
    except Exception:  # a closed pool, a connection it no longer knows: nothing to give back
        logger.debug("could not return a connection", exc_info=True)

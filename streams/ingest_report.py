"""The ingest doctor's report of a stream, for its owner (dashboard, REST API; ADR 0034).

While a broadcast is on air the findings come from Redis (``transcoding.doctor.live_report``,
refreshed every few chunks); otherwise, and when Redis has none, from the last analysed session's
``ingest_findings`` (written whenever the set of findings changed and when a connection ended).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.models import SessionStatus, Stream


def _when(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if isinstance(value, int | float) else None


def for_stream(stream: Stream) -> dict[str, Any]:
    """``{stream, session, live, updated_at, findings}`` (see ``IngestReportSerializer``)."""
    from transcoding import doctor

    report: dict[str, Any] = {"stream": stream.pk, "session": None, "live": False, "updated_at": None, "findings": []}
    session = stream.sessions.exclude(ingest_findings={}).order_by("-started_at").first()
    open_session = stream.sessions.filter(status__in=[SessionStatus.LIVE, SessionStatus.RECONNECTING]).first()
    if open_session is not None:
        live = doctor.live_report(open_session.pk)
        if live is not None:
            return {**report, "session": open_session.pk, "live": True, **_fields(live)}
    if session is not None:
        return {
            **report,
            "session": session.pk,
            "live": session.status in (SessionStatus.LIVE, SessionStatus.RECONNECTING),
            **_fields(session.ingest_findings),
        }
    return report


def _fields(payload: dict[str, Any]) -> dict[str, Any]:
    findings = payload.get("findings")
    return {
        "updated_at": _when(payload.get("updated_at")),
        "findings": findings if isinstance(findings, list) else [],
    }

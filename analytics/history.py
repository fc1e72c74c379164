"""Change history of PostgreSQL rows (django-pghistory triggers), per object, with restore.

The triggers (``@pghistory.track`` on accounts.User, streams.Stream, streams.StreamSession)
write one event row per insert/update/delete, with the request context (user id, URL) that
``pghistory.middleware.HistoryMiddleware`` attaches. This module reads those rows as
who/when/what-changed entries (``history_of``) and writes an earlier version back
(``restore_version``); ``HistoryAdminMixin`` puts both in the Django admin (the change form's
"History" button).

Restore copies only *restorable* fields: editable, tracked by the event model, not the primary
key, not timestamps, and not the fields a model declares as never restorable (``NEVER_RESTORE``:
secrets such as a stream's key hash, which is not editable anyway, and live state the pipeline
owns, such as ``Stream.status``). Sessions are pipeline state and are not restorable at all.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pghistory
from django.db import IntegrityError, models, transaction
from pghistory.models import Events

from accounts.models import User

logger = logging.getLogger(__name__)

# Field values never shown in diffs (the history rows hold them; the admin does not show them).
SECRET_FIELDS = frozenset({"key_hash", "password"})
# Per model label: fields a restore never writes. "*" makes the model not restorable.
NEVER_RESTORE: dict[str, frozenset[str]] = {
    "streams.Stream": frozenset({"status", "last_live_at", "key_hash", "key_hint", "key_rotated_at"}),
    "streams.StreamSession": frozenset({"*"}),
    "accounts.User": frozenset({"password", "last_login", "date_joined"}),
}
_TIMESTAMPS = frozenset({"created_at", "updated_at"})


class RestoreError(Exception):
    """The version cannot be restored (unknown version, not restorable, or it conflicts with
    another row, e.g. a slug now taken). Nothing was written."""


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded change of an object."""

    event_id: int
    at: datetime
    label: str  # "insert", "update", "delete"
    user_id: int | None
    username: str | None
    url: str | None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # column -> (before, after)
    restored_from: int | None = None


@dataclass(frozen=True)
class RestoreResult:
    obj: models.Model
    changed: list[str]


def event_model_for(model: type[models.Model]) -> type[models.Model] | None:
    """The pghistory event model tracking ``model`` (one per model in this project)."""
    event_models: dict[str, type[models.Model]] = getattr(model, "pgh_event_models", {}) or {}
    return next(iter(event_models.values()), None)


def restorable_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """Fields a restore of ``model`` writes (see module docstring); empty = not restorable."""
    never = NEVER_RESTORE.get(model._meta.label, frozenset())
    event_model = event_model_for(model)
    if "*" in never or event_model is None:
        return []
    tracked = {f.attname for f in event_model._meta.concrete_fields}
    return [
        f
        for f in model._meta.concrete_fields
        if f.editable
        and not f.primary_key
        and f.name not in never
        and f.name not in _TIMESTAMPS
        and f.attname in tracked
    ]


def _shown(column: str, value: Any) -> Any:
    return "(hidden)" if column in SECRET_FIELDS else value


def history_of(obj: models.Model, *, limit: int = 200) -> list[HistoryEntry]:
    """Changes of ``obj``, newest first: when, who (from the request context; None for changes
    made by tasks and scripts), what (per-column before/after; secrets hidden)."""
    rows = list(Events.objects.tracks(obj).order_by("-pgh_id")[:limit])
    user_ids = {int(r.pgh_context["user"]) for r in rows if r.pgh_context and r.pgh_context.get("user")}
    names = {u.pk: u.username for u in User.objects.filter(pk__in=user_ids).only("username")}
    entries = []
    for row in rows:
        context = row.pgh_context or {}
        user_id = int(context["user"]) if context.get("user") else None
        diff = row.pgh_diff or {}
        if row.pgh_label == "insert":
            diff = {key: [None, value] for key, value in (row.pgh_data or {}).items()}
        changes = {
            column: (_shown(column, before), _shown(column, after))
            for column, (before, after) in sorted(diff.items())
            if column not in _TIMESTAMPS
        }
        entries.append(
            HistoryEntry(
                event_id=int(row.pgh_id),
                at=row.pgh_created_at,
                label=str(row.pgh_label),
                user_id=user_id,
                username=names.get(user_id) if user_id else None,
                url=context.get("url"),
                changes=changes,
                restored_from=int(context["restored_from"]) if context.get("restored_from") else None,
            )
        )
    return entries


def get_version(model: type[models.Model], object_pk: Any, event_id: int) -> models.Model:
    """The event row ``event_id`` of object ``object_pk``; RestoreError if there is none."""
    event_model = event_model_for(model)
    if event_model is None:
        raise RestoreError(f"{model._meta.verbose_name} has no recorded history.")
    try:
        return event_model._default_manager.get(pgh_id=event_id, pgh_obj_id=object_pk)
    except (event_model.DoesNotExist, ValueError):  # type: ignore[attr-defined]
        raise RestoreError("No such version of this object.") from None


def version_differences(obj: models.Model, version: models.Model) -> dict[str, tuple[Any, Any]]:
    """Restorable fields whose current value differs from ``version``: name -> (now, then)."""
    return {
        f.name: (_shown(f.name, getattr(obj, f.attname)), _shown(f.name, getattr(version, f.attname)))
        for f in restorable_fields(type(obj))
        if getattr(obj, f.attname) != getattr(version, f.attname)
    }


def restore_version(obj: models.Model, event_id: int, *, user: User | None) -> RestoreResult:
    """Write the restorable fields of version ``event_id`` back onto ``obj``.

    Locks the row, saves only the fields that differ (plus ``updated_at``) in one transaction,
    under a pghistory context carrying ``user`` and ``restored_from=event_id``: the trigger
    records the restore itself as a new history row. A version equal to the current state
    writes nothing. Raises RestoreError (nothing written) if the model is not restorable, the
    version is unknown, or the restored values conflict with another row.
    """
    model = type(obj)
    if not restorable_fields(model):
        raise RestoreError(f"{str(model._meta.verbose_name_plural).capitalize()} cannot be restored from history.")
    version = get_version(model, obj.pk, event_id)
    metadata: dict[str, Any] = {"restored_from": event_id}
    if user is not None:
        metadata["user"] = user.pk
    try:
        with transaction.atomic(), pghistory.context(**metadata):
            current = model._default_manager.select_for_update().get(pk=obj.pk)
            changed = [
                f for f in restorable_fields(model) if getattr(current, f.attname) != getattr(version, f.attname)
            ]
            if not changed:
                return RestoreResult(current, [])
            for f in changed:
                setattr(current, f.attname, getattr(version, f.attname))
            update_fields = [f.name for f in changed]
            if any(f.name == "updated_at" for f in model._meta.concrete_fields):
                update_fields.append("updated_at")
            current.save(update_fields=update_fields)
    except IntegrityError as exc:
        raise RestoreError(f"That version conflicts with another record ({exc.__cause__ or exc}).") from None
    logger.info(
        "object restored from history",
        extra={"user": user.pk if user else None, "ctx": {"model": model._meta.label, "pk": obj.pk, "event": event_id}},
    )
    return RestoreResult(current, [f.name for f in changed])

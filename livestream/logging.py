"""Log formatting: one readable line per event with ``key=value`` context appended.

Call sites pass context through ``extra={"ctx": {...}}`` or plain ``extra`` keys listed in
``CONTEXT_KEYS``; operators then grep ``stream=42`` or ``session=...`` across processes.
"""

import logging

CONTEXT_KEYS = ("stream", "session", "seq", "rendition", "user", "addr", "task", "reason")


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if hasattr(record, key)]
        ctx = getattr(record, "ctx", None)
        if isinstance(ctx, dict):
            pairs.extend(f"{key}={value}" for key, value in ctx.items())
        return f"{line} {' '.join(pairs)}" if pairs else line

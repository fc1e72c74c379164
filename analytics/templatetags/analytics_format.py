"""Formatting filters for analytics pages: durations, bitrates, ratios."""

from django import template

register = template.Library()
MISSING = "\N{EN DASH}"


@register.filter
def duration(seconds: float | None) -> str:
    """``3725`` -> ``1 h 02 min``; ``75`` -> ``1 min 15 s``; None -> an en dash."""
    if seconds is None:
        return MISSING
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def mbps(bits_per_second: float | None) -> str:
    if bits_per_second is None:
        return MISSING
    return f"{float(bits_per_second) / 1_000_000:.2f} Mb/s"


@register.filter
def percent(ratio: float | None) -> str:
    if ratio is None:
        return MISSING
    return f"{float(ratio) * 100:.2f} %"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{float(value):.2f} s"

"""The Compose specification's variable interpolation, offline (no Docker engine here).

Implements the spec's rules for values (keys are never interpolated): ``$$`` is a literal
``$``; ``$VAR`` and ``${VAR}``; ``${VAR:-default}`` (unset or empty) and ``${VAR-default}``
(unset); ``${VAR:?err}`` (error when unset or empty) and ``${VAR?err}`` (error when unset);
``${VAR:+alt}`` and ``${VAR+alt}``; defaults and messages may themselves interpolate
(``${A:-${B}}``). An unset variable without a modifier becomes the empty string, as Compose
does (with a warning there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ${NAME<op><rest>} with the operators of the spec, longest first.
OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A required variable (``${VAR:?err}`` / ``${VAR?err}``) has no value."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"required variable {name} is missing a value: {message}")


@dataclass(frozen=True)
class Reference:
    """One ``${...}`` or ``$NAME`` found in a string: the variable and its operator ('' if none)."""

    name: str
    operator: str
    argument: str


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` that starts at ``start``."""
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unterminated ${{ in {text!r}")


def _parse_braced(inner: str) -> Reference:
    match = NAME.match(inner)
    if match is None:
        raise ValueError(f"invalid interpolation format ${{{inner}}}")
    rest = inner[match.end() :]
    for op in OPERATORS:
        if rest.startswith(op):
            return Reference(match.group(), op, rest[len(op) :])
    if rest:
        raise ValueError(f"invalid interpolation format ${{{inner}}}")
    return Reference(match.group(), "", "")


def references(text: str) -> list[Reference]:
    """Every variable reference in ``text`` (also nested ones inside defaults)."""
    found: list[Reference] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            ref = _parse_braced(text[i + 2 : end])
            found.append(ref)
            found.extend(references(ref.argument))
            i = end + 1
        elif text[i] == "$" and (match := NAME.match(text, i + 1)):
            found.append(Reference(match.group(), "", ""))
            i = match.end()
        else:
            i += 1
    return found


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            out.append(_resolve(_parse_braced(text[i + 2 : end]), env))
            i = end + 1
        elif text[i] == "$" and (match := NAME.match(text, i + 1)):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _resolve(ref: Reference, env: Mapping[str, str]) -> str:  # noqa: PLR0911 - one branch per operator
    value = env.get(ref.name)
    unset, empty = value is None, not value
    if ref.operator == ":-":
        return interpolate_string(ref.argument, env) if empty else str(value)
    if ref.operator == "-":
        return interpolate_string(ref.argument, env) if unset else str(value)
    if ref.operator == ":?":
        if empty:
            raise InterpolationError(ref.name, interpolate_string(ref.argument, env))
        return str(value)
    if ref.operator == "?":
        if unset:
            raise InterpolationError(ref.name, interpolate_string(ref.argument, env))
        return str(value)
    if ref.operator == ":+":
        return "" if empty else interpolate_string(ref.argument, env)
    if ref.operator == "+":
        return "" if unset else interpolate_string(ref.argument, env)
    return value or ""


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """A copy of a loaded YAML document with every string value interpolated (keys kept)."""
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def string_values(node: Any) -> list[str]:
    """Every string value of a loaded YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in string_values(value)]
    if isinstance(node, list):
        return [s for item in node for s in string_values(item)]
    return []


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def config(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """What ``docker compose config`` would resolve from ``path`` with ``env`` (interpolation
    only), or InterpolationError as Compose refuses to start."""
    resolved: dict[str, Any] = interpolate(load(path), env)
    return resolved

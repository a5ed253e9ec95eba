"""Reading resource properties as the engine hands them to a policy: camelCase, maybe unknown.

During ``pulumi preview`` a property computed from another resource's output is not known
yet. The policy SDK wraps properties in a proxy that raises ``UnknownValueError`` on such a
value; :func:`plain` turns that into the :data:`UNKNOWN` marker instead, so one unknown
field does not stop a policy from judging the fields it can see. A check that meets
``UNKNOWN`` where it needs a value passes for now: the engine runs resource policies again
with known inputs before it creates the resource, and stack policies after the update.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

_UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_STRING_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_OBJECT_VALUE,
    }
)


class _Unknown:
    """A value the engine cannot know yet (preview)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown until deployment>"


UNKNOWN: Any = _Unknown()


def plain(value: Any) -> Any:
    """``value`` as plain dicts and lists, each unknown value replaced by :data:`UNKNOWN`."""
    if isinstance(value, Mapping):
        result = {}
        for key in value:  # iterating keys never touches values, so never raises
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = UNKNOWN
        return result
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    if isinstance(value, str) and value in _UNKNOWN_SENTINELS:
        return UNKNOWN
    return value


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


def is_true(value: Any) -> bool:
    """True for ``True`` and for the string ``"true"`` (launch templates type booleans as strings)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def is_set(value: Any) -> bool:
    """True when a property holds something: a non-empty value, or one not known yet."""
    return value is UNKNOWN or value not in (None, "", [], {})


def as_list(value: Any) -> list[Any]:
    """A list property as a list: absent is empty, a lone value is a list of one."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def as_mapping(value: Any) -> Mapping[str, Any]:
    """A nested block as a mapping; absent or unknown blocks read as empty."""
    return value if isinstance(value, Mapping) else {}


def as_int(value: Any) -> int | None:
    """A number property as an int (the wire carries floats); None when absent or not a number."""
    if isinstance(value, bool) or value is None or value is UNKNOWN:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def allow_statements(document: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(label, statement) for each Allow statement of a policy document (JSON text or mapping)."""
    if is_unknown(document) or document is None:
        return
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return  # iam-no-wildcard-data-access reports documents it cannot read
    if not isinstance(document, Mapping):
        return
    for index, statement in enumerate(as_list(document.get("Statement"))):
        if isinstance(statement, Mapping) and statement.get("Effect") == "Allow":
            sid = statement.get("Sid")
            yield f"Statement[{index}]" + (f" ({sid})" if isinstance(sid, str) and sid else ""), statement

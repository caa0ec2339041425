"""The one clock module: UTC datetimes, the ISO strings the store keeps, and integer seconds.

``custody`` and ``tui`` work in timezone-aware UTC :class:`datetime` values and store them as
ISO-8601 strings with second precision (:func:`iso`, :func:`parse`). ``ceremonies`` works in
integer Unix seconds (the transcript's and the ceremony registry's time); :func:`to_seconds`
and :func:`from_seconds` convert between the two without losing the timezone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""A time source returning an aware UTC datetime (tests pin one)."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """*t* as the store's ISO-8601 text, in UTC, to the second."""
    return t.astimezone(UTC).isoformat(timespec="seconds")


def parse(s: str) -> datetime:
    """Parse an ISO-8601 time from the store; naive values are taken as UTC."""
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def to_seconds(t: datetime) -> int:
    """*t* as integer Unix seconds (the unit ceremonies use), truncated."""
    return int(t.timestamp())


def from_seconds(s: int | float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(s, UTC)

"""Instants as text: the ISO 8601 UTC form schedules store in Redis (``...T12:00:00.000000Z``)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | bytes) -> datetime:
    value = text.decode() if isinstance(text, bytes) else text
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)

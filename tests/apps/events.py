"""Event types shared by the tests and the apps they run in subprocesses."""

from __future__ import annotations

from eventbus import Event


class Job(Event, stream="jobs"):
    n: int
    payload: str = ""


class Other(Event, stream="jobs"):
    text: str


class Ping(Event, stream="pings"):
    n: int


class Pong(Event, stream="pongs"):
    n: int


class Beat(Event, stream="beats"):
    tick: str

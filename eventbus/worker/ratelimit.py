"""Rate-limited log lines: a flood of bad entries must not become a flood of logs."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimited:
    """Logs each kind of message at most `burst` times per `interval_s` seconds; what
    it holds back is counted and reported with the next line of that kind."""

    def __init__(self, logger: logging.Logger, *, burst: int = 5, interval_s: float = 10.0) -> None:
        self._log = logger
        self._burst = burst
        self._interval_s = interval_s
        # kind -> [window start, lines logged in the window, lines suppressed]
        self._windows: dict[str, list[float]] = {}

    def log(self, level: int, kind: str, msg: str, *args: Any) -> None:
        if not self._log.isEnabledFor(level):
            return
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is None or now - window[0] >= self._interval_s:
            suppressed = int(window[2]) if window is not None else 0
            window = self._windows[kind] = [now, 0, 0]
            if suppressed:
                msg += f" ({suppressed:,} similar message(s) suppressed)"
        if window[1] >= self._burst:
            window[2] += 1
            return
        window[1] += 1
        self._log.log(level, msg, *args)

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, kind, msg, *args)

    def error(self, kind: str, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, kind, msg, *args)

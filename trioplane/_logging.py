"""Logging that a hostile or broken peer cannot flood: repeated messages are rate-limited."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs each *kind* of message at most ``burst`` times per ``interval`` seconds.

    The rest are counted, and the next message of that kind that passes says how
    many were suppressed. For errors a peer can cause at will (bad frames, failed
    handshakes, refused connections): one log line per request would let it fill
    the disk. Kinds are few and fixed (a string per call site), so this keeps
    bounded state.
    """

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0, burst: int = 5) -> None:
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> start, logged, dropped

    def log(self, level: int, kind: str, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log unless ``kind`` is over its budget; ``True`` if it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        now = time.monotonic()
        start, logged, dropped = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.interval:
            start, logged = now, 0
        if logged >= self.burst:
            self._windows[kind] = (start, logged, dropped + 1)
            return False
        if dropped:
            msg = f"{msg} ({dropped} more like this suppressed)"
        self._windows[kind] = (start, logged + 1, 0)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, kind: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def exception(self, kind: str, msg: str, *args: Any) -> bool:
        """An error with the traceback of the exception being handled."""
        return self.log(logging.ERROR, kind, msg, *args, exc_info=True)

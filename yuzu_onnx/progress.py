"""Progress of a long ``ism`` run: a live line on a terminal, and one summary line at the end."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour)."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Report ``done of total`` records with their rate and the time left.

    Parameters
    ----------
    total : int
        Number of records of the job.
    unit : str
        What a record is, plural (``"loci"``, ``"sequences"``).
    stream : TextIO, optional
        Where the live line goes (default ``sys.stderr``).
    live : bool, optional
        Draw the live line; default: when ``stream`` is a terminal (never into a log file).
    min_interval : float
        Seconds between two redraws of the live line.
    """

    def __init__(self, total: int, unit: str = "sequences", stream: TextIO | None = None,
                 live: bool | None = None, min_interval: float = 0.2):
        self.total = int(total)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.min_interval = min_interval
        self.done = 0
        self._t0 = time.perf_counter()
        self._last_draw = -float("inf")
        self._drawn = False

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self._t0

    @property
    def rate(self) -> float:
        """Records per second so far (0 before the first)."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """``done/total unit (pct%), rate unit/s, ETA H:MM:SS``."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.rate
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        return f"{self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate:.1f} {self.unit}/s, ETA {eta}"

    def advance(self, count: int) -> None:
        """Count ``count`` more records done; redraw the live line at most every ``min_interval`` s."""
        self.done += int(count)
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval or self.done >= self.total:
            self._last_draw = now
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """End the live line (if one was drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def summary(self, what: str, where: str) -> str:
        """``wrote WHAT of N unit to WHERE in S s (R unit/s)``."""
        elapsed = self.elapsed
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return f"wrote {what} of {self.done} {self.unit} to {where} in {elapsed:.1f} s ({rate:.1f} {self.unit}/s)"

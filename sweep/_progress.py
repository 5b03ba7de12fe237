"""The sweep's live progress line on stderr: done / running / queued / failed / retried / ETA.

On a terminal the line is redrawn in place at most twice a second. Elsewhere (a log file,
``ray job logs``) a full line is printed when a trial finishes, at most every ``LOG_EVERY_S``
seconds, so that a long sweep's log stays readable; and every ``HEARTBEAT_S`` seconds while none
finishes, so that a sweep of long trials still shows it is alive.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

TTY_EVERY_S = 0.5
LOG_EVERY_S = 30.0
HEARTBEAT_S = 300.0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class Counts:
    """Trial counts of one sweep run (``earlier``: already finished when the run started)."""

    total: int
    earlier: int = 0
    completed: int = 0
    diverged: int = 0  # finished, not counted in verdicts
    failed: int = 0
    retried: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        return self.completed + self.diverged + self.failed

    @property
    def remaining(self) -> int:
        return self.total - self.earlier - self.finished


@dataclass
class Progress:
    """Renders :class:`Counts`; ``update`` is cheap to call often."""

    counts: Counts
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    quiet: bool = False
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    _last_finished: int = 0
    _width: int = 0

    @property
    def tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def eta(self) -> str:
        c = self.counts
        if c.finished == 0:
            return "?"
        per_trial = (time.monotonic() - self.started) / c.finished  # with the cluster's slots
        return _duration(per_trial * c.remaining)

    def line(self) -> str:
        c = self.counts
        done = c.earlier + c.completed + c.diverged
        queued = max(0, c.remaining - c.running)
        text = (f"sweep: {done}/{c.total} done, {c.running} running, {queued} queued, "
                f"{c.failed} failed, {c.retried} retried")  # fmt: skip
        if c.diverged:
            text += f" ({c.diverged} diverged)"
        elapsed = _duration(time.monotonic() - self.started)
        return f"{text} | {elapsed} elapsed, ETA {self.eta() if c.remaining else '0s'}"

    def update(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last >= TTY_EVERY_S:
                text = self.line()
                self.stream.write("\r" + text.ljust(self._width))
                self.stream.flush()
                self._width, self._last = len(text), now
            return
        changed = self.counts.finished != self._last_finished
        alive = now - max(self._last, self.started) >= HEARTBEAT_S  # nothing finished for long
        if force or alive or (changed and now - self._last >= LOG_EVERY_S):
            print(self.line(), file=self.stream, flush=True)
            self._last, self._last_finished = now, self.counts.finished

    def close(self) -> None:
        if self.quiet:
            return
        self.update(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (a warning), without garbling the progress line."""
        if self.tty and self._width and not self.quiet:
            self.stream.write("\r" + " " * self._width + "\r")
        print(text, file=self.stream, flush=True)
        self._last = 0.0


def final_report(res: Any, name: str, out: TextIO) -> None:
    """The closing lines of a sweep on stdout: counts and failures.

    ``res`` is a ``sweep._runner.SweepResult``.
    """
    c = res.counts
    print(f"sweep {name}: {c.total} trials: {c.earlier} from earlier runs, {c.completed} "
          f"completed, {c.diverged} diverged, {c.failed} failed, {c.retried} retried "
          f"({res.wall_s:.1f} s); store {res.sweep_dir}", file=out)  # fmt: skip
    for tid, line in list(res.failed.items())[:10]:
        print(f"  failed {tid}: {line}", file=out)
    if len(res.failed) > 10:
        print(f"  ... and {len(res.failed) - 10} more (summary.json 'error' in each)", file=out)

"""The sweep's live progress line on stderr: done / running / queued / failed / retried / ETA.

On a terminal the line is redrawn in place at most twice a second. Elsewhere (a log file,
``ray job logs``) a full line is printed when a trial finishes, at most every ``LOG_EVERY_S``
seconds, so that a long sweep's log stays readable; and every ``HEARTBEAT_S`` seconds while none
finishes, so that a sweep of long trials still shows it is alive.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO

TTY_EVERY_S = 0.5
LOG_EVERY_S = 30.0
HEARTBEAT_S = 300.0
STAGE_LOG_EVERY_S = 30.0  # a long stage's "still working" line in a log file
# the streams whose last write was a redrawn line without its newline (a terminal's progress
# line): anything else printed there must end that line first
_dangling: set[int] = set()


def end_line(stream: TextIO) -> None:
    """End a progress line left open on ``stream``, so that the next text starts a line."""
    if id(stream) in _dangling:
        _dangling.discard(id(stream))
        stream.write("\n")
        stream.flush()


def _redraw(stream: TextIO, text: str, width: int) -> int:
    """Draw ``text`` over the open line of a terminal; the new width."""
    _dangling.add(id(stream))  # first: a Ctrl-C during the write still ends the line
    stream.write("\r" + text.ljust(width))
    stream.flush()
    return len(text)


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
    detail: str = ""  # how far the running trials got, appended to the line
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
        text = f"{text} | {elapsed} elapsed, ETA {self.eta() if c.remaining else '0s'}"
        return f"{text} | {self.detail}" if self.detail and c.running else text

    def update(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last >= TTY_EVERY_S:
                self._width, self._last = _redraw(self.stream, self.line(), self._width), now
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
        end_line(self.stream)

    def message(self, text: str) -> None:
        """A line of its own (a warning), without garbling the progress line."""
        if self.tty and self._width and not self.quiet and id(self.stream) in _dangling:
            self.stream.write("\r" + " " * self._width + "\r")
            _dangling.discard(id(self.stream))
        print(text, file=self.stream, flush=True)
        self._last = 0.0


class Stage:
    """A long step without counts (the aggregation): its name and the time spent so far.

    On a terminal one line is redrawn every second and ends with the stage's time. Elsewhere (a
    log) a line follows every ``log_every`` seconds, and the stage's time ends them; a short
    stage prints nothing there, and a stage that raises erases its line, so that an error stays
    the one line the user sees.
    """

    def __init__(self, name: str, stream: TextIO, quiet: bool = False,
                 log_every: float = STAGE_LOG_EVERY_S) -> None:  # fmt: skip
        self.name, self.stream, self.quiet = name, stream, quiet
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = 1.0 if self.tty else log_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._start = time.monotonic()
        self._width = 0
        self._said = False

    def _say(self, text: str) -> None:
        if self.tty:
            self._width = _redraw(self.stream, text, self._width)
        else:
            print(text, file=self.stream, flush=True)
        self._said = True

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._say(f"{self.name} ... {_duration(time.monotonic() - self._start)}")

    def __enter__(self) -> Stage:
        if not self.quiet:
            if self.tty:
                self._say(f"{self.name} ...")
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if self.quiet:
            return
        self._stop.set()
        self._thread.join()
        if kind is not None and self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            _dangling.discard(id(self.stream))
        elif kind is None and self._said:
            self._say(f"{self.name}: done in {time.monotonic() - self._start:.1f} s")
            end_line(self.stream)

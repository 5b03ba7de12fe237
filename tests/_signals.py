"""Signals for the processes the tests start."""

from __future__ import annotations

import signal


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child the test interrupts: SIGINT back to its default action.

    A shell starts a background job with SIGINT ignored, and an ignored signal stays ignored
    across exec, so a suite run as ``... &`` would hand that to the CLI it starts, which then
    (rightly) keeps running through the test's Ctrl-C. A terminal's foreground command has the
    default, and that is what these tests stand for.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)

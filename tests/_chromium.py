"""Headless Chromium for the browser tests: find it, dump a page's rendered DOM, screenshot it.

Chromium runs once per page (``--dump-dom`` or ``--screenshot``), with a virtual-time budget
that lets a single-page app fetch its data and render before the page is read. Each run gets
a session of its own, so a hung browser is killed with all its helper processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html.parser
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # MLflow shows an HTML artifact in a sandboxed iframe; Chromium gives such frames a process
    # of their own, and a headless screenshot is taken before that process has painted a large
    # page (the report came out blank). In-process, the frame is painted like the rest.
    "--disable-features=IsolateSandboxedIframes",
)  # fmt: skip
CAPTURES = 3  # screenshots of one page, when the first shows it unfinished
RUN_TIMEOUT_S = 180.0  # one page takes ~3-5 s on an idle 2-core machine


def chromium_binary() -> str:
    """The Chromium executable. Missing: the test fails under CI (which installs it), else skips."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium not found (CI installs it: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pytest.skip raises


@dataclasses.dataclass(frozen=True)
class Chromium:
    """One headless browser profile; each call loads one URL in a fresh browser process.

    Args:
        binary: the Chromium executable.
        profile: the user-data directory (created by Chromium; keep it under tmp_path).
        budget_ms: virtual time granted to the page (network, timers) before it is read.
        window: viewport size in CSS pixels, (width, height).
    """

    binary: str
    profile: Path
    budget_ms: int = 20_000
    window: tuple[int, int] = (1400, 1000)

    def _run(self, url: str, *extra: str) -> str:
        cmd = [self.binary, *FLAGS, f"--user-data-dir={self.profile}",
               f"--virtual-time-budget={self.budget_ms}",
               f"--window-size={self.window[0]},{self.window[1]}", *extra, url]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the browser and its renderers
            proc.communicate()
            raise AssertionError(f"chromium hung on {url} for {RUN_TIMEOUT_S:.0f} s") from None
        assert proc.returncode == 0, f"chromium exited {proc.returncode} on {url}:\n{err[-2000:]}"
        return out

    def dump_dom(self, url: str, ready: Callable[[str], bool] | None = None) -> str:
        """The page's DOM, serialized after scripts ran (the main frame only, not iframes).

        Args:
            ready: a test on the DOM; a dump that fails it (a busy machine: the page had not
                rendered its last part within the budget) is taken again, up to ``CAPTURES``
                times, and the last one is returned either way.
        """
        dom = ""
        for _ in range(CAPTURES if ready else 1):
            # paint before reading: charts drawn when they scroll into view are drawn then
            dom = self._run(url, "--run-all-compositor-stages-before-draw", "--dump-dom")
            if ready is None or ready(dom):
                break
        return dom

    def screenshot(
        self, url: str, png: Path, ready: Callable[[np.ndarray], bool] | None = None
    ) -> Path:
        """A PNG of the viewport after the page rendered.

        Args:
            ready: a test on the pixels (shape (height, width, 3)). A busy machine sometimes
                gets the picture taken before the page painted its last part (the virtual-time
                budget does not wait for everything); a capture that fails ``ready`` is taken
                again, up to ``CAPTURES`` times, and the last one is kept either way.
        """
        png.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(CAPTURES if ready else 1):
            self._run(url, f"--screenshot={png}")
            assert png.is_file(), f"chromium wrote no screenshot of {url}"
            if ready is None or ready(pixels(png)):
                break
        return png


class Page(html.parser.HTMLParser):
    """What a reader sees in a DOM dump: visible text, table cells, image sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self.th: list[str] = []  # header cells, whitespace collapsed
        self.td: list[str] = []  # data cells, whitespace collapsed
        self.img_src: list[str] = []
        self.title = ""
        self._skip = 0  # depth inside <script>/<style>
        self._cell: list[str] | None = None
        self._tag = ""

    @property
    def text(self) -> str:
        """Visible text, whitespace collapsed to single spaces."""
        return " ".join(self.words)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "img":
            self.img_src.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in ("th", "td") and self._cell is not None:
            getattr(self, tag).append(" ".join(" ".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._tag == "title" and not self.title:
            self.title = data.strip()
        if self._skip:
            return
        self.words.extend(data.split())
        if self._cell is not None:
            self._cell.append(data)


def parse_page(dom: str) -> Page:
    """Parse a DOM dump (see :class:`Page`)."""
    page = Page()
    page.feed(dom)
    page.close()
    return page


def pixels(png: Path) -> np.ndarray:
    """The screenshot as an RGB array, shape (height, width, 3), uint8."""
    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"))


def distinct_colours(rgb: np.ndarray) -> int:
    """How many different colours an RGB array (shape (..., 3)) holds; 1 means blank."""
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


def ink(rgb: np.ndarray, below: int = 200) -> float:
    """Fraction of pixels with some channel darker than ``below`` (text, lines, plots)."""
    return float((rgb.min(axis=-1) < below).mean())

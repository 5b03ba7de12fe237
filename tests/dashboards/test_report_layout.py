"""The report as a reader sees it in a 1600 px window: measured by headless Chromium's layout.

A copy of report.html gets a script that measures the laid-out page (its scroll width, where
each verdict column's header ends) and writes the numbers into the DOM, which Chromium dumps.
"""

from __future__ import annotations

import html
import json
import re

import pytest

from tests._chromium import Chromium, chromium_binary, parse_page

WINDOW = (1600, 1000)
VERDICT_HEADERS = ("verdict", "direct", "regime")
MEASURE = """
<script>
(function () {
  var heads = [];
  document.querySelectorAll('th').forEach(function (th) {
    var t = th.textContent.trim();
    if (%s.indexOf(t) >= 0) {
      var box = th.getBoundingClientRect();
      var wrap = th.closest('.wide');
      var edge = wrap ? wrap.getBoundingClientRect().right : window.innerWidth;
      heads.push({name: t, right: box.right, edge: edge});
    }
  });
  var out = {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
             heads: heads};
  var pre = document.createElement('pre');
  pre.id = 'layout'; pre.textContent = 'LAYOUT' + JSON.stringify(out) + 'END';
  document.body.appendChild(pre);
})();
</script>
""" % json.dumps(list(VERDICT_HEADERS))  # noqa: UP031 (a JavaScript template with braces)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    return Chromium(chromium_binary(), tmp_path_factory.mktemp("profile"), window=WINDOW)


def layout(browser: Chromium, report_html, tmp_path) -> dict:
    """The measured layout of a report at WINDOW (see MEASURE)."""
    page = report_html.read_text().replace("</body>", MEASURE + "</body>")
    probe = tmp_path / "measured.html"
    probe.write_text(page)
    found = re.search(r'<pre id="layout">LAYOUT(.*?)END</pre>', browser.dump_dom(probe.as_uri()))
    assert found, "the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


def test_every_verdict_column_is_in_view_at_1600_px(growth_result, browser, tmp_path):
    """No page-wide horizontal scroll; every verdict header ends inside the window and inside
    its table's scroll box (so it is seen without scrolling sideways)."""
    got = layout(browser, growth_result.html, tmp_path)
    assert got["inner"] == WINDOW[0], got
    assert got["scroll"] <= got["inner"], f"the page is {got['scroll']} px wide: {got}"
    names = {h["name"] for h in got["heads"]}
    assert {"direct", "verdict", "regime"} <= names, names
    for head in got["heads"]:
        assert head["right"] <= min(head["edge"], got["inner"]) + 1, head


def test_the_page_leads_with_the_answer(growth_result, browser):
    """First the direct table, then each group's answer in bold; the evidence after it."""
    page = parse_page(browser.dump_dom(growth_result.html.as_uri()))
    text = page.text
    answer = text.index("Conclusions")
    assert text.index("Direct verdict: does training") < answer < text.index("Regimes")
    first_answer = text[answer : answer + 400]
    assert "Evidence:" in first_answer and first_answer.index(":") < first_answer.index("Evidence:")
    assert text.index("Direct verdict: details") > answer

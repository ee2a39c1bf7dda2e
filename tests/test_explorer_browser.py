"""The exported explorer page renders in headless Chromium: every panel drawn, no JS errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings

import pytest

from analysis_fixtures import PAPER, REPO, write_synthetic_results
from robnb.analysis.load import load_results
from robnb.viz.explorer import PANEL_TITLES, explorer_chart, explorer_data, export_explorer_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = next((b for b in map(shutil.which, BROWSERS) if b), None)
PANEL_SCOPES = ("concat_0_concat_0_group", "concat_0_concat_1_group", "concat_1_concat_0_group",
                "concat_1_concat_1_group")
# Test-side probe, injected first in <head>: records errors, then marks the DOM when done.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + e.message));
window.addEventListener('unhandledrejection', e => window.__errors.push('rejection: ' + e.reason));
const __ce = console.error;
console.error = (...a) => { window.__errors.push('console.error: ' + a.join(' ')); __ce(...a); };
setTimeout(() => { document.body.setAttribute('data-errors', JSON.stringify(window.__errors));
                   document.body.setAttribute('data-done', '1'); }, 5000);
</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome binary on PATH "
                                "(Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    if PAPER is not None:
        sources = [PAPER / "evaluation" / "tom_013_eval_niki_171_gcg.csv",
                   PAPER / "training" / "niki_171_adv_tr_gcg_pm_small.csv"]
    else:
        sources = [write_synthetic_results(tmp / "own")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = explorer_data(load_results(sources), targets=(2.0, 5.0), n_boot=50)
    return export_explorer_html(explorer_chart(data), tmp / "explorer.html")


def _chromium(tmp, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


def test_every_panel_renders_without_javascript_errors(page, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    out = _chromium(tmp_path, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri())
    dom = out.stdout
    assert 'data-done="1"' in dom, out.stderr[-2000:]
    errors = json.loads(re.search(r'data-errors="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert errors == []
    svg = dom[dom.index('class="marks"'):] if 'class="marks"' in dom else dom
    for title in PANEL_TITLES:
        assert f">{title}<" in svg, f"panel title '{title}' not rendered"
    starts = [svg.index(s) for s in PANEL_SCOPES]
    assert starts == sorted(starts)
    for scope, a, b in zip(PANEL_SCOPES, starts, starts[1:] + [len(svg)]):
        panel = svg[a:b]
        # marks drawn from data: a path with geometry in a mark group other than the constant
        # parity rule (which draws even without data)
        drawn = re.findall(
            r'class="mark-\w+ role-mark (\w+)"[^>]*>(?:<(?!/g>)[^>]*>)*?<path[^>]*\bd="M', panel)
        assert [g for g in drawn if not g.startswith("parity_rule")], \
            f"panel {scope} has no marks drawn from data"


def test_screenshot_is_written(page, tmp_path):
    shot = REPO / "outputs" / "explorer_screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    out = _chromium(tmp_path, "--virtual-time-budget=20000", "--window-size=1100,800",
                    f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, out.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

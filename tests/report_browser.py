"""Render a run report (report.html) in headless Debian Chromium and check what a reader sees.

`.ci/run` installs Debian's `chromium` package when it is missing; without it the check skips
with the reason. Chromium runs as the machine's probe runs it: no sandbox (CI runs as root), no GPU,
no background networking (the network is closed; without these flags it keeps retrying), and a
fresh profile folder.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
)

# Appended to a copy of the page: after `load`, record every <img>'s decoded size in the DOM.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const sizes = Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(sizes);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """Path of the Chromium binary, or skip the test saying how to get one."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "headless Chromium not installed: `.ci/run` installs Debian's chromium package "
        "(apt-get install -y chromium); it could not be installed on this machine"
    )


def rendered_dom(page: Path, workdir: Path) -> tuple[str, list[tuple[str, bool, int, int]]]:
    """The DOM of `page` after Chromium loaded it, and (alt, complete, width, height) of each <img>."""
    probe_page = workdir / "report-probe.html"
    text = page.read_text(encoding="utf-8")
    assert "</body>" in text, f"{page}: no </body>"
    probe_page.write_text(text.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    cmd = [
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "--dump-dom",
        probe_page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=180)
    assert done.returncode == 0, f"chromium exit {done.returncode}: {done.stderr[-2000:]}"
    dom = done.stdout
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    assert found, "the page's load event never ran in Chromium (no image probe in the DOM)"
    return dom, [tuple(x) for x in json.loads(html.unescape(found.group(1)))]


def dom_text(dom: str) -> str:
    """The DOM without tags (what a reader reads), whitespace collapsed."""
    return re.sub(
        r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)))
    )


def assert_report_renders(results: Path, workdir: Path) -> str:
    """The report of `results` renders in Chromium, every figure decodes to a non-empty image, no
    asset is fetched from outside the page, and the held-out C-indices of summary.json are shown.
    Returns the visible text."""
    page = results / "report.html"
    assert page.is_file(), f"{page} not written"
    source = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(?!data:|#)', source), "the report refers to an external asset"
    dom, images = rendered_dom(page, workdir)
    assert len(images) >= 3, f"expected the report's figures, found {len(images)} <img>"
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, f"figure {alt!r} did not decode ({width}x{height})"
    pngs = sorted((results / "report").glob("*.png"))
    assert {p.stem for p in pngs} <= {alt for alt, *_ in images}, "a PNG of report/ is missing from the page"
    text = dom_text(dom)
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    for site, metrics in summary["holdout_selected"].items():
        for key, value in metrics.items():
            if key.startswith("c-harrell-"):
                assert f"{value:.3f}" in text, f"held-out {site} {key} {value:.3f} not in the rendered report"
    return text

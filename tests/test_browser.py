"""Headless-browser check: `dvc plots show`'s page and the near-duplicate sheet render in Debian
chromium with no JavaScript error. Skips when chromium (or, for the plots page, the vega scripts) is absent;
.ci/run installs both (chromium with apt-get, vega with npm into a user cache, see VEGA_DIR)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import REPO, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VEGA_DIR = Path(
    os.environ.get("T2I_VEGA_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "t2i-datasets" / "vega"
)
# dvc-render's page loads these three from a CDN; the test inlines local copies (no network in tests)
VEGA_SCRIPTS = ["vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js"]
# every error (a thrown exception, a rejected vegaEmbed promise) lands in an attribute --dump-dom shows
ERROR_HOOK = """<script>
function t2iError(message) {
  var root = document.documentElement;
  root.setAttribute("data-js-errors", (root.getAttribute("data-js-errors") || "") + message + ";");
}
window.addEventListener("error", function (e) { t2iError(e.message); });
window.addEventListener("unhandledrejection", function (e) { t2iError(String(e.reason)); });
</script>"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1200,900",
        "--virtual-time-budget=10000",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def check_renders(page: Path, tmp_path: Path) -> str:
    """Open `page`: no JS error (hook or console), a non-blank screenshot; returns the rendered DOM."""
    url = page.resolve().as_uri()
    dom = chromium(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = re.search(r'<html[^>]*data-js-errors="([^"]*)"', dom.stdout)
    assert errors is None, f"JavaScript errors: {errors.group(1)}"
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors, console_errors
    shot = tmp_path / f"{page.stem}.png"
    result = chromium(url, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as image:
        gray = image.convert("L")
        assert gray.size == (1200, 900)
        dark = sum(gray.histogram()[:200])  # pixels clearly not white
        assert dark > 0.01 * gray.width * gray.height, "screenshot is blank"
    return dom.stdout


def declared_plots() -> int:
    """One canvas per entry of dvc.yaml's top-level `plots:`."""
    import yaml

    return len(yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"])


def offline_html_template(path: Path) -> Path:
    """dvc-render's page layout with the vega scripts inlined (a `--html-template` for `dvc plots show`)."""
    files = [VEGA_DIR / "node_modules" / name for name in VEGA_SCRIPTS]
    if not all(f.is_file() for f in files):
        pytest.skip(
            f"vega scripts not in {VEGA_DIR} (npm install --prefix it vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2)"
        )
    scripts = "\n".join(f"<script>{f.read_text(encoding='utf-8')}</script>" for f in files)
    path.write_text(
        f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC Plot</title>\n'
        f"{ERROR_HOOK}\n{scripts}\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return path


def test_dvc_plots_show_page_renders_every_plot(built_repo, tmp_path):
    template = offline_html_template(tmp_path / "offline.html")
    out = tmp_path / "plots"
    run(["dvc", "plots", "show", "--html-template", str(template), "-o", str(out)], built_repo)
    dom = check_renders(out / "index.html", tmp_path)
    # vega-embed draws each plot into a canvas: one per declared plot
    assert dom.count('class="marks"') == declared_plots(), dom[:2000]
    assert "vega-embed" in dom


def test_dvc_plots_diff_page_renders(built_repo, tmp_path):
    template = offline_html_template(tmp_path / "offline.html")
    out = tmp_path / "diff"
    run(["dvc", "plots", "diff", "HEAD", "--html-template", str(template), "-o", str(out)], built_repo)
    dom = check_renders(out / "index.html", tmp_path)
    assert dom.count('class="marks"') == declared_plots()


def test_dedup_preview_renders(built_repo, tmp_path):
    page = tmp_path / "diffusiondb.preview.html"
    subprocess.run(
        [sys.executable, "-m", "scripts", "dedup-preview", "diffusiondb", "--output", str(page)],
        cwd=built_repo,
        check=True,
        capture_output=True,
    )
    html = page.read_text(encoding="utf-8")
    page.write_text(html.replace("<head>", "<head>\n" + ERROR_HOOK, 1), encoding="utf-8")
    dom = check_renders(page, tmp_path)
    assert dom.count('<table class="cluster"') >= 1
    assert re.search(r'<td class="jaccard">[01]\.\d{3}</td>', dom)


def test_the_check_catches_a_script_error_and_a_blank_page(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        f"<html><head>{ERROR_HOOK}</head><body><h1>plots</h1><script>vegaEmbed('#x', {{}});</script></body></html>",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="JavaScript errors: .*vegaEmbed is not defined"):
        check_renders(broken, tmp_path)
    blank = tmp_path / "blank.html"
    blank.write_text(f"<html><head>{ERROR_HOOK}</head><body></body></html>", encoding="utf-8")
    with pytest.raises(AssertionError, match="blank"):
        check_renders(blank, tmp_path)

"""Build the book from this checkout and read it the way a reader does: in a real
browser (Debian's Chromium driven by Playwright, no browser download), served from
localhost, with every request that would leave localhost refused and recorded.

Checks per page: math is typeset by the book's own MathJax (no TeX errors), every
image loads, no local resource is missing, and nothing is fetched from outside.

This build is also where the book's notebooks are executed under test (``-W``: a failing
cell fails the build); nbval does not run them a second time (pyproject.toml's testpaths).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = ["index.html", "book/intro.html", "book/ch01_embeddings.html", "book/ch02_word2vec.html",
         "book/ch03_optimizers.html", "book/ch04_bert.html", "book/glossary.html", "book/running_the_course.html"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    assert (ROOT / "book/_mathjax/mathjax/tex-chtml.js").exists(), "MathJax is missing: run `make mathjax` (make test does)"
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    # -W: a warning (broken reference, bad directive, failed cell) fails the build.
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--path-output", str(out), "--builder", "html", "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"jupyter-book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return out / "_build" / "html"


def test_every_notebook_ran_to_the_end(built_book):
    """The strict build executed every notebook of the book: no execution report was
    written (myst-nb writes one per failed notebook) and every chapter page has outputs."""
    reports = sorted(p.name for p in (built_book / "reports").glob("*")) if (built_book / "reports").exists() else []
    assert not reports, f"notebooks failed while the book was built: {reports}"
    notebooks = sorted((ROOT / "book").glob("*.ipynb"))
    assert len(notebooks) >= 4
    for nb in notebooks:
        page = built_book / "book" / f"{nb.stem}.html"
        assert page.is_file(), f"{nb.name} was not built"
        assert "cell_output" in page.read_text(encoding="utf-8"), f"{nb.name} has no outputs: was it executed?"


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: `apt-get install chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # The flags keep Chromium from phoning home: this machine has no network.
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
        ])
        yield b
        b.close()


def _open(browser, url: str):
    """Load a page; return (page, outside requests, failed local requests)."""
    page = browser.new_page()
    outside, failed = [], []

    def route(r):
        host = urlparse(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda req: failed.append(f"{req.url} ({req.failure})") if req.url not in outside else None)
    page.on("response", lambda resp: failed.append(f"{resp.url} (HTTP {resp.status})") if resp.status >= 400 else None)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, outside, failed


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_offline(browser, server, path):
    page, outside, failed = _open(browser, f"{server}/{path}")
    try:
        assert page.title(), f"{path} has no title"
        assert not outside, f"{path} requested resources outside localhost: {outside}"
        assert not failed, f"{path} has resources that failed to load: {failed}"
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.currentSrc || e.src, e.complete && e.naturalWidth > 0])")
        broken = [src for src, ok in images if not ok]
        assert not broken, f"{path} has images that did not load: {broken}"
    finally:
        page.close()


def test_chapter1_math_and_figures(browser, server):
    page, outside, failed = _open(browser, f"{server}/book/ch01_embeddings.html")
    try:
        page.wait_for_selector("mjx-container", timeout=30_000)
        # MathJax finished typesetting: it leaves no raw \( \) or $$ behind and no TeX error nodes.
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise !== undefined")
        page.evaluate("MathJax.startup.promise")
        n_math = page.locator("mjx-container").count()
        assert n_math >= 10, f"expected the chapter's equations to be typeset, found {n_math} MathJax elements"
        assert page.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"
        src = page.eval_on_selector("script[src*='tex-chtml']", "e => e.src")
        assert urlparse(src).hostname == "127.0.0.1", f"MathJax was not served by the book itself: {src}"
        n_img = page.locator("article img").count()
        assert n_img >= 3, f"expected the chapter's figures (PCA, heatmap, ...), found {n_img} images"
        assert not outside and not failed
    finally:
        page.close()

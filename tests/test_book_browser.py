"""Build the book from this checkout and read it the way a reader does: in a real
browser (Debian's Chromium driven by Playwright, no browser download), served from
localhost, with every request that would leave localhost refused and recorded.

Checks per page (every page of _toc.yml): math is typeset by the book's own MathJax (no TeX
errors), every image loads, no local resource is missing, and nothing is fetched from outside.
Chinese terms render with the book's own font (Noto Sans SC, `make fonts`): each character of
the glossary's terms is drawn as its own glyph, not as the box of a missing one.

This build is also where the book's notebooks are executed under test (``-W``: a failing
cell fails the build); nbval does not run them a second time (pyproject.toml's testpaths).
"""

from __future__ import annotations

import functools
import http.server
import io
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CJK_FONT = ROOT / "book/_fonts/fonts/files/noto-sans-sc-chinese-simplified-400-normal.woff2"


def _toc_pages() -> list[str]:
    """index.html and the page of every file in _toc.yml, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return ["index.html", *(f"{f}.html" for f in dict.fromkeys(files))]


PAGES = _toc_pages()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    assert (ROOT / "book/_mathjax/mathjax/tex-chtml.js").exists(), "MathJax is missing: run `make mathjax` (make test does)"
    assert CJK_FONT.exists(), "the Chinese font is missing: run `make fonts` (make test does)"
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    # -W: a warning (broken reference, bad directive, failed cell) fails the build.
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--path-output", str(out), "--builder", "html", "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=1500,
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


# In the page: each Chinese character of ``text`` drawn twice, in the font it inherits where
# ``anchor`` is in the page (row "page") and in the book's font named outright (row "book"), in
# fixed 64-px cells at whole pixels so that equal drawings give equal screenshots; also the
# Noto Sans SC faces the page loaded, and the font files it fetched.
_GLYPH_PROBE = """async ({anchor, text}) => {
  await document.fonts.ready;
  const walker = document.createTreeWalker(document.querySelector('article') || document.body,
                                           NodeFilter.SHOW_TEXT);
  let where = null;
  while (walker.nextNode()) {
    if (walker.currentNode.textContent.includes(anchor)) { where = walker.currentNode.parentElement; break; }
  }
  if (!where) return null;
  const host = document.createElement('div');
  host.id = 'glyph-probe';
  host.style.cssText = 'position:fixed;left:0;top:0;z-index:2147483647;white-space:nowrap;' +
                       'font-size:40px;line-height:64px;color:#000;background:#fff';
  for (const [row, family] of [['page', ''], ['book', 'font-family:"Noto Sans SC";']]) {
    const line = document.createElement('div');
    for (const c of text) {
      const s = document.createElement('span');
      s.textContent = c;
      s.className = row;
      s.style.cssText = 'display:inline-block;width:64px;height:64px;text-align:center;' + family;
      line.appendChild(s);
    }
    host.appendChild(line);
  }
  where.appendChild(host);
  await document.fonts.ready;
  const faces = [...document.fonts].filter(
    f => f.family.replace(/["']/g, '') === 'Noto Sans SC' && f.status === 'loaded').length;
  const files = performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('.woff'));
  return {faces, files};
}"""


def _ink(png: bytes) -> bytes:
    """The pixels of a black-on-white screenshot, cropped to what is drawn (b"" if nothing is)."""
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(png)).convert("L")
    box = ImageOps.invert(image).getbbox()
    return b"" if box is None else image.crop(box).tobytes() + repr(image.crop(box).size).encode()


def test_chinese_terms_render_with_the_books_font(browser, server):
    """Without a CJK font (this machine has none) Chromium draws every Chinese character as the
    same empty box. With the book's font each character is its own glyph, the one that the
    book's Noto Sans SC draws, and the font files came from the book's own /fonts/."""
    page, outside, failed = _open(browser, f"{server}/book/glossary.html")
    try:
        terms = re.findall(r"[\u4e00-\u9fff]{3,}", page.inner_text("article"))
        assert len(terms) >= 10, f"expected the glossary's Chinese terms, found {terms}"
        text = "".join(dict.fromkeys("".join(terms[:4])))  # a few terms, each character once
        probe = page.evaluate(_GLYPH_PROBE, {"anchor": terms[0], "text": text})
        assert probe is not None, f"{terms[0]!r} is in no text node of the glossary"

        def shots(row):  # each cell's ink, cropped: where the baseline falls depends on the stack
            cells = page.locator(f"#glyph-probe span.{row}")
            return [_ink(cells.nth(i).screenshot()) for i in range(len(text))]

        drawn, book = shots("page"), shots("book")
        alike = len(text) - len(set(drawn))
        assert alike == 0, (f"{alike} of {len(text)} different Chinese characters ({text}) were drawn alike: "
                            "boxes for missing glyphs (is the book's CJK font served and in the font stack?)")
        other = "".join(c for c, a, b in zip(text, drawn, book) if a != b)
        assert not other, f"not drawn in the book's Noto Sans SC: {other} (another font comes first?)"
        assert probe["faces"] >= 1, "no Noto Sans SC face was loaded"
        # What draws the page's own text: the term's table cell and the sidebar's links (where
        # Chromium kept boxes when the font came after system-ui in the stack).
        marked = page.evaluate("""() => {
          const han = /\\p{Script=Han}/u;
          const els = [...document.querySelectorAll('article td, nav.bd-links a')]
            .filter(e => han.test(e.textContent)).slice(0, 6);
          els.forEach((e, i) => e.setAttribute('data-cjk-probe', String(i)));
          return els.map(e => e.textContent.trim());
        }""")
        assert any("术语表" in m for m in marked), f"the sidebar's link to the glossary was not found: {marked}"
        cdp = page.context.new_cdp_session(page)
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        cdp.send("CSS.enable")
        for i, label in enumerate(marked):
            node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": f"[data-cjk-probe='{i}']"})["nodeId"]
            used = {f["familyName"] for f in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]}
            assert any(name.startswith("Noto Sans SC") for name in used), f"{label!r} is drawn with {used} only"
        assert any("/fonts/files/noto-sans-sc-" in u for u in probe["files"]), probe["files"]
        assert all(urlparse(u).hostname == "127.0.0.1" for u in probe["files"]), probe["files"]
        assert not outside and not failed, (outside, failed)
    finally:
        page.close()

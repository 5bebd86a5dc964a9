"""The built book, opened page by page in headless Chromium.

`make test` builds the book (`make book`) before pytest runs; this module
serves the HTML on localhost and checks what a reader would see: no console
errors, typeset math, loaded images and internal links that resolve.

The machine (and CI) may have no internet, so every request that does not go
to the local server is aborted, except MathJax's CDN address, which is served
from the npm package ``mathjax@3`` (``make mathjax`` installs it).

Environment variables:
    BNREF_BOOK_HTML     the HTML directory to test (default: _build/html).
    BNREF_MATHJAX_ES5   MathJax's es5 directory (default: .venv/npm/node_modules/mathjax/es5).
    BNREF_CHROMIUM      the Chromium executable (default: /usr/bin/chromium).
"""

import functools
import html.parser
import http.server
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = Path(os.environ.get("BNREF_BOOK_HTML", ROOT / "_build" / "html"))
MATHJAX_ES5 = Path(os.environ.get("BNREF_MATHJAX_ES5",
                                  ROOT / ".venv" / "npm" / "node_modules" / "mathjax" / "es5"))
CHROMIUM = Path(os.environ.get("BNREF_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# Sphinx's default MathJax 3 address; the route below serves it locally.
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/"

# The two errors that upstream Jupyter Book 1 logs, as
# recorded below, matched exactly: sphinx-thebe declares a global twice (an
# uncaught exception), and pydata-sphinx-theme logs an empty theme mode.
ALLOWED_CONSOLE_ERRORS = {
    "pageerror: Identifier 'THEBE_JS_URL' has already been declared",
    "Got invalid theme mode: . Resetting to auto.",
}
PAGE_TIMEOUT_MS = 20_000
# Jupyter Book writes index.html as a bare meta-refresh redirect to the root page.
_REDIRECT = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.I)


def _html_pages():
    skip = {"_static", "_sources", "_images"}
    return sorted(p for p in HTML_DIR.rglob("*.html")
                  if not skip.intersection(p.relative_to(HTML_DIR).parts))


class _IdCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def _anchors(path):
    parser = _IdCollector()
    parser.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML_DIR / "index.html").is_file():
        pytest.fail(f"no built book at {HTML_DIR} (index.html missing): run `make book` first "
                    f"(or point BNREF_BOOK_HTML at a built html directory)")
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser_context():
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` "
                    f"(Debian/Ubuntu; .ci/run does this) or set BNREF_CHROMIUM")
    if not (MATHJAX_ES5 / "tex-mml-chtml.js").is_file():
        pytest.skip(f"MathJax not found at {MATHJAX_ES5}: run `make mathjax` "
                    f"(npm install --prefix .venv/npm mathjax@3; needs npm) or set BNREF_MATHJAX_ES5")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Python playwright missing: pip install -r requirements.txt")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context()
        # Routes run newest first: the catch-all goes in first, MathJax second.
        context.route("**/*", _local_only)
        context.route(MATHJAX_CDN + "**", _serve_mathjax)
        yield context
        context.close()
        browser.close()


def _local_only(route):
    host = urlsplit(route.request.url).hostname
    if host in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


def _serve_mathjax(route):
    relative = urlsplit(route.request.url).path.split("/es5/", 1)[1]
    path = (MATHJAX_ES5 / unquote(relative)).resolve()
    if path.is_file() and MATHJAX_ES5.resolve() in path.parents:
        route.fulfill(path=str(path))
    else:
        route.abort()


_PAGE_REPORT_JS = r"""async () => {
    const images = Array.from(document.images);
    await Promise.all(images.map(img => img.complete ? null :
        new Promise(done => { img.onload = img.onerror = done; })));
    const clone = document.body.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, textarea').forEach(e => e.remove());
    return {
        mathElements: document.querySelectorAll('.math').length,
        mjx: document.querySelectorAll('mjx-container').length,
        mjxErrors: Array.from(document.querySelectorAll('mjx-merror'))
                        .map(e => e.getAttribute('data-mjx-error') || e.textContent),
        rawMath: ['$$', '\\(', '\\['].filter(d => clone.textContent.includes(d)),
        brokenImages: images.filter(img => !(img.complete && img.naturalWidth > 0))
                            .map(img => img.getAttribute('src')),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    };
}"""

_WAIT_FOR_MATHJAX_JS = """async () => {
    const deadline = Date.now() + 15000;
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
        if (Date.now() > deadline) return false;
        await new Promise(r => setTimeout(r, 50));
    }
    await MathJax.startup.promise;
    return true;
}"""


@pytest.fixture(scope="module")
def pages(server, browser_context):
    """Visit every page once; one report per page, keyed by its path under HTML_DIR."""
    reports = {}
    for path in _html_pages():
        rel = path.relative_to(HTML_DIR).as_posix()
        redirect = _REDIRECT.search(path.read_text(encoding="utf-8", errors="replace")[:2000])
        if redirect:
            # Opening it would just open its target, which the crawl visits anyway.
            reports[rel] = dict(url=server + rel, errors=[], mathjax_ready=None, mathElements=0,
                                mjx=0, mjxErrors=[], rawMath=[], brokenImages=[],
                                links=[redirect.group(1)])
            continue
        page = browser_context.new_page()
        errors = []
        page.on("console", lambda msg, errors=errors: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc, errors=errors: errors.append(f"pageerror: {exc.message}"))
        page.goto(server + rel, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        has_mathjax = page.evaluate("() => !!document.querySelector('script[src*=\"mathjax\"]')")
        mathjax_ready = page.evaluate(_WAIT_FOR_MATHJAX_JS) if has_mathjax else None
        report = page.evaluate(_PAGE_REPORT_JS)
        report.update(url=page.url, errors=errors, mathjax_ready=mathjax_ready)
        reports[rel] = report
        page.close()
    return reports


def test_every_page_was_opened(pages):
    """The crawl covered every HTML page of the build, the chapters included."""
    assert len(pages) == len(_html_pages()) > 0
    assert any(rel.startswith("book/") for rel in pages), f"no chapter pages among {sorted(pages)}"


def test_no_console_errors(pages):
    """No page logs a console error or throws, apart from the two known upstream errors."""
    bad = {rel: [e for e in r["errors"] if e not in ALLOWED_CONSOLE_ERRORS]
           for rel, r in pages.items()}
    bad = {rel: errs for rel, errs in bad.items() if errs}
    assert not bad, f"console errors: {bad}"


def test_math_is_typeset(pages):
    """Every page with math has MathJax output for each math element, no errors, no raw $$ or \\( \\[."""
    problems = {}
    for rel, r in pages.items():
        issues = []
        if r["mathElements"]:
            if not r["mathjax_ready"]:
                issues.append("MathJax never started")
            if r["mjx"] < r["mathElements"]:
                issues.append(f"{r['mjx']} mjx-container for {r['mathElements']} math elements")
        if r["mjxErrors"]:
            issues.append(f"MathJax errors: {r['mjxErrors']}")
        if r["rawMath"]:
            issues.append(f"untypeset math delimiters {r['rawMath']} in the page text")
        if issues:
            problems[rel] = issues
    assert not problems, f"math problems: {problems}"
    assert any(r["mjx"] for r in pages.values()), "no page typeset any math at all"


def test_images_load(pages):
    """Every <img> on every page loaded (complete, naturalWidth > 0)."""
    broken = {rel: r["brokenImages"] for rel, r in pages.items() if r["brokenImages"]}
    assert not broken, f"images that did not load: {broken}"


def _link_target(page_url, server, href):
    """The file (under HTML_DIR) and fragment an internal link points to, or None if external."""
    url = urljoin(page_url, href)
    if not url.startswith(server):
        return None
    parts = urlsplit(url)
    path = HTML_DIR / unquote(parts.path.lstrip("/"))
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


def test_internal_links_resolve(pages, server):
    """Every link to the book itself reaches an existing file, and an existing anchor in it."""
    broken = {}
    for rel, r in pages.items():
        for href in r["links"]:
            if href.startswith(("mailto:", "javascript:")) or href == "#":
                continue
            target = _link_target(r["url"], server, href)
            if target is None:
                continue
            path, fragment = target
            if not path.is_file():
                broken.setdefault(rel, []).append(f"{href} (no file)")
            elif fragment and path.suffix == ".html" and fragment not in _anchors(str(path)):
                broken.setdefault(rel, []).append(f"{href} (no anchor)")
    assert not broken, f"broken internal links: {broken}"

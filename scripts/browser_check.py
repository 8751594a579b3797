"""Open every page of the built book in headless Chromium, offline, and check what a reader sees.

Per page: it loads with no console error; every equation is typeset by MathJax (no raw TeX left, no
MathJax error, and no TeX source shown as text outside an equation); every image has loaded; no cell shows an error or a traceback; every internal link and
cross-reference resolves (target page exists, target anchor exists). Then the search page must find a
term taken from a chapter. A screenshot of each page goes to ``_build/screenshots/``.

The browser runs with every host name unresolvable except the local server, so a page that needs
the network (a CDN for MathJax, say) fails here. Debian's ``chromium`` and ``chromium-driver`` are
used (installed by ``make browser-deps``); no browser is downloaded.

Usage: ``python scripts/browser_check.py [_build]``; exits 1, naming the page and the reason, on any failure.
"""

from __future__ import annotations

import functools
import http.server
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SEARCH_TERM = "reshuffling"
CHECKS = ["loads without console errors", "math typeset (no raw TeX, no MathJax error)", "images loaded",
          "ledger tables fit the page in fixed layout",
          "no error or traceback in cell outputs", "internal links and anchors resolve", "screenshot saved"]


def toc_pages() -> list[str]:
    toc = yaml.safe_load(Path("_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        for ch in part.get("chapters", []):
            pages.append(ch["file"])
            pages += [s["file"] for s in ch.get("sections", [])]
    return pages


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def browser() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                # offline: nothing resolves but the local server
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


WAIT_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done("ok")).catch(e => done("error: " + e));
  } else if (!document.querySelector(".math")) {
    done("no math");
  } else if (Date.now() - start > 20000) {
    done("MathJax did not start within 20 s");
  } else { setTimeout(poll, 100); }
})();
"""

PAGE_FACTS = r"""
const math = Array.from(document.querySelectorAll("span.math, div.math"));
const raw = math.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 60));
const imgs = Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
const errors = Array.from(document.querySelectorAll(".output.traceback, .output.error, .cell_output .ansi-red-fg"))
  .map(e => e.textContent.slice(0, 120));
const text = document.body.innerText;
// TeX outside any equation: a display that the Markdown parser did not recognise leaves its source as text
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const texLeft = [];
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (n.parentElement.closest("pre, code, script, style, .math, mjx-container, .highlight, .cell_output")) continue;
  const m = n.textContent.match(/\\(frac|tfrac|sum|mathbb|mathrm|textstyle|eta|alpha|sigma|theta)\b|\$\$/);
  if (m) texLeft.push(n.textContent.slice(Math.max(0, m.index - 30), m.index + 40));
}
const links = Array.from(document.querySelectorAll("a[href]")).map(a => a.href);
// The ledger's tables have fixed column widths and must fit the page: none wider than its container, none left to
// the theme's automatic layout (which lets a long claim push the evidence out of sight).
const tables = Array.from(document.querySelectorAll("table.ledger-table")).filter(t => {
  const box = t.parentElement.getBoundingClientRect().width;
  return getComputedStyle(t).tableLayout !== "fixed" || t.getBoundingClientRect().width > box + 1;
}).map(t => t.querySelector("td") ? t.querySelector("td").textContent.slice(0, 40) : "(empty)");
return {math: math.length, raw: raw, texLeft: texLeft, merror: document.querySelectorAll("mjx-merror").length, badimgs: imgs,
        errors: errors, traceback: text.includes("Traceback (most recent call last)"), links: links, tables: tables,
        height: document.body.scrollHeight};
"""


@functools.lru_cache(maxsize=None)
def page_ids(url: str) -> frozenset[str] | None:
    try:
        with urllib.request.urlopen(url) as r:
            html = r.read().decode("utf-8", "replace")
    except Exception:
        return None
    return frozenset(re.findall(r'id="([^"]+)"', html))


def check_links(links: list[str], origin: str) -> list[str]:
    bad = []
    for href in sorted(set(links)):
        if not href.startswith(origin):
            continue  # external links are not followed (no network)
        url, _, anchor = href.partition("#")
        ids = page_ids(url)
        if ids is None:
            bad.append(f"broken link {href}")
        elif anchor and urllib.parse.unquote(anchor) not in ids:
            bad.append(f"missing anchor #{anchor} in {url}")
    return bad


def main(build: str = "_build") -> int:
    root = Path(build) / "html"
    shots = Path(build) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    server, port = serve(root)
    origin = f"http://127.0.0.1:{port}/"
    driver = browser()
    driver.set_script_timeout(30)
    failures: list[str] = []
    pages = toc_pages()
    try:
        for page in pages:
            url = origin + page + ".html"
            driver.get(url)
            mj = driver.execute_async_script(WAIT_MATHJAX)
            facts = driver.execute_script(PAGE_FACTS)
            problems = []
            logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            problems += [f"console error: {e['message'][:200]}" for e in logs]
            if mj.startswith("error") or mj.startswith("MathJax did not"):
                problems.append(f"MathJax: {mj}")
            if facts["raw"]:
                problems.append(f"{len(facts['raw'])} of {facts['math']} equations not typeset, e.g. {facts['raw'][0]!r}")
            if facts["texLeft"]:
                problems.append(f"TeX outside any equation, e.g. {facts['texLeft'][0]!r}")
            if facts["merror"]:
                problems.append(f"{facts['merror']} MathJax errors in equations")
            problems += [f"image did not load: {src}" for src in facts["badimgs"]]
            problems += [f"error output in a cell: {e!r}" for e in facts["errors"]]
            if facts["traceback"]:
                problems.append("a traceback is shown on the page")
            problems += [f"a ledger table is wider than the page or not in fixed layout (first row {t!r})"
                         for t in facts["tables"]]
            problems += check_links(facts["links"], origin)
            driver.set_window_size(1280, min(max(int(facts["height"]), 800), 16000))
            shot = shots / (page.replace("/", "__") + ".png")
            driver.save_screenshot(str(shot))
            driver.set_window_size(1280, 1000)
            status = "ok" if not problems else "FAIL"
            print(f"browser_check: {page}: {status} ({facts['math']} equations, {len(set(facts['links']))} links)")
            failures += [f"{page}: {p}" for p in problems]
        # the search page must find a word that appears in a chapter
        driver.get(origin + f"search.html?q={SEARCH_TERM}")
        hits = 0
        for _ in range(100):
            hits = driver.execute_script("return document.querySelectorAll('#search-results li, ul.search li').length")
            if hits:
                break
            time.sleep(0.2)
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        failures += [f"search: console error: {e['message'][:200]}" for e in logs]
        if not hits:
            failures.append(f"search: no result for {SEARCH_TERM!r}")
        driver.save_screenshot(str(shots / "search.png"))
        print(f"browser_check: search for {SEARCH_TERM!r}: {hits} results")
    finally:
        driver.quit()
        server.shutdown()
    print(f"browser_check: {len(pages)} pages, checks per page: {'; '.join(CHECKS)}; screenshots in {shots}")
    for f in failures:
        print("browser_check: FAIL", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

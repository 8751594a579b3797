"""The whole book as one PDF for printing, made offline from the built HTML by the Debian Chromium that the
browser test uses, then checked like the HTML.

Each page of ``_toc.yml`` is opened from a local server (nothing else resolves), its equations are typeset
by MathJax, the folded parts stay folded (code inputs marked "hide", solutions), and Chromium prints it
(A4, backgrounds on). The pages are joined in the book's order into ``<build>/pdf/book.pdf``, with one
bookmark per page. The check then reads the PDF back (pypdf):

* every page of the book is there: each page's title appears in the text of its part of the PDF;
* the figures are embedded: each part has at least as many images as its HTML page has figures;
* no raw TeX is left: no ``\\frac``, ``\\mathbb``, ``\\begin{`` or ``$$`` in the text.

Usage: ``python scripts/make_pdf.py [_build]``; exits 1, naming the page and the reason, on any failure.
"""

from __future__ import annotations

import base64
import io
import re
import unicodedata
import sys
from pathlib import Path

from pypdf import PdfReader, PdfWriter
from selenium.webdriver.common.print_page_options import PrintOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_check import WAIT_MATHJAX, browser, serve, toc_pages  # noqa: E402

RAW_TEX = re.compile(r"\\frac|\\mathbb|\\begin\{|\$\$|\\sum_|\\operatorname")

PAGE_INFO = """
const h1 = document.querySelector("main h1, article h1, h1");
const figures = document.querySelectorAll("main img, article img").length;
return {title: h1 ? h1.textContent.replace(/[#¶]/g, "").trim() : document.title, figures: figures};
"""


def words(text: str) -> str:
    """Letters and digits only, lower case: PDF text extraction splits and joins words in its own way, and
    returns typographic ligatures ("ﬁ" in "ﬁnite") as single characters, which NFKC turns back into letters."""
    return re.sub(r"[^0-9a-z]+", "", unicodedata.normalize("NFKC", text).lower())


def main(build: str = "_build") -> int:
    root = Path(build) / "html"
    out_dir = Path(build) / "pdf"
    out_dir.mkdir(parents=True, exist_ok=True)
    server, port = serve(root)
    origin = f"http://127.0.0.1:{port}/"
    driver = browser()
    driver.set_script_timeout(30)
    opts = PrintOptions()
    opts.background = True
    opts.page_width, opts.page_height = 21.0, 29.7  # A4, in cm
    writer, parts, failures = PdfWriter(), [], []
    try:
        for page in toc_pages():
            driver.get(origin + page + ".html")
            mj = driver.execute_async_script(WAIT_MATHJAX)
            if mj.startswith("error") or mj.startswith("MathJax did not"):
                failures.append(f"{page}: MathJax: {mj}")
            info = driver.execute_script(PAGE_INFO)
            pdf = PdfReader(io.BytesIO(base64.b64decode(driver.print_page(opts))))
            first = len(writer.pages)
            for p in pdf.pages:
                writer.add_page(p)
            writer.add_outline_item(info["title"], first)
            parts.append((page, info, pdf))
    finally:
        driver.quit()
        server.shutdown()
    path = out_dir / "book.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)

    # the check, on the file as written
    book = PdfReader(str(path))
    start = 0
    for page, info, pdf in parts:
        n = len(pdf.pages)
        text = "".join(p.extract_text() or "" for p in book.pages[start:start + n])
        images = sum(len(p.images) for p in book.pages[start:start + n])
        if words(info["title"])[:40] not in words(text):
            failures.append(f"{page}: its title {info['title']!r} is not in its part of the PDF")
        if images < info["figures"]:
            failures.append(f"{page}: {images} images embedded for {info['figures']} figures on the page")
        raw = RAW_TEX.search(text)
        if raw:
            failures.append(f"{page}: raw TeX in the PDF near {text[max(0, raw.start() - 30):raw.end() + 30]!r}")
        print(f"make_pdf: {page}: {n} pages, {images} images")
        start += n
    for f in failures:
        print("make_pdf:", f, file=sys.stderr)
    print(f"make_pdf: wrote {path} ({len(book.pages)} pages, {path.stat().st_size / 1e6:.1f} MB); "
          f"{len(parts)} book pages checked, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build"))

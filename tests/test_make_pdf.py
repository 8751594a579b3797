"""scripts/make_pdf.py: the title check survives what PDF text extraction does to words."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import make_pdf  # noqa: E402


def test_a_title_is_found_through_line_breaks_and_ligatures():
    title = "7. The limit itself: a theorem, a finite step, momentum"
    extracted = "7. The limit itself: a\ntheorem, a \ufb01nite step,\nmomentum\nContents"  # as pypdf returns it
    assert make_pdf.words(title)[:40] in make_pdf.words(extracted)
    # the failing variant: without NFKC the ligature "ﬁ" drops out and the title is not found
    plain = lambda t: re.sub(r"[^0-9a-z]+", "", t.lower())  # noqa: E731
    assert plain(title)[:40] not in plain(extracted)

"""Every chapter in _toc.yml has its section in the ledger appendix, and every ledger chapter is in the book."""

from pathlib import Path

import yaml

from sgdnoise import ledger

ROOT = Path(__file__).resolve().parents[1]


def test_every_ledger_chapter_is_rendered_in_the_appendix_and_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    appendix = (ROOT / "appendix" / "ledger.md").read_text()
    for chapter in {c.chapter for c in ledger.claims()}:
        assert chapter in toc, f"{chapter} has ledger rows but is not in _toc.yml"
        assert f'rows_with_links("{chapter.split("/")[-1]}")' in appendix, f"{chapter} has no section in appendix/ledger.md"
        assert (ROOT / f"{chapter}.md").exists()


def test_toc_files_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    for f in files:
        assert (ROOT / f"{f}.md").exists(), f


def test_every_exercise_is_listed_in_the_exercise_index():
    import re

    index = (ROOT / "appendix" / "exercises.md").read_text()
    for chapter in sorted((ROOT / "chapters").glob("*.md")):
        for label in re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", chapter.read_text()):
            assert f"{{ref}}`{label}`" in index, f"exercise {label} of {chapter.name} is missing from appendix/exercises.md"

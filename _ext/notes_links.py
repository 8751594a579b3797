"""Every "§x.y" in the book's text becomes a link to that section's row of the notes map
(``appendix/notes_map``), and every citation of an equation of the notes ("eq. (14)", "eqs. (12)–(23)",
"notes' (24)", a range "(55)–(60)") a link to that equation's row, so that a reader can see what a cited part of
the research notes is and how its claims fared. A section, or an "eq. (n)", that the notes do not have is a
warning (and so fails the build, which runs with ``-W``). Code, equations, headings and existing links are
left alone.
"""

import re

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

MAP_DOC = "appendix/notes_map"
# a section, "§1.8.5", or an equation: "eq. (14)", "eqs. (12)–(23)", "notes' (24)", or a bare range "(55)–(60)"
CITE = re.compile(r"§(?P<sec>\d+(?:\.\d+)*)"
                  r"|(?:eqs?\.\s|notes'\s)\((?P<eq>\d{1,2})\)(?:–\(\d{1,2}\))?"
                  r"|\((?P<lo>\d{1,2})\)–\(\d{1,2}\)")
SKIP = (nodes.literal, nodes.literal_block, nodes.math, nodes.math_block, nodes.reference, nodes.title, nodes.raw,
        nodes.FixedTextElement)
logger = logging.getLogger(__name__)


class NotesLinks(SphinxPostTransform):
    default_priority = 900
    formats = ("html",)

    def run(self, **kwargs):
        from sgdnoise.notes_map import anchor, equation_anchor, equation_numbers, numbers

        known, known_eq = set(numbers()), set(equation_numbers())
        here = self.env.docname
        target = self.app.builder.get_relative_uri(here, MAP_DOC)
        for text in list(self.document.findall(nodes.Text)):
            parent = text.parent
            if parent is None or any(isinstance(a, SKIP) for a in _ancestors(text)):
                continue
            value = text.astext()
            if "§" not in value and "(" not in value:
                continue
            pieces, pos = [], 0
            for m in CITE.finditer(value):
                if m.group("sec"):
                    number = m.group("sec")
                    if number not in known:
                        logger.warning(f"§{number} is not a section of the notes (known: {', '.join(sorted(known))})",
                                       location=parent)
                        continue
                    frag = anchor(number)
                else:
                    eq = int(m.group("eq") or m.group("lo"))
                    if eq not in known_eq:
                        if m.group("eq"):  # "eq. (n)" must name an equation of the notes
                            logger.warning(f"eq. ({eq}) is not an equation of the notes", location=parent)
                        continue  # a bare "(a)–(b)" that is not one is left alone
                    frag = equation_anchor(eq)
                pieces.append(nodes.Text(value[pos:m.start()]))
                uri = f"{target}#{frag}" if here != MAP_DOC else f"#{frag}"
                pieces.append(nodes.reference("", m.group(0), refuri=uri, classes=["notes-section"]))
                pos = m.end()
            if not pieces:
                continue
            pieces.append(nodes.Text(value[pos:]))
            parent.replace(text, pieces)


def _ancestors(node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def setup(app):
    app.add_post_transform(NotesLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

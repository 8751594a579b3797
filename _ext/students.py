"""The students' build (``make book-students``): every exercise's solution left out.

sphinx-exercise's ``hide_solutions`` drops the ``solution`` directive, but not the gated pair
``solution-start`` / ``solution-end`` that this book uses (so that a solution can hold code cells): the start
directive returns nothing, the end node is left behind with the content between them, and the HTML writer
fails on it. Here the start directive leaves a marker instead, and a transform that runs after
sphinx-exercise has checked the gated pairs, before it merges them, removes everything from the marker to its
``solution-end``, code cells included. Loaded only by the students' configuration.
"""

from docutils import nodes
from sphinx.transforms import SphinxTransform


class hidden_solution_start(nodes.Element):
    """Where a left-out solution began; removed with it before any writer sees it."""


def setup(app):
    app.setup_extension("sphinx_exercise")
    from sphinx_exercise.directive import SolutionStartDirective
    from sphinx_exercise.nodes import solution_end_node

    class HiddenSolutionStart(SolutionStartDirective):
        def run(self):
            super().run()  # registers the gated pair, which sphinx-exercise checks
            return [hidden_solution_start()]

    class DropHiddenSolutions(SphinxTransform):
        default_priority = 5  # after CheckGatedDirectives (1), before MergeGatedSolutions (10)

        def apply(self):
            for start in list(self.document.findall(hidden_solution_start)):
                parent = start.parent
                i = parent.index(start)
                ends = [k for k in range(i, len(parent.children)) if isinstance(parent.children[k], solution_end_node)]
                if not ends:
                    raise ValueError(f"{self.env.docname}: a solution-start has no solution-end at the same level")
                for child in parent.children[i:ends[0] + 1]:
                    parent.remove(child)

    app.add_node(hidden_solution_start)
    app.add_directive("solution-start", HiddenSolutionStart, override=True)
    app.add_transform(DropHiddenSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

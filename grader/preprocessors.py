"""nbgrader preprocessors the course adds to nbgrader's own pipeline.

Wired in by ``nbgrader_config.py``:

* :class:`InsertRepositoryURL` (``generate_assignment``) writes the course
  repository URL from ``_config.yml`` into the release notebooks.
* :class:`HideHiddenTests` (``generate_feedback``) keeps hidden test code
  out of the feedback students get back. nbgrader's default feedback shows
  the whole autograded cell, hidden tests included, and IPython tracebacks
  quote the failing line of a test.
"""

import re

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from grader.course import SERVICE_PLACEHOLDER, URL_PLACEHOLDER, check_service_url, repository_url

HIDDEN_BLOCK = re.compile(
    r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?",
    re.DOTALL | re.MULTILINE,
)


class InsertRepositoryURL(NbGraderPreprocessor):
    """Replace ``{{REPOSITORY_URL}}`` in every cell with the course repository URL,
    and ``{{CHECK_SERVICE_URL}}`` with the check service's (empty when there is none)."""

    url = Unicode(
        "", help="Repository URL; empty means repository.url from _config.yml."
    ).tag(config=True)
    service_url = Unicode(
        None, allow_none=True, help="Check service URL; None means check_service_url from _config.yml."
    ).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if URL_PLACEHOLDER in cell.source:
            cell.source = cell.source.replace(URL_PLACEHOLDER, self.url or repository_url())
        if SERVICE_PLACEHOLDER in cell.source:
            service = check_service_url() if self.service_url is None else self.service_url
            cell.source = cell.source.replace(SERVICE_PLACEHOLDER, service)
        return cell, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Remove hidden test code from feedback; keep each error's name and message.

    A failing hidden test still tells the student what went wrong (the
    assertion message is written for them), but not the code that checked it.
    """

    notice = Unicode(
        "# [hidden tests ran here; their code is not shown]\n"
    ).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or "### BEGIN HIDDEN TESTS" not in cell.source:
            return cell, resources
        cell.source = HIDDEN_BLOCK.sub(self.notice, cell.source)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                # A traceback quotes source lines, hidden ones included.
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


class DeduplicateIds(NbGraderPreprocessor):
    """Keep one cell per grade id (the last, as nbgrader does); earlier copies become plain cells.

    nbgrader 0.9.6's own DeduplicateIds leaves ``"nbgrader": {}`` on the
    copies, which its CheckCellMetadata then rejects, so one student who
    duplicated a graded cell failed the whole notebook. Here the copies lose
    the key entirely: they run as ordinary cells and score nothing, and the
    original cell is graded as usual.
    """

    def preprocess(self, nb, resources):
        seen = set()
        for cell in reversed(nb.cells):
            meta = cell.metadata.get("nbgrader", {})
            if not (meta.get("grade") or meta.get("solution") or meta.get("locked")):
                continue
            if meta.get("grade_id") in seen:
                self.log.warning("Cell with id '%s' exists multiple times; keeping the last", meta["grade_id"])
                del cell.metadata["nbgrader"]
                cell.metadata.pop("editable", None)
                cell.metadata.pop("deletable", None)
            else:
                seen.add(meta.get("grade_id"))
        return nb, resources

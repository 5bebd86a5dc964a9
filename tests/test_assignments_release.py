"""The committed release notebooks are exactly what nbgrader makes of solutions/."""

import json
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grader.course import ASSIGNMENTS, repository_url  # noqa: E402
from tools.regenerate_assignments import regenerate  # noqa: E402


def notebooks(root, assignment):
    return sorted((root / assignment).glob("*.ipynb"))


def cell_view(cell):
    """What a student sees and nbgrader relies on; volatile metadata left out."""
    meta = cell.get("metadata", {})
    return {
        "cell_type": cell["cell_type"],
        "source": "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"],
        "nbgrader": meta.get("nbgrader"),
        "editable": meta.get("editable"),
        "deletable": meta.get("deletable"),
        "outputs": cell.get("outputs"),
    }


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    return regenerate(tmp_path_factory.mktemp("release"))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_matches_regeneration(assignment, regenerated):
    committed = notebooks(REPO / "assignments", assignment)
    fresh = notebooks(regenerated, assignment)
    assert [p.name for p in committed] == [p.name for p in fresh], (
        "assignments/ and a fresh generate_assignment list different notebooks: "
        "run tools/regenerate_assignments.py"
    )
    for old, new in zip(committed, fresh):
        old_cells = json.loads(old.read_text())["cells"]
        new_cells = json.loads(new.read_text())["cells"]
        assert len(old_cells) == len(new_cells), f"{old.name}: cell count differs; run tools/regenerate_assignments.py"
        for i, (a, b) in enumerate(zip(old_cells, new_cells)):
            assert cell_view(a) == cell_view(b), (
                f"{old.name} cell {i} differs from regeneration; run tools/regenerate_assignments.py"
            )


@pytest.mark.parametrize("tree", ["solutions", "assignments"])
def test_notebooks_carry_no_outputs(tree):
    paths = sorted((REPO / tree).glob("*/*.ipynb"))
    assert len(paths) == len(ASSIGNMENTS)
    for path in paths:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path} cell {i} has outputs"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_hides_solutions_and_hidden_tests(assignment):
    solution = (REPO / "solutions" / assignment / f"{assignment}.ipynb").read_text()
    release = (REPO / "assignments" / assignment / f"{assignment}.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" in solution and "BEGIN SOLUTION" in solution
    for marker in ("BEGIN HIDDEN TESTS", "BEGIN SOLUTION", "grader.guards", "{{REPOSITORY_URL}}"):
        assert marker not in release, f"the release of {assignment} contains {marker!r}"
    # The install cell points at the one repository URL of the course.
    assert f"git+{repository_url()}" in release


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_points_table_matches_cell_metadata(assignment):
    """The header's table of points is what nbgrader will actually grade."""
    cells = json.loads((REPO / "solutions" / assignment / f"{assignment}.ipynb").read_text())["cells"]
    header = "".join(cells[0]["source"])
    table = dict(re.findall(r"\| `(\w+)` \| (\d+) \|", header))
    graded = {c["metadata"]["nbgrader"]["grade_id"]: str(c["metadata"]["nbgrader"]["points"])
              for c in cells if c["metadata"].get("nbgrader", {}).get("grade")}
    assert table == graded


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_book_page_links_follow_the_repository_url(assignment):
    """The assignment pages link to the release notebooks of the repository in _config.yml."""
    page = (REPO / "book" / "assignments" / f"{assignment}.md").read_text()
    url = repository_url()
    owner_repo = url.split("github.com/", 1)[1]
    release = f"assignments/{assignment}/{assignment}.ipynb"
    assert f"https://colab.research.google.com/github/{owner_repo}/blob/main/{release}" in page
    assert f"{url}/tree/main/assignments/{assignment}" in page
    assert f"<../../{release}>" in page and (REPO / release).is_file()
    for link in re.findall(r"https://github\.com/[^\s)]+", page):
        assert link.startswith(url + "/"), f"{link} does not point into {url}"

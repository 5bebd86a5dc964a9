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
    for marker in ("BEGIN HIDDEN TESTS", "BEGIN SOLUTION", "grader.checks", "{{REPOSITORY_URL}}"):
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


def _meta(cell):
    return cell["metadata"].get("nbgrader", {})


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hand_graded_cells_have_prompt_rubric_and_model_answer(assignment):
    """Each hand-graded answer has its prompt in a locked cell above it; solutions/
    holds a model answer and a rubric in the answer cell, which the release replaces
    by the bare stub (so neither reaches students, in the release or in feedback)."""
    solution = json.loads((REPO / "solutions" / assignment / f"{assignment}.ipynb").read_text())["cells"]
    release = json.loads((REPO / "assignments" / assignment / f"{assignment}.ipynb").read_text())["cells"]
    by_id = {_meta(c).get("grade_id"): c for c in release if _meta(c)}
    answers = [i for i, c in enumerate(solution) if _meta(c).get("grade") and _meta(c).get("solution")]
    for i in answers:
        cell, prompt = solution[i], solution[i - 1]
        gid = _meta(cell)["grade_id"]
        assert cell["cell_type"] == "markdown", f"{gid}: a hand-graded answer is a markdown cell"
        assert prompt["cell_type"] == "markdown" and _meta(prompt).get("locked") and not _meta(prompt).get("solution"), \
            f"{gid}: the cell above must be a locked prompt"
        assert "graded by hand" in _source(prompt) and len(_source(prompt).split()) > 15, f"{gid}: the prompt is missing"
        text = _source(cell)
        for part in ("**Model answer.**", "**Rubric"):
            assert part in text and len(text.split(part, 1)[1].split()) > 20, f"{gid}: no {part} in solutions/"
        assert f"({_meta(cell)['points']} points)" in text, f"{gid}: the rubric must name the cell's points"
        assert _source(by_id[gid]).strip() == "YOUR ANSWER HERE", f"{gid}: the release answer cell must hold only the stub"
        assert _source(by_id[_meta(prompt)["grade_id"]]) == _source(prompt), f"{gid}: the release must show the prompt"
    assert answers or assignment == "a3_triton_batchnorm", f"{assignment} has no hand-graded question"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_answer_cells_hold_only_stubs(assignment):
    """Every answer cell of the release is its stub: the solution's text outside the
    BEGIN/END SOLUTION block (signatures), with the block replaced by the code stub."""
    release = json.loads((REPO / "assignments" / assignment / f"{assignment}.ipynb").read_text())["cells"]
    solution = json.loads((REPO / "solutions" / assignment / f"{assignment}.ipynb").read_text())["cells"]
    sol_by_id = {_meta(c)["grade_id"]: c for c in solution if _meta(c)}
    block = re.compile(r"^([ \t]*)### BEGIN SOLUTION.*?### END SOLUTION[^\n]*", re.DOTALL | re.MULTILINE)
    for cell in release:
        if not _meta(cell).get("solution") or cell["cell_type"] != "code":
            continue
        gid = _meta(cell)["grade_id"]
        expected = block.sub(lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()",
                             _source(sol_by_id[gid]))
        assert _source(cell) == expected, f"{gid}: the release answer cell holds more than the stub"

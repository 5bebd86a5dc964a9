"""The grader's own pieces: the feedback filter, the grading seed, and the
checks' cases (fresh per seed, the same for the same seed)."""

import json
import pathlib
import sys

import nbformat
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from grader import checks, hidden  # noqa: E402
from grader.preprocessors import HideHiddenTests  # noqa: E402


def test_feedback_filter_drops_hidden_code_and_tracebacks():
    cell = nbformat.v4.new_code_cell(
        "visible()\n### BEGIN HIDDEN TESTS\nassert secret_check()\n### END HIDDEN TESTS\n")
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="dx is wrong",
                                           traceback=["  assert secret_check()", "AssertionError: dx is wrong"])]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb, _ = HideHiddenTests().preprocess(nb, {})
    text = nbformat.writes(nb)
    assert "secret_check" not in text and "visible()" in text and "dx is wrong" in text


def test_grading_seed_fresh_per_grading_and_fixed_by_the_environment(monkeypatch):
    monkeypatch.delenv("GRADER_SEED", raising=False)
    assert hidden.ensure_grading_seed({}) != hidden.ensure_grading_seed({})  # 48 random bits each
    assert hidden.ensure_grading_seed({"GRADER_SEED": "17"}) == "17"
    monkeypatch.setenv("GRADER_SEED", "8319427514")
    assert hidden.grading_seed() == 8319427514
    assert hidden.part_seed("bn_backward") != hidden.part_seed("bn_forward_train")
    monkeypatch.setenv("GRADER_SEED", "abc")
    with pytest.raises(ValueError, match="GRADER_SEED must be a non-negative integer, got 'abc'"):
        hidden.grading_seed()


def _arrays(requests):
    return json.dumps(requests, default=lambda a: np.asarray(a).tolist())


@pytest.mark.parametrize("assignment, part", sorted(checks.load()))
def test_every_check_draws_the_same_cases_for_a_seed_and_new_ones_for_another(assignment, part):
    first, _ = checks.draw(assignment, part, seed=11)
    again, _ = checks.draw(assignment, part, seed=11)
    assert _arrays(first) == _arrays(again)
    # A multiple-choice question has nothing to draw; the bandwidth part times fixed shapes.
    if not part.startswith("q_") and part != "bn_bandwidth":
        other, _ = checks.draw(assignment, part, seed=12)
        assert _arrays(first) != _arrays(other)


def test_every_graded_cell_of_every_assignment_has_a_check():
    root = pathlib.Path(__file__).resolve().parent.parent
    for path in sorted((root / "solutions").glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        graded = {c.metadata.nbgrader["grade_id"] for c in nb.cells if c.cell_type == "code"
                  and c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.get("solution")}
        assert graded and all(checks.get(path.parent.name, part) for part in graded), path

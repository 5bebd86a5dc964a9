"""tools/run_notebook_plain.py: notebooks without Jupyter (for the GPU machine).

Oracles: the A3 solution must pass every cell and the released notebook must
fail exactly its graded test cells (the stubs raise NotImplementedError); a
hand-made notebook checks magics, shared state and error reporting.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "run_notebook_plain.py"
A3 = "a3_triton_batchnorm/a3_triton_batchnorm.ipynb"


def run_tool(notebook):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(TOOL), str(notebook)], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=env)


def test_a3_solution_passes_and_release_fails_its_tests():
    import torch

    import nbformat

    solved = run_tool(REPO / "solutions" / A3)
    nb = nbformat.read(REPO / "solutions" / A3, as_version=4)
    cells = sum(1 for c in nb.cells if c.cell_type == "code")
    if torch.cuda.is_available():
        assert solved.returncode == 0, solved.stdout[-3000:]
        assert f"{cells} of {cells} code cells ran without error" in solved.stdout
    else:  # the bandwidth part is not awarded without a GPU, and says so
        assert solved.returncode == 1, solved.stdout[-3000:]
        assert f"{cells - 1} of {cells} code cells ran without error" in solved.stdout
        failed = [line for line in solved.stdout.splitlines() if "FAILED" in line]
        assert len(failed) == 1 and "(bn_bandwidth)" in failed[0] and "not graded here" in failed[0], failed
    released = run_tool(REPO / "assignments" / A3)
    assert released.returncode == 1
    failed = [line for line in released.stdout.splitlines() if "FAILED" in line]
    # Without a GPU the release's bandwidth cell only says that it measured nothing.
    assert [line.split("(")[1].split(")")[0] for line in failed] == [
        "bn_stats", "bn_forward", "bn_backward"] + (["bn_bandwidth"] if torch.cuda.is_available() else [])
    assert all("NotImplementedError" in line for line in failed)


def test_magics_state_and_errors(tmp_path):
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# title"},
        {"cell_type": "code", "metadata": {}, "source": ["%matplotlib inline\n", "a = 2\n"]},
        {"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "boom"}},
         "source": "raise KeyError('lost')"},
        {"cell_type": "code", "metadata": {}, "source": "print('a is', a * 21)"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    out = run_tool(path)
    assert out.returncode == 1
    assert "[cell 1] skipped IPython line: %matplotlib inline" in out.stdout
    assert "[cell 2 (boom)] FAILED KeyError: 'lost'" in out.stdout
    assert "a is 42" in out.stdout  # later cells still run, with the earlier state
    assert "2 of 3 code cells ran without error" in out.stdout
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="is not a Jupyter notebook"):
        sys.path.insert(0, str(REPO / "tools"))
        try:
            import run_notebook_plain
        finally:
            sys.path.pop(0)
        run_notebook_plain.code_cells(path)
    missing = run_tool(tmp_path / "nope.ipynb")
    assert missing.returncode != 0 and "must be an existing .ipynb file" in missing.stderr

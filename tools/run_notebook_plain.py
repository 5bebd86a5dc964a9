"""Run a notebook's code cells in one Python process, without Jupyter.

For machines that have Python, torch and triton but no Jupyter or nbgrader
(the course's GPU machine, for one): it runs an nbgrader source notebook with
its hidden tests, for example to time Assignment 3's solution against its
bandwidth test on a GPU::

    PYTHONPATH=. python3 tools/run_notebook_plain.py solutions/a3_triton_batchnorm/a3_triton_batchnorm.ipynb

Cells run in order in one namespace, as in a kernel whose working directory
is the current one (it goes first on ``sys.path``, as IPython puts it).
IPython-only lines (``%magic``, ``!shell``) are skipped and reported. A cell
that raises is reported with its nbgrader ``grade_id`` and the error, and
the run goes on with the next cell, as nbgrader's autograder does; the exit
status is 1 if any cell failed. This is not a grader: it awards no points
and has no sandbox.
"""

import argparse
import json
import os
import sys
import time
import traceback


def code_cells(path):
    """(index, grade_id or None, source) of each code cell of the notebook at ``path``."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"{path} is not a Jupyter notebook (no 'cells'), got {type(nb).__name__}")
    cells = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        cells.append((i, grade_id, source))
    return cells


def strip_magics(source):
    """The source without IPython-only lines; returns (source, skipped lines)."""
    kept, skipped = [], []
    for line in source.splitlines():
        if line.lstrip().startswith(("%", "!")):
            skipped.append(line.strip())
            kept.append("")  # keep line numbers for tracebacks
        else:
            kept.append(line)
    return "\n".join(kept), skipped


def run(path, out=sys.stdout):
    """Run every code cell; returns a list of (index, grade_id, error or None, seconds)."""
    sys.path.insert(0, os.getcwd())
    namespace = {"__name__": "__main__"}
    results = []
    for index, grade_id, source in code_cells(path):
        source, skipped = strip_magics(source)
        label = f"cell {index}" + (f" ({grade_id})" if grade_id else "")
        for line in skipped:
            print(f"[{label}] skipped IPython line: {line}", file=out)
        start = time.perf_counter()
        error = None
        try:
            exec(compile(source, f"<{label}>", "exec"), namespace)
        except Exception as e:  # report and go on, like the autograder
            error = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=out)
        seconds = time.perf_counter() - start
        print(f"[{label}] {'FAILED ' + error if error else 'ok'} ({seconds:.1f} s)", file=out,
              flush=True)
        results.append((index, grade_id, error, seconds))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", help="path of the .ipynb to run")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.notebook):
        sys.exit(f"notebook must be an existing .ipynb file, got {args.notebook!r}")
    results = run(args.notebook)
    failed = [r for r in results if r[2]]
    print(f"{len(results) - len(failed)} of {len(results)} code cells ran without error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers of the tests that drive nbgrader's own commands."""

import copy
import os
import pathlib
import re
import shutil
import subprocess
import sys

import nbformat

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[^\n]*\n", re.MULTILINE)


def course_env(**extra):
    """The environment nbgrader needs: the venv's bin/ (alembic, jupyter) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def nbgrader(*args, cwd, env=None, check=True, timeout=900):
    """Run ``nbgrader ARGS`` in ``cwd``; with ``check``, fail on a non-zero status."""
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=env or course_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"nbgrader {' '.join(args)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-12000:]}")
    return done


def find_cell(nb, grade_id):
    matches = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(matches) == 1, f"expected one cell {grade_id!r}, found {len(matches)}"
    return matches[0]


def completed(release, solution):
    """The release notebook with every answer cell filled in from the solution, as a student would."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            source = find_cell(solution, meta["grade_id"]).source
            cell.source = MARKER.sub("", source) if cell.cell_type == "code" else "My answer, in prose."
    return nb


def mutate(nb, changes):
    """Apply ``[(grade_id, old, new), ...]``: replace text, set a cell (old None),
    delete it (both None) or duplicate it (old "duplicate")."""
    for grade_id, old, new in changes:
        cell = find_cell(nb, grade_id)
        if old is None and new is None:
            nb.cells.remove(cell)
        elif old is None:
            cell.source = new
        elif old == "duplicate":
            duplicate = copy.deepcopy(cell)
            duplicate["id"] = f"{cell.get('id', 'cell')}-copy"  # as Jupyter's copy-paste does
            nb.cells.insert(nb.cells.index(cell) + 1, duplicate)
        else:
            assert cell.source.count(old) == 1, f"{old!r} is not exactly once in {grade_id}"
            cell.source = cell.source.replace(old, new)
    return nb


def submission(assignment, changes):
    """The release notebook of ``assignment``, completed from solutions/ and changed;
    ``changes=None`` leaves the release untouched."""
    name = f"{assignment}.ipynb"
    release = nbformat.read(REPO / "assignments" / assignment / name, as_version=4)
    if changes is None:
        return release
    solution = nbformat.read(REPO / "solutions" / assignment / name, as_version=4)
    return mutate(completed(release, solution), changes)


def copy_tracked_files(target):
    """What a fresh clone of the working tree holds: tracked and new, not ignored, files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
    return target


def make_course(root, **config):
    """A course directory under ``root`` with the repository's config and solutions/, and a
    private exchange; ``config`` sets more ``c.<Class>.<trait>`` lines, e.g.
    ``Execute__timeout=20``. Returns ``dict(root, dir, exchange, env)``."""
    course_dir, exchange = root / "course", root / "exchange"
    course_dir.mkdir()
    exchange.mkdir()
    shutil.copytree(REPO / "solutions", course_dir / "solutions")
    lines = ["c = get_config()",
             f"load_subconfig({str(REPO / 'nbgrader_config.py')!r})",
             f"c.CourseDirectory.root = {str(course_dir)!r}",
             f"c.Exchange.root = {str(exchange)!r}"]
    lines += [f"c.{key.replace('__', '.')} = {value!r}" for key, value in config.items()]
    (course_dir / "nbgrader_config.py").write_text("\n".join(lines) + "\n")
    # No instructor config leaks in; small notebooks grade fastest on one thread each.
    env = course_env(JUPYTER_CONFIG_DIR=str(root / "jupyter-config"), OMP_NUM_THREADS="1")
    return dict(root=root, dir=course_dir, exchange=exchange, env=env)

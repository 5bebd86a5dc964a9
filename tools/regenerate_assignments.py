"""Regenerate the release notebooks in assignments/ from solutions/.

What it does: runs nbgrader's own ``generate_assignment --force`` with the
course config in a scratch course directory (a temporary folder with a copy
of ``solutions/``), then replaces ``assignments/<assignment>/`` (or
``--out``) with the result. Run it after every change to ``solutions/`` or to
``repository.url`` in ``_config.yml``; ``tests/test_assignments_release.py``
fails until you do.

What it does not do: it writes nothing to your course's ``gradebook.db``
(the scratch gradebook is deleted), so it does not prepare grading. Before
``nbgrader autograde``, run ``nbgrader generate_assignment <assignment> --force``
in the course directory: that records the assignment and its test cells in
the gradebook (see the README's "For instructors").

    .venv/bin/python tools/regenerate_assignments.py [--out DIR] [ASSIGNMENT ...]
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grader.course import ASSIGNMENTS  # noqa: E402


def nbgrader_env():
    """The environment nbgrader needs: the venv's bin/ (alembic, jupyter) first on PATH."""
    env = dict(os.environ)
    bin_dir = str(pathlib.Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def regenerate(out_dir, assignments=ASSIGNMENTS):
    """Generate each assignment's release notebooks into ``out_dir/<assignment>/``."""
    out_dir = pathlib.Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="regenerate-") as tmp:
        root = pathlib.Path(tmp)
        shutil.copytree(REPO / "solutions", root / "solutions")
        for assignment in assignments:
            cmd = [str(pathlib.Path(sys.executable).parent / "nbgrader"), "generate_assignment",
                   assignment, "--force", f"--CourseDirectory.root={root}"]
            # cwd=REPO so that nbgrader reads the course's nbgrader_config.py.
            done = subprocess.run(cmd, cwd=REPO, env=nbgrader_env(), capture_output=True, text=True)
            produced = root / "assignments" / assignment
            if done.returncode != 0 or not produced.is_dir():
                raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{done.stdout}{done.stderr}")
            target = out_dir / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(produced, target)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", default=list(ASSIGNMENTS))
    parser.add_argument("--out", default=str(REPO / "assignments"))
    args = parser.parse_args(argv)
    unknown = set(args.assignments) - set(ASSIGNMENTS)
    if unknown:
        parser.error(f"assignments must be among {list(ASSIGNMENTS)}, got {sorted(unknown)}")
    regenerate(args.out, args.assignments)
    print(f"regenerated {', '.join(args.assignments)} into {args.out}")


if __name__ == "__main__":
    main()

"""What the grading sandbox costs an honest submission (a benchmark, not a test).

Builds a temporary course from the repository's ``nbgrader_config.py`` plus
``grader.sandbox.configure(c)``, submits each assignment's full solution as
one student, then autogrades it repeatedly with the sandbox on and off
(``NBGRADER_SANDBOX=off``), alternating so that load on the machine hits both
alike. Prints the median wall time of ``nbgrader autograde`` per submission,
and checks that both modes give the same scores.

    .venv/bin/python benchmarks/sandbox_bench.py [--repeats 3] [assignment ...]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader.course import COURSE_ID  # noqa: E402

BIN = Path(sys.executable).parent


def nbgrader(*args, cwd, sandbox=True):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}",
               NBGRADER_SANDBOX="on" if sandbox else "off")
    start = time.monotonic()
    result = subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - start


def scores(course, assignment):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        return gb.find_submission(assignment, "honest").score


def setup(tmp, assignments):
    course, exchange = tmp / "course", tmp / "exchange"
    shutil.copytree(REPO / "solutions", course / "solutions")
    exchange.mkdir()
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"load_subconfig({str(REPO / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.Exchange.root = {str(exchange)!r}\n"
        "import grader.sandbox\n"
        "grader.sandbox.configure(c)\n")
    student = tmp / "student"
    student.mkdir()
    for assignment in assignments:
        nbgrader("generate_assignment", assignment, "--force", cwd=course)
        nbgrader("release_assignment", assignment, "--force", cwd=course)
        nbgrader("fetch_assignment", assignment, f"--Exchange.root={exchange}",
                 f"--course={COURSE_ID}", cwd=student)
        for nb in (course / "solutions" / assignment).glob("*.ipynb"):
            shutil.copy(nb, student / assignment / nb.name)  # the full solution
        nbgrader("submit", assignment, "--student=honest", f"--Exchange.root={exchange}",
                 f"--course={COURSE_ID}", cwd=student)
        nbgrader("collect", assignment, cwd=course)
    return course


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*",
                        default=sorted(p.name for p in (REPO / "solutions").iterdir() if p.is_dir()))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        course = setup(Path(tmp), args.assignments)
        for assignment in args.assignments:
            times, got = {True: [], False: []}, {}
            for _ in range(args.repeats):
                for sandbox in (True, False):
                    times[sandbox].append(nbgrader("autograde", assignment, "--force",
                                                   cwd=course, sandbox=sandbox))
                    got[sandbox] = scores(course, assignment)
            on, off = statistics.median(times[True]), statistics.median(times[False])
            print(f"{assignment}: sandbox {on:.1f} s, no sandbox {off:.1f} s, "
                  f"overhead {on - off:+.1f} s per submission (medians of {args.repeats}); "
                  f"score {got[True]} vs {got[False]}")
            if got[True] != got[False]:
                raise SystemExit(f"{assignment}: the sandbox changed the score")


if __name__ == "__main__":
    main()

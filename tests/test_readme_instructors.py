"""The README's "For instructors" commands work as written, on a fresh clone.

The block is read from README.md itself and run by bash in a copy of the
repository's files (what a clone holds: ``assignments/`` already committed,
no gradebook), with one student's fetch, answers and submit in place of its "students:"
comment line. The gradebook must then hold the
assignment and the student's autograded score, and ``grades.csv`` must list it.
"""

import csv
import pathlib
import re
import subprocess
import sys

import nbformat

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from _nbgrader import copy_tracked_files, course_env, submission  # noqa: E402
from grader.course import COURSE_ID  # noqa: E402

ASSIGNMENT = "a1_batchnorm_numpy"


def instructor_block():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## For instructors", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    return block


def run_bash(script, cwd, env):
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"the README block failed:\n{script}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return done


def test_readme_instructor_block_runs_verbatim_on_a_fresh_clone(tmp_path):
    block = instructor_block()
    lines = block.splitlines(keepends=True)
    (cut,) = [i for i, line in enumerate(lines) if line.startswith("# students:")]
    before, after = "".join(lines[:cut]), "".join(lines[cut + 1:])
    assert "generate_assignment a1_batchnorm_numpy --force" in before and "autograde" in after

    clone = copy_tracked_files(tmp_path / "clone")
    assert (clone / "assignments" / ASSIGNMENT).is_dir() and not (clone / "gradebook.db").exists()
    # In place of the students' comment line, in the same shell: a student fetches
    # the release from the exchange the block made, answers and submits.
    student_home = tmp_path / "student"
    student_home.mkdir()
    answered = tmp_path / "answered.ipynb"
    nbformat.write(submission(ASSIGNMENT, []), answered)
    flags = f'--Exchange.root="$EXCHANGE" --course={COURSE_ID}'
    student = (f'(cd {student_home} && nbgrader fetch_assignment {ASSIGNMENT} {flags} '
               f'&& cp {answered} {ASSIGNMENT}/{ASSIGNMENT}.ipynb '
               f'&& nbgrader submit {ASSIGNMENT} --student=alice {flags})\n')
    env = course_env(JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter"), OMP_NUM_THREADS="1", HOME=str(tmp_path))
    run_bash(before + student + after, clone, env)

    with open(clone / "grades.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["student_id"] == "alice" and r["assignment"] == ASSIGNMENT]
    assert len(rows) == 1, rows
    # Every automatic point; the two hand-graded ones are not graded yet.
    assert float(rows[0]["raw_score"]) == 24.0 and float(rows[0]["max_score"]) == 26.0, rows[0]
    assert (clone / "feedback" / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.html").is_file()
    assert (tmp_path / "exchange").is_dir(), "the block's exchange is the folder next to the clone"

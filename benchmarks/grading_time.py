"""Autograde time of a correct submission: this grader against an earlier one, side by side.

For each assignment, the solution notebook (the release filled in with the
solution cells) is put in ``submitted/`` of two course folders, one per
grader: the working tree's, and a baseline commit's (checked out in a
temporary git worktree; both use this virtual environment). Then
``nbgrader autograde`` runs on each, alternating, ``--repeat`` times, and the
medians and their ratio are reported. Sandbox on, as in a real course.

    .venv/bin/python benchmarks/grading_time.py [--baseline c760a02] [--repeat 3]

Writes benchmarks/results/cpu/grading_time.json.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

import nbformat  # noqa: E402

from _nbgrader import completed, course_env, nbgrader  # noqa: E402

ASSIGNMENTS = ("a1_batchnorm_numpy", "a2_test_time_inference", "a3_triton_batchnorm")


def course(tree, root):
    course_dir = root / "course"
    course_dir.mkdir(parents=True)
    shutil.copytree(tree / "solutions", course_dir / "solutions")
    (course_dir / "nbgrader_config.py").write_text(
        f"c = get_config()\nload_subconfig({str(tree / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(course_dir)!r}\n")
    env = course_env(JUPYTER_CONFIG_DIR=str(root / "jupyter-config"), OMP_NUM_THREADS="1")
    for assignment in ASSIGNMENTS:
        name = f"{assignment}.ipynb"
        release = nbformat.read(tree / "assignments" / assignment / name, as_version=4)
        solution = nbformat.read(tree / "solutions" / assignment / name, as_version=4)
        target = course_dir / "submitted" / "student" / assignment
        target.mkdir(parents=True)
        nbformat.write(completed(release, solution), target / name)
        nbgrader("generate_assignment", assignment, "--force", cwd=course_dir, env=env)
    return course_dir, env


def autograde_seconds(course_dir, env, assignment):
    start = time.perf_counter()
    nbgrader("autograde", assignment, "--student=student", "--force", cwd=course_dir, env=env)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="c760a02")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu" / "grading_time.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        baseline_tree = tmp / "baseline-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline_tree), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            graders = {"baseline": course(baseline_tree, tmp / "baseline"), "current": course(ROOT, tmp / "current")}
            times = {name: {a: [] for a in ASSIGNMENTS} for name in graders}
            for _ in range(args.repeat):
                for assignment in ASSIGNMENTS:
                    for name, (course_dir, env) in graders.items():
                        times[name][assignment].append(autograde_seconds(course_dir, env, assignment))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_tree)], cwd=ROOT)
    result = {"baseline": args.baseline, "repeat": args.repeat, "cores": os.cpu_count(), "assignments": {}}
    for assignment in ASSIGNMENTS:
        base = statistics.median(times["baseline"][assignment])
        cur = statistics.median(times["current"][assignment])
        result["assignments"][assignment] = {"baseline_s": round(base, 1), "current_s": round(cur, 1),
                                             "ratio": round(cur / base, 2)}
    print(json.dumps(result, indent=1))
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

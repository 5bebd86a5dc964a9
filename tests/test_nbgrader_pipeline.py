"""The instructor pipeline end to end, with nbgrader's own commands and gradebook.

In a temporary course directory: generate_assignment -> release_assignment to
a temporary exchange -> fetch_assignment -> submit as several students
(``--student``) -> collect -> autograde (all students of an assignment in one
call) -> generate_feedback. Every submission is built from the fetched release
notebook with the solution code filled in, then changed in one specific way;
each test asserts every autograded cell's score from the gradebook.

The course config (nbgrader_config.py) is loaded as is; the test changes only
the paths and shortens the per-cell timeout from 60 s to 10 s so that the
submission that never returns costs less time.
"""

import concurrent.futures
import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grader.course import COURSE_ID  # noqa: E402

CELL_TIMEOUT = 10
NBGRADER = str(pathlib.Path(sys.executable).parent / "nbgrader")
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[^\n]*\n", re.MULTILINE)

# student -> ([(cell grade_id, old text, new text), ...], {graded parts that must score 0})
A1 = "a1_batchnorm_numpy"
A1_STUDENTS = {
    "full_solution": ([], set()),
    "unbiased_var": ([("bn_forward_code", "var = (xmu ** 2).mean(axis=0)", "var = (xmu ** 2).sum(axis=0) / (N - 1)")],
                     {"bn_forward_train"}),
    "eps_outside_sqrt": ([("bn_forward_code", "std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps")],
                         {"bn_forward_train"}),
    "stats_wrong_axis": ([("bn_forward_code", "mean = x.mean(axis=0)", "mean = x.mean(axis=1, keepdims=True)")],
                         {"bn_forward_train"}),
    "momentum_convention": ([("bn_forward_code", "momentum * running_mean + (1 - momentum) * mean",
                              "(1 - momentum) * running_mean + momentum * mean"),
                             ("bn_forward_code", "momentum * running_var + (1 - momentum) * var",
                              "(1 - momentum) * running_var + momentum * var")],
                            {"bn_forward_train"}),
    "running_updated_in_test": ([("bn_forward_code", "        x_hat = (x - running_mean) / np.sqrt(running_var + eps)",
                                  "        running_mean[:] = momentum * running_mean + (1 - momentum) * x.mean(axis=0)\n"
                                  "        x_hat = (x - running_mean) / np.sqrt(running_var + eps)")],
                                {"bn_forward_test"}),
    "dgamma_shape": ([("bn_backward_code", "dgamma = np.sum(dout * x_hat, axis=0)",
                       "dgamma = np.sum(dout * x_hat, axis=0, keepdims=True)")], {"bn_backward"}),
    "dx_missing_term": ([("bn_backward_alt_code", "(N * dout - dbeta - x_hat * dgamma)", "(N * dout - dbeta)")],
                        {"bn_backward_alt"}),
    "calls_reference": ([("bn_backward_alt_code", "def batchnorm_backward_alt(",
                          "from bnref.functional import batchnorm_backward_alt as fast_backward\n\n\n"
                          "def batchnorm_backward_alt("),
                         ("bn_backward_alt_code", "    dx = gamma * invstd / N * (N * dout - dbeta - x_hat * dgamma)",
                          "    dx, dgamma, dbeta = fast_backward(dout, cache)")],
                        {"bn_backward_alt"}),
    "loops_forever": ([("spatial_bn_forward_code", "    N, C, H, W = x.shape\n",
                        "    while True:\n        pass\n    N, C, H, W = x.shape\n")], {"spatial_bn_forward"}),
    # A wrong forward pass whose student also replaced its test with one that passes.
    "edits_test_cell": ([("bn_forward_code", "std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"),
                         ("bn_forward_train", None, "assert True")], {"bn_forward_train"}),
    # A wrong closed form whose student deleted its test cell.
    "deletes_test_cell": ([("bn_backward_alt_code", "(N * dout - dbeta - x_hat * dgamma)", "(N * dout - dbeta)"),
                           ("bn_backward_alt", None, None)], {"bn_backward_alt"}),
    "duplicates_cells": ([("bn_forward_code", "duplicate", None), ("bn_backward", "duplicate", None)], set()),
    "untouched_release": (None, "all"),
}

A2 = "a2_test_time_inference"
A2_STUDENTS = {
    "full_solution": ([], set()),
    "unbiased_var": ([("bn_function_code", "x.var(dim=dims, unbiased=False, keepdim=True)",
                       "x.var(dim=dims, unbiased=True, keepdim=True)")], {"bn_function_forward"}),
    "momentum_convention": ([("bn_module_code", "self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)",
                              "self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)")],
                            {"bn_module_train"}),
    "biased_running_var": ([("bn_module_code", "x.var(dim=dims, unbiased=True)", "x.var(dim=dims, unbiased=False)")],
                           {"bn_module_train"}),
    "running_updated_in_eval": ([("bn_module_code", "if self.training:", "if True:")], {"bn_module_eval"}),
    "autograd_backward": ([("bn_function_code", """        m = dout.numel() // dout.shape[1]""", """        with torch.enable_grad():
            xh, w = x_hat.detach().requires_grad_(), weight.detach().requires_grad_()
            b = torch.zeros_like(w, requires_grad=True)
            y = (xh - xh.mean(dim=dims, keepdim=True)) * torch.rsqrt(xh.var(dim=dims, unbiased=False, keepdim=True) + 1e-5)
            y = y * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
            dxh, dweight, dbias = torch.autograd.grad(y, (xh, w, b), dout)
        return dxh * invstd, dweight, dbias, None
        m = dout.numel() // dout.shape[1]""")], {"bn_function_backward"}),
    "calls_reference": ([("bn_function_code", "        return weight.view(1, -1, 1, 1) * x_hat + bias.view(1, -1, 1, 1)",
                          "        return torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True, eps=eps)")],
                        {"bn_function_forward"}),
    "untouched_release": (None, "all"),
}

A3 = "a3_triton_batchnorm"
A3_STUDENTS = {
    "full_solution": ([], set()),
    "unbiased_var": ([("bn_stats_code", "m2 / N, mask=col_ok)", "m2 / (N - 1), mask=col_ok)")], {"bn_stats"}),
    "stats_wrong_axis": ([("bn_stats_code", "tile_mean = tl.sum(x, axis=0)", "tile_mean = tl.sum(x, axis=1)")],
                         {"bn_stats"}),
    # Masked-out rows load as 0 and then add tile_mean**2 each to the centred sum of squares.
    "mask_missing": ([("bn_stats_code", "xmu = tl.where(mask, x - tile_mean[None, :], 0.0)",
                      "xmu = x - tile_mean[None, :]")],
                     {"bn_stats"}),
    "eps_outside_sqrt": ([("bn_forward_code", "invstd = 1.0 / tl.sqrt(var + eps)", "invstd = 1.0 / (tl.sqrt(var) + eps)")],
                         {"bn_forward"}),
    "dx_missing_term": ([("bn_backward_code", "(dy - (dbeta / N)[None, :] - x_hat * (dgamma / N)[None, :])",
                          "(dy - (dbeta / N)[None, :])")], {"bn_backward"}),
    "calls_batch_norm": ([("bn_forward_code", "    return y, mean, invstd",
                           "    y = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n"
                           "    return y, mean, invstd")], {"bn_forward"}),
    "calls_bnref_triton": ([("bn_backward_code", "    N, C = x.shape\n    dx = torch.empty_like(x)",
                             "    import bnref.triton\n"
                             "    return bnref.triton.batch_norm_backward(dy, x, gamma, mean, invstd)")],
                           {"bn_backward"}),
    "untouched_release": (None, "all"),
}


def nbgrader(*args, cwd, env):
    done = subprocess.run([NBGRADER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def find_cell(nb, grade_id):
    matches = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(matches) == 1, f"expected one cell {grade_id!r}, found {len(matches)}"
    return matches[0]


def completed(release, solution):
    """The release notebook with every solution cell filled in as a student would."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            source = find_cell(solution, meta["grade_id"]).source
            cell.source = MARKER.sub("", source) if cell.cell_type == "code" else "My answer, in prose."
    return nb


def mutate(nb, changes):
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


def make_course(root):
    """A course directory with the repository's config, and a private exchange."""
    course_dir, exchange = root / "course", root / "exchange"
    course_dir.mkdir()
    exchange.mkdir()
    shutil.copytree(REPO / "solutions", course_dir / "solutions")
    (course_dir / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"load_subconfig({str(REPO / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(course_dir)!r}\n"
        f"c.Exchange.root = {str(exchange)!r}\n"
        f"c.Execute.timeout = {CELL_TIMEOUT}\n"
    )
    env = dict(os.environ)
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["JUPYTER_CONFIG_DIR"] = str(root / "jupyter-config")  # no instructor config leaks in
    env["OMP_NUM_THREADS"] = "1"  # small notebooks grade fastest on one thread each
    return dict(root=root, dir=course_dir, exchange=exchange, env=env)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """Every assignment through the whole pipeline, side by side (one course
    directory and gradebook each, so the two SQLite files never see two writers)."""
    jobs = {A1: A1_STUDENTS, A2: A2_STUDENTS, A3: A3_STUDENTS}
    courses = {a: make_course(tmp_path_factory.mktemp(a)) for a in jobs}
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {a: pool.submit(run_pipeline, courses[a], a, jobs[a]) for a in jobs}
        results = {a: f.result() for a, f in futures.items()}
    print(f"\nwhole pipeline, all assignments: {time.perf_counter() - start:.0f} s")
    return {a: (courses[a],) + results[a] for a in jobs}


def run_pipeline(course, assignment, students):
    env, course_dir = course["env"], course["dir"]
    exchange_flags = [f"--Exchange.root={course['exchange']}", f"--course={COURSE_ID}"]
    timings = {}
    nbgrader("generate_assignment", assignment, "--force", cwd=course_dir, env=env)
    nbgrader("release_assignment", assignment, "--force", cwd=course_dir, env=env)
    fetch_dir = course["root"] / "fetched" / assignment
    fetch_dir.mkdir(parents=True)
    nbgrader("fetch_assignment", assignment, *exchange_flags, cwd=fetch_dir, env=env)
    (release_path,) = (fetch_dir / assignment).glob("*.ipynb")
    release = nbformat.read(release_path, as_version=4)
    solution = nbformat.read(course_dir / "solutions" / assignment / release_path.name, as_version=4)

    def submit(student):
        changes, _ = students[student]
        home = course["root"] / "students" / assignment / student
        shutil.copytree(fetch_dir / assignment, home / assignment)
        if changes is not None:
            nb = mutate(completed(release, solution), changes)
            nbformat.write(nb, home / assignment / release_path.name)
        nbgrader("submit", assignment, f"--student={student}", *exchange_flags, cwd=home, env=env)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(submit, students))
    nbgrader("collect", assignment, *exchange_flags, cwd=course_dir, env=env)
    start = time.perf_counter()
    log = nbgrader("autograde", assignment, "--force", cwd=course_dir, env=env)
    timings["autograde"] = time.perf_counter() - start
    start = time.perf_counter()
    nbgrader("generate_feedback", assignment, "--force", cwd=course_dir, env=env)
    timings["feedback"] = time.perf_counter() - start
    print(f"\n{assignment}: autograde {timings['autograde']:.1f} s for {len(students)} submissions "
          f"({timings['autograde'] / len(students):.1f} s each), feedback {timings['feedback']:.1f} s")
    return release_path.stem, solution, log


def auto_scores(course, assignment, notebook, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course['dir'] / 'gradebook.db'}", course_id=COURSE_ID) as gb:
        sub = gb.find_submission_notebook(notebook, assignment, student)
        return {g.name: (g.auto_score, g.max_score) for g in sub.grades if g.cell.cell_type == "code"}


def check_assignment(course, assignment, students, notebook, solution):
    graded = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"] for c in solution.cells
              if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}
    table = {}
    for student, (_, failing) in students.items():
        scores = auto_scores(course, assignment, notebook, student)
        assert set(scores) == set(graded), f"{student}: graded parts {sorted(scores)}"
        expected = {gid: (0.0 if failing == "all" or gid in failing else float(pts)) for gid, pts in graded.items()}
        got = {gid: score for gid, (score, _) in scores.items()}
        table[student] = got
        assert got == expected, f"{student}: scores {got}, expected {expected}"
    print(json.dumps({s: sum(v.values()) for s, v in table.items()}, indent=1))
    return notebook


def check_feedback(course, assignment, notebook, students):
    for student in students:
        html = (course["dir"] / "feedback" / student / assignment / f"{notebook}.html").read_text()
        assert "BEGIN HIDDEN TESTS" not in html and "forbid_reference" not in html and "default_rng()" not in html, \
            f"the feedback of {student} shows hidden test code"
        assert "hidden tests ran here" in html


def test_a1_pipeline(pipelines):
    course, notebook, solution, _ = pipelines[A1]
    check_assignment(course, A1, A1_STUDENTS, notebook, solution)
    check_feedback(course, A1, notebook, A1_STUDENTS)
    autograded = course["dir"] / "autograded"
    # The deleted test cell was put back and run; the endless cell was interrupted.
    nb = nbformat.read(autograded / "deletes_test_cell" / A1 / f"{notebook}.ipynb", as_version=4)
    assert find_cell(nb, "bn_backward_alt").outputs, "the deleted test cell was not put back and run"
    nb = nbformat.read(autograded / "loops_forever" / A1 / f"{notebook}.ipynb", as_version=4)
    errors = [o.ename for o in find_cell(nb, "spatial_bn_forward").outputs if o.output_type == "error"]
    assert errors, "the endless cell should end in an error"
    # What a failing student reads: the message, not the hidden code.
    html = (course["dir"] / "feedback" / "eps_outside_sqrt" / A1 / f"{notebook}.html").read_text()
    assert "train-mode output is wrong" in html
    html = (course["dir"] / "feedback" / "calls_reference" / A1 / f"{notebook}.html").read_text()
    assert "must be implemented without" in html


def test_a2_pipeline(pipelines):
    course, notebook, solution, _ = pipelines[A2]
    check_assignment(course, A2, A2_STUDENTS, notebook, solution)
    check_feedback(course, A2, notebook, A2_STUDENTS)


def test_a3_pipeline(pipelines):
    course, notebook, solution, _ = pipelines[A3]
    check_assignment(course, A3, A3_STUDENTS, notebook, solution)
    check_feedback(course, A3, notebook, A3_STUDENTS)
    # Without a GPU the bandwidth part says it was not measured.
    nb = nbformat.read(course["dir"] / "autograded" / "full_solution" / A3 / f"{notebook}.ipynb", as_version=4)
    text = "".join(o.get("text", "") for o in find_cell(nb, "bn_bandwidth").outputs)
    import torch
    if not torch.cuda.is_available():
        assert "bandwidth not checked: no GPU" in text
    html = (course["dir"] / "feedback" / "calls_bnref_triton" / A3 / f"{notebook}.html").read_text()
    assert "must be implemented without" in html and "bnref.triton" in html

"""The instructor pipeline end to end, with nbgrader's own commands and gradebook.

In a temporary course directory: generate_assignment -> release_assignment to
a temporary exchange -> fetch_assignment -> submit as several students
(``--student``) -> collect -> autograde (all students of an assignment in one
call) -> generate_feedback. Every submission is built from the fetched release
notebook with the solution code filled in, then changed in one specific way;
each test asserts every autograded cell's score from the gradebook.

The course config (nbgrader_config.py) is loaded as is; the test changes only
the paths and shortens the per-cell timeout from 60 s to 20 s so that the
submission that never returns costs less time.
"""

import concurrent.futures
import json
import pathlib
import re
import shutil
import sys
import time

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import independent_solutions  # noqa: E402
from _nbgrader import completed, find_cell, make_course, mutate  # noqa: E402
from _nbgrader import nbgrader as run_nbgrader  # noqa: E402
from grader.course import COURSE_ID  # noqa: E402

CELL_TIMEOUT = 20

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
    "running_var_unbiased": ([("bn_forward_code", "momentum * running_var + (1 - momentum) * var",
                               "momentum * running_var + (1 - momentum) * var * N / (N - 1)")], {"bn_forward_train"}),
    "dgamma_values": ([("bn_backward_code", "dgamma = np.sum(dout * x_hat, axis=0)",
                        "dgamma = np.sum(dout * xmu, axis=0)")], {"bn_backward"}),
    # Right gradients, through torch's autograd: the NumPy parts must not use torch.
    "torch_in_numpy": ([("bn_backward_code", "    return dx, dgamma, dbeta", """    import torch
    xt = torch.tensor(xmu + 0.0, requires_grad=True)
    v = (xt - xt.mean(0)).pow(2).mean(0)
    y = (xt - xt.mean(0)) / torch.sqrt(v + cache["eps"]) * torch.tensor(gamma)
    y.backward(torch.tensor(dout))
    dx = xt.grad.numpy()
    return dx, dgamma, dbeta""")], {"bn_backward"}),
    # A bug on shapes the visible tests do not reach: whether the hidden tests
    # find it depends on the cases they draw (the regrade test uses it).
    "channel_bug": ([("spatial_bn_forward_code", "    cache = (bn_cache, x.shape)",
                      "    cache = (bn_cache, x.shape)\n    if C > 3:\n        out = out * 1.001")], "some"),
    "ln_wrong_axis": ([("ln_code", "mean = x.mean(axis=1, keepdims=True)", "mean = x.mean(axis=0, keepdims=True)")],
                      {"ln_forward"}),
    "independent": (independent_solutions.changes("a1_batchnorm_numpy"), set()),
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
    "no_num_batches_tracked": ([("bn_module_code", "                self.num_batches_tracked += 1\n", "")],
                               {"bn_module_train"}),
    "fold_linear_no_bias": ([("fold_code", "    bias = linear.bias.detach() if linear.bias is not None else torch.zeros_like(scale)",
                              "    bias = linear.bias.detach()")], {"fold_linear_bn"}),
    "fold_ignores_stride": ([("fold_code", "kernel_size, stride=conv.stride,", "kernel_size,")], {"fold_conv_bn"}),
    "independent": (independent_solutions.changes("a2_test_time_inference"), set()),
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
    "single_program_grid": ([("bn_stats_code", "bn_stats_kernel[(triton.cdiv(C, BLOCK_C),)]", "bn_stats_kernel[(1,)]")],
                            {"bn_stats"}),
    # Right results, computed by torch in the wrappers instead of in kernels.
    "stats_in_torch": ([("bn_stats_code", "    bn_stats_kernel[(triton.cdiv(C, BLOCK_C),)](x, mean, var, N, C, BLOCK_N=64, BLOCK_C=BLOCK_C)\n    return mean, var",
                         "    return x.mean(dim=0), (x - x.mean(dim=0)).pow(2).mean(dim=0)")], {"bn_stats"}),
    "backward_in_torch": ([("bn_backward_code", "    N, C = x.shape\n    dx = torch.empty_like(x)", """    x_hat = (x - mean) * invstd
    dbeta, dgamma = dy.sum(dim=0), (dy * x_hat).sum(dim=0)
    return gamma * invstd * (dy - dbeta / x.shape[0] - x_hat * dgamma / x.shape[0]), dgamma, dbeta
    N, C = x.shape
    dx = torch.empty_like(x)""")], {"bn_backward"}),
    "independent": (independent_solutions.changes("a3_triton_batchnorm"), set()),
    "untouched_release": (None, "all"),
}


def nbgrader(*args, cwd, env):
    done = run_nbgrader(*args, cwd=cwd, env=env)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """Every assignment through the whole pipeline, side by side (one course
    directory and gradebook each, so the two SQLite files never see two writers)."""
    jobs = {A1: A1_STUDENTS, A2: A2_STUDENTS, A3: A3_STUDENTS}
    courses = {a: make_course(tmp_path_factory.mktemp(a), Execute__timeout=CELL_TIMEOUT) for a in jobs}
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


def no_gpu():
    import torch

    return not torch.cuda.is_available()


def check_assignment(course, assignment, students, notebook, solution):
    graded = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"] for c in solution.cells
              if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}
    # Without a GPU, A3's bandwidth part is awarded to nobody.
    unmeasured = {"bn_bandwidth"} if assignment == A3 and no_gpu() else set()
    table = {}
    for student, (_, failing) in students.items():
        scores = auto_scores(course, assignment, notebook, student)
        assert set(scores) == set(graded), f"{student}: graded parts {sorted(scores)}"
        got = {gid: score for gid, (score, _) in scores.items()}
        table[student] = got
        if failing == "some":  # a bug the hidden tests find on some draws: its part only
            failing = {gid for gid in graded if gid != "spatial_bn_forward"} - {
                gid for gid in graded if got[gid] == float(graded[gid])}
            assert not failing, f"{student}: lost points outside its part: {sorted(failing)}"
            continue
        expected = {gid: (0.0 if failing == "all" or gid in failing or gid in unmeasured else float(pts))
                    for gid, pts in graded.items()}
        assert got == expected, f"{student}: scores {got}, expected {expected}"
    print(json.dumps({s: sum(v.values()) for s, v in table.items()}, indent=1))
    return notebook


def check_feedback(course, assignment, notebook, students):
    for student in students:
        html = (course["dir"] / "feedback" / student / assignment / f"{notebook}.html").read_text()
        assert "BEGIN HIDDEN TESTS" not in html and "forbid_reference" not in html and "default_rng()" not in html, \
            f"the feedback of {student} shows hidden test code"
        assert "hidden tests ran here" in html
        assert "**Rubric" not in html and "Model answer" not in html, f"the feedback of {student} shows a rubric"


def hidden_outputs(course, assignment, notebook, student):
    """Each graded cell's printed text and error message in the autograded notebook."""
    nb = nbformat.read(course["dir"] / "autograded" / student / assignment / f"{notebook}.ipynb", as_version=4)
    # Joined: one print can reach the notebook as one stream output or as two
    # (its text, then its newline), depending on when the kernel flushed.
    return {c.metadata.nbgrader["grade_id"]: "".join(o.get("text", "") + o.get("evalue", "")
                                                     for o in c.get("outputs", []))
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}


SEED = re.compile(r"hidden tests of (\w+): seed (\d+) \(regrade with GRADER_SEED=\2\)")


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
    assert "eps goes inside the square root" in html
    # References are absent from the grading kernel: the import fails in the student's own cell.
    html = (course["dir"] / "feedback" / "calls_reference" / A1 / f"{notebook}.html").read_text()
    assert "bnref.functional is not available while assignments are graded" in html
    assert "does not define &#x27;batchnorm_backward_alt&#x27;" in html or "does not define 'batchnorm_backward_alt'" in html
    html = (course["dir"] / "feedback" / "torch_in_numpy" / A1 / f"{notebook}.html").read_text()
    assert "torch is not available while A1 is graded" in html


def test_hidden_tests_draw_fresh_cases_and_regrade_reproduces(pipelines):
    """Two gradings of one submission draw different cases (their seeds differ); a
    regrade with the first grading's recorded seed reproduces its outputs and scores."""
    course, notebook, _, _ = pipelines[A1]
    student, env = "channel_bug", course["env"]
    first = hidden_outputs(course, A1, notebook, student)
    first_scores = auto_scores(course, A1, notebook, student)
    seeds = {m.group(2) for texts in first.values() for m in SEED.finditer(texts)}
    parts = {m.group(1) for texts in first.values() for m in SEED.finditer(texts)}
    assert len(seeds) == 1 and {"bn_forward_train", "spatial_bn_forward", "spatial_bn_backward"} <= parts, first
    (seed,) = seeds
    nbgrader("autograde", A1, f"--student={student}", "--force", cwd=course["dir"], env=env)
    second = hidden_outputs(course, A1, notebook, student)
    (second_seed,) = {m.group(2) for texts in second.values() for m in SEED.finditer(texts)}
    assert second_seed != seed, "two gradings drew the same seed"
    nbgrader("autograde", A1, f"--student={student}", "--force", cwd=course["dir"], env=dict(env, GRADER_SEED=seed))
    assert hidden_outputs(course, A1, notebook, student) == first, "the regrade with the recorded seed differs"
    assert auto_scores(course, A1, notebook, student) == first_scores


def test_a2_pipeline(pipelines):
    course, notebook, solution, _ = pipelines[A2]
    check_assignment(course, A2, A2_STUDENTS, notebook, solution)
    check_feedback(course, A2, notebook, A2_STUDENTS)


def test_a3_pipeline(pipelines):
    course, notebook, solution, _ = pipelines[A3]
    check_assignment(course, A3, A3_STUDENTS, notebook, solution)
    check_feedback(course, A3, notebook, A3_STUDENTS)
    nb = nbformat.read(course["dir"] / "autograded" / "full_solution" / A3 / f"{notebook}.ipynb", as_version=4)
    outputs = find_cell(nb, "bn_bandwidth").outputs
    if no_gpu():  # not measured, not awarded, and it says so
        assert "bandwidth not measured: no GPU" in "".join(o.get("text", "") + o.get("evalue", "") for o in outputs)
        assert any("not graded here" in o.get("evalue", "") for o in outputs)
    for student in ("stats_in_torch", "backward_in_torch"):
        html = (course["dir"] / "feedback" / student / A3 / f"{notebook}.html").read_text()
        assert "arithmetic must run inside @triton.jit kernels" in html, student
    html = (course["dir"] / "feedback" / "calls_bnref_triton" / A3 / f"{notebook}.html").read_text()
    assert "bnref.triton is not available while assignments are graded" in html


def test_check_service_agrees_with_nbgrader(pipelines, tmp_path):
    """The readers' check service, given the same code, passes and fails each part
    of every submission above as nbgrader's autograde did, with a message on failure.
    Left out, with the reason: delegations (online, the reader's own machine runs
    the code and has the references, which only grading's kernel profiles remove)
    and mistakes in the use of nbgrader itself."""
    from _service import app_client, notebook_namespace
    from test_check_service import DELEGATIONS, MECHANICS, check_online, online_parts

    client = app_client(tmp_path, per_token=10**6, per_address=10**6)
    compared, disagreements = 0, []
    for assignment, students in ((A1, A1_STUDENTS), (A2, A2_STUDENTS), (A3, A3_STUDENTS)):
        course, notebook, _, _ = pipelines[assignment]
        for student, (changes, _) in students.items():
            if student in MECHANICS or (assignment, student) in DELEGATIONS:
                print(f"not compared: {assignment} {student} (a delegation or an nbgrader mechanic)")
                continue
            scores = auto_scores(course, assignment, notebook, student)
            namespace = notebook_namespace(assignment, changes)
            token = client.post("/tokens").json()["token"]
            for part in online_parts(assignment):
                verdict = check_online(client, token, assignment, part, namespace)
                graded = scores[part][0] == scores[part][1]
                compared += 1
                if verdict["passed"] != graded or (not graded and not verdict["message"]):
                    disagreements.append((assignment, student, part, graded, verdict))
    print(f"{compared} verdicts compared")
    assert compared > 200 and not disagreements, disagreements[:3]


@pytest.mark.parametrize("assignment", [A1, A2, A3])
def test_independent_solution_answers_every_code_cell(assignment):
    release = nbformat.read(REPO / "assignments" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {c.metadata.nbgrader["grade_id"] for c in release.cells
               if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}
    assert answers == set(independent_solutions.SOURCES[assignment])

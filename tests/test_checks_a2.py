"""A2's graded parts, checked as data (grader.checks.a2), in this process.

The solution notebook's code, the independent solution and every typical
mistake of the pipeline test run through ``check_here``: the right code
passes every part, each mistake fails exactly the parts it should.

The grading kernel of Parts 1-4 runs the ``no_norm`` profile, where torch's
batch norm refuses to run. Here that profile is emulated while the
student's side of a ``no_norm`` check runs (``torch.batch_norm`` and
friends raise), so a mistake that delegates to torch's batch norm fails
as it will in the sandbox, and no check relies on watching for it.
"""
import contextlib
import pathlib
import sys
import time

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import independent_solutions  # noqa: E402
from test_nbgrader_pipeline import A2, A2_STUDENTS  # noqa: E402

from grader import checks  # noqa: E402
from grader.checks import CheckFailed, check_here  # noqa: E402
from bnref.checking import driver  # noqa: E402

SOLUTION = REPO / "solutions" / A2 / f"{A2}.ipynb"
SEEDS = (1, 20260, 987654321)


def cells():
    """The solution's code cells in order as (grade_id, source, graded)."""
    nb = nbformat.read(SOLUTION, as_version=4)
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if "pip" in cell.source and "install" in cell.source:
            continue  # the install cell
        out.append((meta.get("grade_id"), cell.source, bool(meta.get("grade"))))
    return out


def graded_parts():
    return [grade_id for grade_id, _, graded in cells() if graded]


def namespace(changes=()):
    """The notebook's non-test cells, with the changes applied, run in a fresh namespace."""
    sources = [[grade_id, source] for grade_id, source, graded in cells() if not graded]
    for grade_id, old, new in changes:
        matches = [item for item in sources if item[0] == grade_id]
        if not matches:
            continue  # a change to a test cell: the check replaces that cell anyway
        item, = matches
        if old is None:
            item[1] = new
        else:
            assert item[1].count(old) == 1, f"{old!r} is not exactly once in {grade_id}"
            item[1] = item[1].replace(old, new)
    ns = {"__name__": "__main__"}
    for grade_id, source in sources:
        if grade_id == "batch_size_table":
            continue  # prints a table; no graded part needs it
        exec(compile(source, f"<cell {grade_id}>", "exec"), ns)
    return ns


@contextlib.contextmanager
def no_norm_profile():
    """Torch's normalization routines refuse to run, as in the no_norm kernel."""
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("normalization kernels are not available in this kernel")

    names = ("batch_norm", "native_batch_norm", "instance_norm", "layer_norm", "group_norm")
    saved = {name: getattr(torch, name) for name in names}
    try:
        for name in names:
            setattr(torch, name, refuse)
        yield
    finally:
        for name, value in saved.items():
            setattr(torch, name, value)


def run_part(part, ns, seed):
    """``check_here`` with the kernel's side under the part's profile; the failure message or None."""
    original = driver.run
    profile = checks.get("a2_test_time_inference", part).profile

    def run(namespace, request):
        with no_norm_profile() if profile == "no_norm" else contextlib.nullcontext():
            return original(namespace, request)

    driver.run = run
    try:
        check_here("a2_test_time_inference", part, ns, seed)
    except CheckFailed as err:
        return str(err)
    finally:
        driver.run = original
    return None


@pytest.fixture(scope="module")
def solution_ns():
    return namespace()


def test_every_graded_cell_has_a_check():
    checks.load()
    parts = graded_parts()
    key = "a2_test_time_inference"
    assert parts and all((key, part) in checks.CHECKS for part in parts), parts
    assert [checks.CHECKS[key, p].profile for p in parts] == ["no_norm"] * 7 + ["plain"] * 3


@pytest.mark.parametrize("seed", SEEDS)
def test_solution_passes(solution_ns, seed):
    start = time.perf_counter()
    for part in graded_parts():
        assert run_part(part, solution_ns, seed) is None, part
    print(f"all A2 checks, seed {seed}: {time.perf_counter() - start:.2f} s")


def test_independent_solution_passes():
    ns = namespace(independent_solutions.changes(A2))
    for seed in SEEDS[:2]:
        for part in graded_parts():
            assert run_part(part, ns, seed) is None, part


MISTAKES = {name: spec for name, spec in A2_STUDENTS.items()
            if name not in ("full_solution", "independent", "untouched_release")}


@pytest.mark.parametrize("student", sorted(MISTAKES))
def test_mistake_fails_exactly_its_parts(student):
    changes, must_fail = MISTAKES[student]
    ns = namespace(changes)
    failed = {part: run_part(part, ns, SEEDS[0]) for part in graded_parts()}
    assert {p for p, message in failed.items() if message} == set(must_fail), failed
    if student == "calls_reference":
        print("calls_reference fails through the emulated no_norm profile "
              f"(torch's batch_norm refuses to run): {failed['bn_function_forward']}")


# More mistakes, each on a rule the notebook states (the pipeline test does not run these).
MORE_MISTAKES = {
    "saves_x_not_x_hat": ([("bn_function_code", "ctx.save_for_backward(x_hat, invstd, weight)",
                            "ctx.save_for_backward(x, invstd, weight)")], {"bn_function_forward"}),
    "backward_ignores_weight": ([("bn_function_code", "scale = weight.view(1, -1, 1, 1) * invstd / m",
                                  "scale = invstd / m")], {"bn_function_backward"}),
    "eval_without_eps": ([("bn_module_code", "invstd = torch.rsqrt(self.running_var + self.eps)",
                           "invstd = torch.rsqrt(self.running_var)")], {"bn_module_eval"}),
    "mean_of_batch_means": ([("population_statistics_code", "mean = mean + delta * n / (count + n)",
                              "mean = mean + delta / 2")], {"population_stats"}),
    "fold_drops_dilation": ([("fold_code", "padding=conv.padding, dilation=conv.dilation,", "padding=conv.padding,")],
                            {"fold_conv_bn"}),
    "fold_drops_groups": ([("fold_code", "dilation=conv.dilation, groups=conv.groups,", "dilation=conv.dilation,")],
                          {"fold_conv_bn"}),
    "accuracies_swapped": ([("digits_experiment_code", "return acc_running, acc_batch",
                             "return acc_batch, acc_running")], {"digits_experiment"}),
    "model_not_copied": ([("digits_experiment_code", "accuracy(copy.deepcopy(model).eval(), X, y)",
                           "accuracy(model.eval(), X, y)")], {"digits_experiment"}),
    "batch_size_ignored": ([("digits_experiment_code", "X, y, batch_size=batch_size)", "X, y)")],
                           {"digits_experiment"}),
}


@pytest.mark.parametrize("student", sorted(MORE_MISTAKES))
def test_more_mistakes_fail_exactly_their_parts(student):
    changes, must_fail = MORE_MISTAKES[student]
    ns = namespace(changes)
    for seed in SEEDS[:2]:
        failed = {part: run_part(part, ns, seed) for part in graded_parts()}
        assert {p for p, message in failed.items() if message} == must_fail, failed


def test_a_delegating_forward_passes_without_the_profile():
    """Without the profile, the check cannot see a forward that calls torch's batch norm:
    the verdict comes from the kernel profile, not from watching."""
    changes, _ = A2_STUDENTS["calls_reference"]
    ns = namespace(changes)
    assert run_part("bn_module_eval", ns, SEEDS[0]) is None
    try:
        check_here("a2_test_time_inference", "bn_function_forward", ns, SEEDS[0])
    except CheckFailed as err:  # pragma: no cover - would mean the check watches
        raise AssertionError(f"the check caught the delegation without the profile: {err}")


def test_untouched_release_fails_every_part():
    ns = {"__name__": "__main__"}
    release = nbformat.read(REPO / "assignments" / A2 / f"{A2}.ipynb", as_version=4)
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade") or ("pip" in cell.source and "install" in cell.source):
            continue
        try:
            exec(compile(cell.source, "<release cell>", "exec"), ns)
        except Exception:
            pass  # unanswered cells raise NotImplementedError
    for part in graded_parts():
        assert run_part(part, ns, SEEDS[0]) is not None, part


def test_autograd_watcher_reports_as_data():
    import torch

    from bnref.checking.watch_autograd import watch

    x = torch.randn(3, requires_grad=True)
    with watch() as seen:
        torch.autograd.grad((x * x).sum(), x)
    assert seen, "torch.autograd.grad was not seen"
    with watch() as seen:
        (x * 2).sum().detach()
    assert seen == []

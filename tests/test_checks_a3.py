"""A3's graded parts, checked as data (grader.checks.a3), in this process.

The solution notebook's code, the independent solution and every typical
mistake of the pipeline test run through ``check_here`` (Triton's
interpreter where there is no GPU): the right code passes every part, each
mistake fails exactly the parts it should.

The grading kernel runs the ``triton`` profile, where ``bnref.triton`` is
absent and torch's batch norm refuses to run. Here that profile is emulated
while the student's side of a check runs, so a mistake that delegates to
either fails as it will in the sandbox; those mistakes are also run with
the kernels-only watcher switched off, to show the check does not rely on
watching for them.
"""
import contextlib
import os
import pathlib
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import independent_solutions  # noqa: E402
from _nbgrader import submission  # noqa: E402
from test_nbgrader_pipeline import A3, A3_STUDENTS  # noqa: E402

from grader import checks  # noqa: E402
from grader.checks import CheckFailed, check_here  # noqa: E402
from grader.checks import a3 as checks_a3  # noqa: E402
from bnref.checking import codec, driver, scenarios_a3, watch_kernels  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

GPU = torch.cuda.is_available()
PARTS = ("bn_stats", "bn_forward", "bn_backward", "bn_bandwidth")
# Delegations the sandbox's profile stops (and the watcher need not see).
DELEGATING = {"calls_batch_norm", "calls_bnref_triton"}


def notebook_namespace(nb):
    """Run a notebook's code cells but the graded test cells and the pip-install cell, as the grader's kernel does."""
    ns = {"__name__": "__main__"}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade") or "pip" in cell.source:
            continue
        exec(compile(cell.source, f"<cell {meta.get('grade_id', '')}>", "exec"), ns)
    return ns


def solution_namespace():
    return notebook_namespace(nbformat.read(REPO / "solutions" / A3 / f"{A3}.ipynb", as_version=4))


@contextlib.contextmanager
def triton_profile(watcher=True):
    """The grading kernel's ``triton`` profile, for the student's side only: no bnref.triton, no batch_norm."""
    import torch.nn.functional as F

    def refused(*args, **kwargs):
        raise RuntimeError("batch_norm: normalization kernels are not available in this grading kernel")

    real_run = driver.run

    def run(ns, request):
        saved_modules = {k: v for k, v in sys.modules.items() if k == "bnref.triton" or k.startswith("bnref.triton.")}
        saved = (torch.batch_norm, F.batch_norm, watch_kernels.watch)
        for name in saved_modules:
            sys.modules[name] = None
        sys.modules["bnref.triton"] = None
        torch.batch_norm, F.batch_norm = refused, refused
        if not watcher:
            scenarios_a3.watch = _blind
        try:
            return real_run(ns, request)
        finally:
            torch.batch_norm, F.batch_norm = saved[0], saved[1]
            scenarios_a3.watch = saved[2]
            sys.modules.pop("bnref.triton", None)
            sys.modules.update(saved_modules)

    driver.run = run
    try:
        yield
    finally:
        driver.run = real_run


@contextlib.contextmanager
def _blind():
    yield []


def verdicts(ns, seed, parts=PARTS, watcher=True):
    out = {}
    with triton_profile(watcher):
        for part in parts:
            try:
                check_here(A3, part, ns, seed)
                out[part] = None
            except CheckFailed as err:
                out[part] = str(err)
    return out


def expected_failures(failing):
    return set(failing) | ({"bn_bandwidth"} if not GPU else set())


def test_every_graded_cell_has_a_triton_check():
    checks.load()
    nb = nbformat.read(REPO / "solutions" / A3 / f"{A3}.ipynb", as_version=4)
    graded = {c.metadata.nbgrader["grade_id"] for c in nb.cells
              if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
    assert graded == set(PARTS)
    assert all(checks.CHECKS[A3, part].profile == "triton" for part in PARTS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solution_passes(seed):
    start = time.perf_counter()
    got = verdicts(solution_namespace(), seed)
    print(f"seed {seed}: solution checked in {time.perf_counter() - start:.1f} s")
    assert {p for p, m in got.items() if m} == expected_failures(set()), got


@pytest.mark.parametrize("seed", [3, 4])
def test_independent_solution_passes(seed):
    ns = notebook_namespace(submission(A3, independent_solutions.changes(A3)))
    got = verdicts(ns, seed)
    assert {p for p, m in got.items() if m} == expected_failures(set()), got


MISTAKES = {k: v for k, v in A3_STUDENTS.items() if k not in ("full_solution", "independent", "untouched_release")}


@pytest.mark.parametrize("student", sorted(MISTAKES))
def test_mistake_fails_exactly_its_part(student):
    changes, failing = MISTAKES[student]
    ns = notebook_namespace(submission(A3, changes))
    got = verdicts(ns, 5)
    assert {p for p, m in got.items() if m} == expected_failures(failing), got
    if student in ("stats_in_torch", "backward_in_torch"):
        (part,) = failing
        assert "arithmetic must run inside @triton.jit kernels" in got[part], got[part]
    if student in DELEGATING:
        # The sandbox's profile alone stops these: with the watcher switched off they still fail.
        blind = verdicts(ns, 5, parts=sorted(failing), watcher=False)
        assert all(blind.values()), blind
        print(f"{student}: fails without the watcher too: {blind}")
    if student == "calls_bnref_triton":
        assert "must be implemented without" in got["bn_backward"] and "bnref.triton" in got["bn_backward"]


def test_watcher_reports_torch_arithmetic_as_data():
    x = torch.randn(6, 3)
    with watch_kernels.watch() as seen:
        torch.empty_like(x)
        (x - x.mean(dim=0)).sum()
    assert {"mean", "sub", "sum", "__sub__"} & set(seen) and "empty_like" not in seen, seen


def test_stats_stand_in_knows_only_the_checks_input():
    x = torch.randn(5, 3)
    table = checks_a3.stats_table(x)
    stand_in = scenarios_a3.table_bn_stats(table["entries"], table["miss"], "cpu")
    mean, var = stand_in(x.clone())
    assert torch.allclose(mean.double(), x.double().mean(dim=0)) and var.dtype == torch.float32
    for other in (x + 1e-6, x[:4], x.double()):
        with pytest.raises(AssertionError, match="bn_stats with something other"):
            stand_in(other)


def test_checks_are_deterministic_given_the_seed():
    for part in ("bn_stats", "bn_forward", "bn_backward"):
        texts = [codec.loads(checks.prepare(A3, part, 7)[0])["cases"] for _ in range(2)]
        assert repr(texts[0]) == repr(texts[1])


def test_bandwidth_without_gpu_times_nothing():
    if GPU:
        pytest.skip("this machine has a GPU: the part is measured here, not refused")
    text, verifies, _ = checks.prepare(A3, "bn_bandwidth", 0)
    assert codec.loads(text)["cases"] == [{"scenario": "a3_device"}]
    ns = solution_namespace()
    message = checks.judge(verifies, codec.decode(driver.run(ns, codec.loads(text))))
    assert "bandwidth not measured: no GPU" in message and "not graded here" in message


def test_large_mean_catches_the_textbook_variance():
    """The large-mean case fails E[x^2] - E[x]^2 in float32 and passes the exact statistics."""
    for seed in (11, 12):
        text, verifies, _ = checks.prepare(A3, "bn_stats", seed)
        x = codec.loads(text)["cases"][-1]["args"][0]
        assert float(x.mean()) > 9e3
        naive = (x * x).mean(dim=0) - x.mean(dim=0) ** 2
        exact = (x.double().mean(dim=0).float(), x.double().var(dim=0, unbiased=False).float())
        with pytest.raises(CheckFailed, match="numerically stable"):
            verifies[-1]({"returned": (exact[0], naive), "watched": []})
        verifies[-1]({"returned": exact, "watched": []})


def test_bandwidth_on_a_gpu_checks_results_and_applies_the_40_percent_rule(monkeypatch):
    """Part 4's GPU path, run here on a small input: the scenario's calls and answer, the checks of the
    timed calls' results against an autograd oracle, and the 40% rule on the reported times.
    (The times come from a stand-in for do_bench: speed itself is only measured on a GPU.)"""
    import triton.testing
    import torch.nn.functional as F

    n = 96
    monkeypatch.setattr(checks_a3, "_gpu", lambda: True)
    monkeypatch.setattr(checks_a3, "BANDWIDTH_N", n)
    monkeypatch.setattr(scenarios_a3, "timing_device", lambda: "cpu")
    benched = []

    def do_bench(fn):
        fn()
        benched.append(fn)
        return 1.0

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    text, verifies, _ = checks.prepare(A3, "bn_bandwidth", 3)
    assert len(text) < 64_000, "the request must not carry the timed tensors"
    (case,) = codec.loads(text)["cases"]
    # The oracle: the same draws, normalized and differentiated by autograd in float64.
    g = torch.Generator().manual_seed(case["seed"])
    x = (torch.randn(n, n, generator=g) * 2 + 1).double().requires_grad_()
    dy = torch.randn(n, n, generator=g).double()
    y = F.batch_norm(x, None, None, case["gamma"].double(), case["beta"].double(), training=True, eps=case["eps"])
    (dx,) = torch.autograd.grad(y, x, dy)
    rows = case["rows"]
    ns = solution_namespace()
    answer = codec.decode(driver.run(ns, codec.loads(text)))[0]
    assert torch.allclose(answer["forward"][0].double(), y.detach()[rows], atol=1e-4)
    assert torch.allclose(answer["backward"][0].double(), dx[rows], atol=1e-4)
    assert answer["watched"] == [] and answer["ms"] == {"copy": 1.0, "forward": 1.0, "backward": 1.0}
    assert len(benched) == 3

    def judge(ms, **changes):
        result = dict(answer, ms=ms, **changes)
        return checks.judge(verifies, [result])

    # 50% of the copy's bandwidth each (backward moves 3 bytes per element for the copy's 2).
    assert judge({"copy": 1.0, "forward": 2.0, "backward": 3.0}) is None
    assert "forward reaches 33% of the copy bandwidth, below 40%" in judge(
        {"copy": 1.0, "forward": 3.0, "backward": 3.0})
    assert "backward reaches 15% of the copy bandwidth" in judge({"copy": 1.0, "forward": 1.0, "backward": 10.0})
    wrong = (answer["forward"][0] + 0.01, *answer["forward"][1:])
    assert "the timed forward pass gives wrong results" in judge({"copy": 1.0, "forward": 1.0, "backward": 1.0},
                                                                 forward=wrong)
    assert "arithmetic must run inside @triton.jit kernels" in judge({"copy": 1, "forward": 1, "backward": 1},
                                                                    watched=["sum"])
    assert "no times" in judge(None)

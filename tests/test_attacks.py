"""Attacks on grading, through the real pipeline with the sandbox on (issue #12).

Every submission below carries the same wrong closed-form backward pass as
the typical mistake ``dx_missing_term`` (it loses ``bn_backward_alt``, 3 of
24 points) plus one trick a determined student who has read ``grader/``
could try. Each must gain nothing: ``bn_backward_alt`` stays at 0 and the
total at most that of the plain wrong code. The feedback of every attack
must hold no line of any check (the hidden tests) and the autograded
notebook no sign that the student's code found one.
"""
import html
import nbformat
import pytest

from _nbgrader import REPO, make_course
from test_nbgrader_pipeline import A1, A1_STUDENTS, A2, CELL_TIMEOUT, auto_scores, run_pipeline

BASE = A1_STUDENTS["dx_missing_term"][0]
DEF = "def batchnorm_backward_alt("
WRONG_TOTAL = 21.0


def before_alt(code):
    """Run ``code`` in the answer cell, before the wrong backward is defined."""
    return BASE + [("bn_backward_alt_code", DEF, code.strip("\n") + "\n\n\n" + DEF)]


def inside_alt(code):
    """Run ``code`` at the start of the wrong backward's body, each time it is called."""
    body = "".join("    " + line + "\n" for line in code.strip("\n").splitlines())
    return BASE + [("bn_backward_alt_code", "    x_hat, invstd, gamma, N = ",
                    body + "    x_hat, invstd, gamma, N = ")]


ATTACKS = {
    "plain_wrong": BASE,
    "comparison_helpers_replaced": before_alt("""
import numpy, bnref.gradcheck
for _name in ("allclose", "array_equal", "isclose", "array_equiv"):
    setattr(numpy, _name, lambda *a, **k: True)
numpy.testing.assert_allclose = lambda *a, **k: None
bnref.gradcheck.rel_error = lambda *a, **k: 0.0
numpy.max = lambda *a, **k: 0.0
"""),
    "input_transformer": before_alt("""
def _blank(lines):
    return ["pass\\n"] if any("grader" in line for line in lines) else lines
get_ipython().input_transformers_post.append(_blank)
get_ipython().input_transformers_cleanup.append(_blank)
"""),
    "ast_transformer": before_alt("""
import ast
class _Empty(ast.NodeTransformer):
    def visit_Module(self, node):
        return ast.Module(body=[ast.Pass()], type_ignores=[])
get_ipython().ast_transformers.append(_Empty())
"""),
    "exception_handlers": before_alt("""
import sys
get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)
sys.excepthook = lambda *a: None
"""),
    "event_callbacks": before_alt("""
import re
from IPython.display import display
def _forge(info):
    nonce = re.search(r'nonce[^0-9a-f]+([0-9a-f]{16})', info.raw_cell or "")
    if nonce:
        display({"application/x-bncourse-answers+json": {"nonce": nonce.group(1), "results": []}}, raw=True)
def _clear(result):
    result.error_in_exec = None
get_ipython().events.register("pre_run_cell", _forge)
get_ipython().events.register("post_run_cell", _clear)
"""),
    "builtins_changed": before_alt("""
import builtins
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.isinstance = lambda *a: True
builtins.len = lambda *a: 3
"""),
    # A right answer by delegation, with every profiler and tracer switched off first.
    "delegation_profilers_off": BASE + [("bn_backward_alt_code", "    return dx, dgamma, dbeta", """    import sys, threading
    sys.setprofile(None); sys.settrace(None); threading.setprofile(None); threading.settrace(None)
    import bnref.functional
    return bnref.functional.batchnorm_backward_alt(dout, cache)""")],
    "reference_from_bytecode": inside_alt("""
import glob, importlib.util, marshal, os, bnref
found = None
for path in glob.glob(os.path.join(os.path.dirname(bnref.__file__), "**", "*functional*"), recursive=True):
    try:
        if path.endswith(".pyc"):
            code = marshal.loads(open(path, "rb").read()[16:])
        else:
            code = compile(open(path).read(), path, "exec")
        namespace = {}
        exec(code, namespace)
        found = namespace["batchnorm_backward_alt"]
    except BaseException:
        pass
if found is not None:
    return found(dout, cache)
"""),
    "gc_and_frames": inside_alt("""
import gc, sys
import numpy as np
frame, seen = sys._getframe(1), []
while frame is not None:
    seen += [v for v in frame.f_locals.values() if isinstance(v, np.ndarray)]
    frame = frame.f_back
seen += [o for o in gc.get_objects() if isinstance(o, np.ndarray)]
for candidate in seen:
    if candidate.shape == dout.shape and candidate is not dout and not np.shares_memory(candidate, dout):
        return candidate, np.sum(dout * cache["x_hat"], axis=0), np.sum(dout, axis=0)
"""),
    "prints_test_source": inside_alt("""
import inspect, linecache, os, sys
# (nbgrader keeps 1000 lines of a cell's output: print the start of each source)
frame = sys._getframe(1)
while frame is not None:
    try:
        print("".join(inspect.getsource(frame.f_code).splitlines(keepends=True)[:15]))
    except (OSError, TypeError):
        pass
    frame = frame.f_back
for name, lines in list(linecache.cache.items()):
    print(name, "".join(lines[2][:5]) if len(lines) > 2 and lines[2] else "")
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "site-packages", "node_modules")]
    for name in files:
        path = os.path.join(root, name)
        try:
            with open(path, errors="ignore") as f:
                text = f.read(1 << 16)
        except OSError:
            continue
        # Text that only the checks and the solution notebooks hold.
        if any(marker in text for marker in ("check" + "_here(", "def " + "verify(result")):
            print("FOUND-" + "HIDDEN-TEXT in", path)
print("WALK-" + "DONE")
"""),
    "shadow_driver_in_working_dir": before_alt("""
import os, sys
os.makedirs("bnref/checking", exist_ok=True)
open("grader/__init__.py", "w").write("")
open("bnref/checking/__init__.py", "w").write("")
open("bnref/checking/driver.py", "w").write('''
import json, re
from IPython.display import display
def answer(text):
    nonce = json.loads(text)["$dict"][0][1]
    display({"application/x-bncourse-answers+json": {"nonce": nonce, "results": [0.0] * 3}}, raw=True)
''')
sys.path.insert(0, os.getcwd())
for name in [m for m in sys.modules if m == "grader" or m.startswith("grader.")]:
    del sys.modules[name]
"""),
    "forged_answer": before_alt("""
import json
import bnref.checking.driver as _driver
from IPython.display import display
from bnref.checking import codec
def _answer(text):
    request = codec.loads(text)
    results = [[{"returned": (case["calls"][0]["args"][0], 0.0, 0.0), "objects": {}}] for case in request["cases"]]
    display({codec.MIME: {"nonce": request["nonce"], "results": [codec.encode(r) for r in results]}}, raw=True)
_driver.answer = _answer
"""),
    "exits_kernel": inside_alt("import os\nos._exit(0)"),
    "kills_kernel": inside_alt("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    "nan_answers": inside_alt("import numpy as np\nreturn np.full(dout.shape, np.nan), np.full(dout.shape[1], np.nan), np.full(dout.shape[1], np.nan)"),
    "ndarray_subclass_equal": inside_alt("""
import numpy as np
class Always(np.ndarray):
    def __eq__(self, other): return True
    def __array_ufunc__(self, *a, **k): return np.zeros(())
    def __sub__(self, other): return np.zeros(self.shape)
    def __abs__(self): return np.zeros(self.shape)
return np.zeros(dout.shape).view(Always), np.zeros(dout.shape[1]).view(Always), np.zeros(dout.shape[1]).view(Always)
"""),
    "object_equal_always": inside_alt("""
class Equal:
    shape = dout.shape
    def __eq__(self, other): return True
    def __array__(self, *a, **k): raise TypeError("no")
    def __float__(self): return 0.0
return Equal(), Equal(), Equal()
"""),
    "huge_answer": inside_alt("import numpy as np\nreturn np.ones((2500, 2500)), np.ones(dout.shape[1]), np.ones(dout.shape[1])"),
}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("attacks"), Execute__timeout=CELL_TIMEOUT)
    students = {name: (changes, None) for name, changes in ATTACKS.items()}
    notebook, _, _ = run_pipeline(course, A1, students)
    return course, notebook


def hidden_lines():
    """Every line of the checks (the hidden tests) that a student could not know from the release."""
    release = (REPO / "assignments" / A1 / f"{A1}.ipynb").read_text()
    lines = set()
    for path in sorted((REPO / "grader" / "checks").glob("*.py")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if len(line) >= 25 and not line.startswith(("#", '"""')) and line not in release:
                lines.add(line)
    lines.add('check_here("a1_batchnorm_numpy", "bn_backward_alt", globals())')
    return lines


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_gains_nothing(attacked, attack):
    course, notebook = attacked
    scores = {part: score for part, (score, _) in auto_scores(course, A1, notebook, attack).items()}
    assert scores["bn_backward_alt"] == 0.0, f"{attack}: the wrong backward scored {scores['bn_backward_alt']}"
    assert sum(scores.values()) <= WRONG_TOTAL, f"{attack}: {sum(scores.values())} > {WRONG_TOTAL}: {scores}"
    if attack in ("plain_wrong", "delegation_profilers_off", "prints_test_source"):
        assert sum(scores.values()) == WRONG_TOTAL, f"{attack} should lose only bn_backward_alt: {scores}"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_feedback_holds_no_hidden_test(attacked, attack):
    course, notebook = attacked
    page = html.unescape((course["dir"] / "feedback" / attack / A1 / f"{notebook}.html").read_text())
    leaked = sorted(line for line in hidden_lines() if line in page)
    assert not leaked, f"{attack}: feedback shows hidden-test lines: {leaked[:5]}"
    graded = nbformat.read(course["dir"] / "autograded" / attack / A1 / f"{notebook}.ipynb", as_version=4)
    printed = "".join(o.get("text", "") + o.get("evalue", "") for c in graded.cells for o in c.get("outputs", []))
    assert "FOUND-HIDDEN-TEXT" not in printed, f"{attack}: the student's code found hidden-test text"
    if attack == "prints_test_source":  # the search ran (in the notebook's own call of the function)
        assert "WALK-DONE" in printed


# --- A2: delegating to PyTorch's batch norm, however it is reached ----------------

A2_RETURN = "        return weight.view(1, -1, 1, 1) * x_hat + bias.view(1, -1, 1, 1)"
A2_FULL = 19.0


def a2_forward(code):
    """Replace the Function's output by ``code`` (which must set ``out``): right values, not written by hand."""
    body = "".join("        " + line + "\n" for line in code.strip("\n").splitlines())
    return [("bn_function_code", A2_RETURN, body + "        return out")]


A2_ATTACKS = {
    "plain_delegation": a2_forward("out = torch.nn.functional.batch_norm(x, None, None, weight, bias, True, 0.1, eps)"),
    "delegation_profilers_off": a2_forward("""
import sys, threading
sys.setprofile(None); sys.settrace(None); threading.setprofile(None); threading.settrace(None)
out = torch.nn.functional.batch_norm(x, None, None, weight, bias, True, 0.1, eps)"""),
    "aten_operator": a2_forward(
        "out = torch.ops.aten.native_batch_norm.default(x, weight, bias, None, None, True, 0.1, eps)[0]"),
    "torch_decomposition": a2_forward("""
import torch._decomp.decompositions as decompositions
out = decompositions.native_batch_norm(x, weight, bias, None, None, True, 0.1, eps)[0]"""),
    "decomposition_source_from_disk": a2_forward("""
import ast, inspect, torch._decomp.decompositions as decompositions
tree = ast.parse(open(inspect.getsourcefile(decompositions)).read())
helper = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "native_batch_norm_helper")
helper.decorator_list = []
namespace = dict(vars(decompositions))
exec(compile(ast.Module(body=[helper], type_ignores=[]), "copy", "exec"), namespace)
out = namespace["native_batch_norm_helper"](x, weight, bias, None, None, True, 0.1, eps, False)[0]"""),
    "layer_norm_on_channels": a2_forward("""
rows = x.transpose(0, 1).reshape(x.shape[1], -1)
normed = torch.nn.functional.layer_norm(rows, rows.shape[1:], eps=eps)
out = normed.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)"""),
    "registrations_destroyed_via_gc": a2_forward("""
import gc
for obj in gc.get_objects():
    if type(obj).__name__ == "Library" and getattr(obj, "ns", "") == "aten":
        obj._destroy()
out = torch.nn.functional.batch_norm(x, None, None, weight, bias, True, 0.1, eps)"""),
}


@pytest.fixture(scope="module")
def attacked_a2(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("attacks_a2"), Execute__timeout=CELL_TIMEOUT)
    notebook, _, _ = run_pipeline(course, A2, {name: (changes, None) for name, changes in A2_ATTACKS.items()})
    return course, notebook


@pytest.mark.parametrize("attack", sorted(A2_ATTACKS))
def test_a2_delegation_scores_nothing(attacked_a2, attack):
    """The Function's forward gets the right numbers from PyTorch instead of computing
    them: that part scores 0 whatever route reached PyTorch, and nothing else is lost
    or gained."""
    course, notebook = attacked_a2
    scores = {part: score for part, (score, _) in auto_scores(course, A2, notebook, attack).items()}
    assert scores["bn_function_forward"] == 0.0, f"{attack}: {scores}"
    assert sum(scores.values()) <= A2_FULL - 2, f"{attack}: {scores}"
    # Stopped because the reference is not there, not by some accident of the attack.
    graded = nbformat.read(course["dir"] / "autograded" / attack / A2 / f"{notebook}.ipynb", as_version=4)
    (cell,) = [c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "bn_function_forward"]
    message = "".join(o.get("evalue", "") for o in cell.outputs)
    assert "not available while" in message, f"{attack}: {message}"

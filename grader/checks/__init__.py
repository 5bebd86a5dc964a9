"""The graded parts' checks, computed where student code never runs.

Each graded test cell of A1-A3 has a check here, keyed by its ``grade_id``.
A check draws fresh cases from the grading seed (:mod:`grader.hidden`) and
yields, for each case, a *request* (plain data: which notebook function to
call on which inputs, see :mod:`bnref.checking.driver`) and a *verify*
function. The student's kernel answers the requests with data; ``verify``
compares that data with the reference, in this process, and raises
:class:`CheckFailed` with the message the student reads. Nothing the
student's code does can reach a verify function, a reference value or the
verdict.

The same definition serves:

* ``nbgrader autograde`` (:class:`grader.sandbox_execute.SandboxedExecute`
  sends the requests to the sandboxed kernel and writes the verdict into
  the graded cell);
* a hidden test cell of the solution notebook, for the instructor's own run
  (:func:`check_here`, which calls the driver in the same process);
* anything else that can carry requests and answers (a web service).

Writing a check::

    @check("a1_batchnorm_numpy", "bn_forward_test", profile="numpy")
    def bn_forward_test(rng):
        x = rng.normal(size=(5, 3))
        request = call("batchnorm_forward", x, ...)
        def verify(result):
            out, cache = returned(result[0], "batchnorm_forward", 2)
            ...
        yield request, verify
"""
import dataclasses
import importlib
import secrets

import numpy as np

from grader import hidden
from bnref.checking import codec

MODULES = ("grader.checks.a1", "grader.checks.a2", "grader.checks.a3")

#: Kernel profiles (grader/sandbox.py): what the kernel can reach.
PROFILES = ("numpy", "no_norm", "plain", "triton")


class CheckFailed(AssertionError):
    """A graded part failed; the message is written for the student."""


@dataclasses.dataclass(frozen=True)
class Check:
    assignment: str
    part: str
    profile: str
    cases: object  # rng -> iterable of (request, verify)


#: (assignment, grade_id) -> Check; grade ids repeat across assignments.
CHECKS = {}


def check(assignment, part, profile):
    """Register ``cases(rng)`` as the check of graded part ``part`` of ``assignment``."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")

    def register(cases):
        CHECKS[assignment, part] = Check(assignment, part, profile, cases)
        return cases

    return register


def load():
    """Import every assignment's checks (a missing module is skipped)."""
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return CHECKS


def get(assignment, part):
    load()
    return CHECKS.get((assignment, part))


# --- requests --------------------------------------------------------------

def ref(name):
    """An argument of :func:`calls` that is the shared object ``name``."""
    return {"$ref": name}


def call(fn, *args, objects=None, standins=None):
    """A request that calls notebook function ``fn`` once."""
    return calls([(fn, args)], objects=objects, standins=standins)


def calls(sequence, objects=None, standins=None):
    """A request that calls notebook functions in order: ``[(fn, args), ...]``."""
    request = {"scenario": "calls", "calls": [{"fn": fn, "args": list(args)} for fn, args in sequence]}
    if objects:
        request["objects"] = objects
    if standins:
        request["standins"] = standins
    return request


def variable(name):
    """A request for the value of one notebook variable."""
    return {"scenario": "value", "name": name}


# --- reading answers -------------------------------------------------------

def fail(message):
    raise CheckFailed(message)


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


def raised(value, fn):
    """Fail when ``value`` is an exception the student's code raised."""
    if isinstance(value, codec.Raised):
        fail(f"{fn} raised {value!r}")
    if isinstance(value, codec.Opaque):
        fail(f"{fn} returned {value!r}, which is not a value the assignment asks for")
    return value


def returned(result, fn, length=None):
    """What one call returned; with ``length``, a tuple of that many items."""
    value = raised(result["returned"], fn)
    if length is not None:
        if not isinstance(value, (tuple, list)) or len(value) != length:
            fail(f"{fn} must return {length} values, got {_describe(value)}")
    return value


def array(value, what, shape=None):
    """``value`` as a float array (lists and numbers accepted), with ``shape`` if given."""
    if isinstance(value, (codec.Raised, codec.Opaque)) or isinstance(value, (dict, str)) or value is None:
        fail(f"{what} must be an array, got {_describe(value)}")
    try:
        out = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        fail(f"{what} must be an array of numbers, got {_describe(value)}")
    if shape is not None and out.shape != tuple(shape):
        fail(f"{what} has shape {out.shape}, expected {tuple(shape)}")
    return out


def close(got, want, rtol=1e-7, atol=1e-10):
    """Elementwise closeness that NaN never passes."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and bool(np.all(np.isfinite(got))) and bool(
        np.allclose(got, want, rtol=rtol, atol=atol))


def rel_error(x, y):
    """max |x - y| / max(1e-8, |x| + |y|), as bnref.gradcheck has it; NaN gives inf."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        return np.inf
    value = float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y)))) if x.size else 0.0
    return value if np.isfinite(value) else np.inf


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (codec.Raised, codec.Opaque)):
        return repr(value)
    return type(value).__name__


# --- running a check -------------------------------------------------------

def banner(part, seed):
    return f"hidden tests of {part}: seed {seed} (regrade with {hidden.SEED_ENV}={seed})"


def draw(assignment, part, seed=None):
    """The cases of ``part`` for ``seed``: ``(requests, verifies)``, the same for the same seed."""
    chk = get(assignment, part)
    if chk is None:
        raise KeyError(f"no check is registered for part {part!r} of {assignment!r}")
    seed = hidden.grading_seed() if seed is None else int(seed)
    rng = np.random.default_rng(hidden.part_seed(part, seed))
    requests, verifies = [], []
    for request, verify in chk.cases(rng):
        requests.append(request)
        verifies.append(verify)
    return requests, verifies


def prepare(assignment, part, seed=None):
    """The cases of ``part``: ``(request text, verifies, nonce)``."""
    requests, verifies = draw(assignment, part, seed)
    nonce = secrets.token_hex(8)
    return codec.dumps({"nonce": nonce, "cases": requests}), verifies, nonce


def judge(verifies, results):
    """Run the verify functions on decoded results; the first failure's message, or None."""
    if not isinstance(results, list) or len(results) != len(verifies):
        return ("the grader got a malformed answer from the notebook "
                f"({_describe(results)} for {len(verifies)} cases)")
    for verify, result in zip(verifies, results):
        try:
            if isinstance(result, codec.Raised):
                fail(result.message if result.type == "Missing" else
                     f"the grader could not run this part: {result!r}")
            verify(result)
        except CheckFailed as err:
            return str(err)
        except Exception as err:  # a malformed answer the verify code tripped over
            return f"the answer to this part is malformed ({type(err).__name__}: {err})"
    return None


def read_answer(outputs, nonce, max_bytes=16 << 20):
    """The decoded results in a cell's outputs, or an error message string."""
    import json

    found = None
    for output in outputs:
        data = output.get("data", {}) if output.get("output_type") == "display_data" else {}
        payload = data.get(codec.MIME)
        if isinstance(payload, dict) and payload.get("nonce") == nonce:
            found = payload
    if found is None:
        return None, ("the grader got no answer from the notebook: did a cell stop the kernel, "
                      "or replace or hide the grader's calls?")
    try:
        if len(json.dumps(found.get("results"))) > 2 * max_bytes:
            raise codec.DecodeError(f"the answer is larger than the limit of {max_bytes} bytes")
        return codec.decode(found.get("results"), max_bytes=max_bytes), None
    except codec.DecodeError as err:
        return None, f"the answer from the notebook is malformed: {err}"


def check_here(assignment, part, namespace, seed=None):
    """Run ``part``'s check against functions in ``namespace`` in this process.

    For the instructor's own run of the solution notebook (the hidden test
    cells call it); grading never does this: it sends the same requests to
    the sandboxed kernel.
    """
    from bnref.checking import driver

    text, verifies, nonce = prepare(assignment, part, seed)
    seed = hidden.grading_seed() if seed is None else int(seed)
    print(banner(part, seed))
    request = codec.loads(text)
    results = codec.decode(driver.run(namespace, request))
    message = judge(verifies, results)
    if message:
        raise CheckFailed(message)

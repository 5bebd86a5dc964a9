"""What each kernel profile hides from the grading kernel's file system.

Used by :func:`grader.sandbox.bwrap_command`. Three kinds of bind:

* a *stub* over a reference module (``bnref.functional``, ``bnref.nn``,
  ``bnref.fold``, ``bnref.distributed``, ``bnref.triton``), and over the
  whole ``torch`` package in the ``numpy`` profile: importing it raises
  an ImportError that says why;
* a *sanitized copy* over a module that must stay importable but holds a
  reference implementation of a graded part: every function whose name
  matches the pattern keeps its signature and decorators and raises
  instead (torch's Python decompositions of the normalization ops,
  ``torch.nn.utils.fusion``, ``bnref.experiments.population_statistics_``);
* an empty, read-only tmpfs over the ``__pycache__`` folders next to those
  modules, so the original bytecode cannot be loaded from disk either.

Everything else of the environment stays as it is.
"""
import ast
import functools
import importlib.util
import os
import re
import tempfile

NORM_FUNCTIONS = r"(batch|layer|group|instance)_?norm"
HIDDEN_BNREF = ("functional.py", "nn.py", "fold.py", "distributed.py", "_checks.py")
STUB = ("raise ImportError({msg!r})\n")


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(os.path.abspath(spec.origin))


@functools.lru_cache(maxsize=None)
def _workdir():
    return tempfile.mkdtemp(prefix="bn-grader-hide-")


def _write(name, text):
    path = os.path.join(_workdir(), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def stub(name, message):
    return _write(f"stubs/{name}.py", STUB.format(msg=message))


class _Refuse(ast.NodeTransformer):
    def __init__(self, pattern, message):
        self.pattern, self.message, self.count = re.compile(pattern), message, 0

    def _replace(self, node):
        if self.pattern.search(node.name):
            text = self.message.format(name=node.name)
            node.body = [ast.Raise(exc=ast.Call(func=ast.Name("RuntimeError", ast.Load()),
                                                args=[ast.Constant(text)], keywords=[]), cause=None)]
            self.count += 1
        return node

    visit_FunctionDef = _replace
    visit_AsyncFunctionDef = _replace


@functools.lru_cache(maxsize=None)
def sanitized_copy(path, pattern, message):
    """A copy of the module at ``path`` whose functions matching ``pattern`` raise."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    transformer = _Refuse(pattern, message)
    tree = ast.fix_missing_locations(transformer.visit(tree))
    if transformer.count == 0:
        raise RuntimeError(f"{path}: no function matches {pattern!r}; has the module changed?")
    name = "sanitized/" + path.strip(os.sep).replace(os.sep, "__")
    return _write(name, "# Sanitized for grading (grader/hide.py)\n" + ast.unparse(tree) + "\n")


def _pycache(folder):
    cache = os.path.join(folder, "__pycache__")
    return ["--perms", "0555", "--tmpfs", cache] if os.path.isdir(cache) else []


def binds(profile):
    """bwrap arguments (to come after the read-only binds of the environment)."""
    args = []
    refused = "{name} is not available while assignments are graded"
    bnref_dir = package_dir("bnref")
    if bnref_dir:
        for name in HIDDEN_BNREF:
            target = os.path.join(bnref_dir, name)
            if os.path.exists(target):
                args += ["--ro-bind", stub(f"bnref_{name[:-3]}", refused.format(
                    name=f"bnref.{name[:-3]}") + ": the graded parts replace it"), target]
        experiments = os.path.join(bnref_dir, "experiments.py")
        if os.path.exists(experiments):
            args += ["--ro-bind", sanitized_copy(experiments, r"^population_statistics_$",
                                                 refused + " (it computes a graded part)"), experiments]
        triton_dir = os.path.join(bnref_dir, "triton")
        if os.path.isdir(triton_dir):
            args += ["--perms", "0555", "--tmpfs", triton_dir, "--ro-bind",
                     stub("bnref_triton", refused.format(name="bnref.triton") + ": the graded parts replace it"),
                     os.path.join(triton_dir, "__init__.py")]
        args += _pycache(bnref_dir)
    torch_dir = package_dir("torch")
    if torch_dir and profile == "numpy":
        args += ["--perms", "0555", "--tmpfs", torch_dir, "--ro-bind",
                 stub("torch", "torch is not available while A1 is graded: its parts are NumPy only"),
                 os.path.join(torch_dir, "__init__.py")]
    elif torch_dir and profile in ("no_norm", "triton"):
        message = refused + " (a reference implementation of a graded part)"
        for rel, pattern in ((("_decomp", "decompositions.py"), NORM_FUNCTIONS),
                             (("_refs", "nn", "functional", "__init__.py"), NORM_FUNCTIONS),
                             (("nn", "utils", "fusion.py"), r"^fuse")):
            target = os.path.join(torch_dir, *rel)
            if os.path.exists(target):
                args += ["--ro-bind", sanitized_copy(target, pattern, message), target]
                args += _pycache(os.path.dirname(target))
    return args

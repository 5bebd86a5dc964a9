"""Helpers for hidden tests: a part scores only if the student wrote it.

:func:`forbid_reference` runs a block of student code under a profiler
(``sys.setprofile``) that records every call into a reference
implementation. Watching calls, rather than swapping module attributes, also
catches the names a student bound at import
(``from bnref.functional import batchnorm_forward as bn``), references kept
in lists or closures, and C functions such as ``torch.batch_norm``.

The ``trusted_*`` stand-ins are correct implementations a hidden test puts
in place of a student's own helper for the length of one test, so that,
for example, a bug in ``batchnorm_forward`` costs the forward part and not
also the spatial part that calls it. Calls made from inside a stand-in are
allowed (the stand-ins are the grader's, not the student's).
"""

import contextlib
import os
import sys

_HERE = os.path.abspath(__file__)
_BNREF_FILES = ("functional.py", "nn.py", "fold.py")

#: What each kind of reference covers, in the message a student reads.
KINDS = {
    "bnref": "the reference package (bnref.functional, bnref.nn, bnref.fold)",
    "torch_bn": "PyTorch's normalization routines (torch.nn.functional.batch_norm, layer_norm, "
                "group_norm, instance_norm, torch.nn.BatchNorm*)",
    "torch": "PyTorch (any torch function, autograd included)",
    "autograd": "autograd (torch.autograd.grad, Tensor.backward, torch.func)",
    "bnref_triton": "the reference Triton kernels (bnref.triton)",
}


class ReferenceUsed(AssertionError):
    """Raised when graded code called an implementation it had to replace."""


def _package_dir(name):
    spec = __import__("importlib.util").util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(os.path.abspath(spec.origin))


def _matcher(kinds):
    """A function ``(code_file, code_name) -> bool`` for Python calls, and a
    set of substrings that mark forbidden C functions."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds must be among {sorted(KINDS)}, got {sorted(unknown)}")
    bnref_dir, torch_dir = _package_dir("bnref"), _package_dir("torch")
    files, c_names = set(), set()
    if "bnref" in kinds and bnref_dir:
        files |= {os.path.join(bnref_dir, f) for f in _BNREF_FILES}
    if "torch_bn" in kinds:
        c_names |= {"batch_norm", "instance_norm", "layer_norm", "group_norm"}
        if torch_dir:
            files |= {os.path.join(torch_dir, "nn", "modules", f) for f in ("batchnorm.py", "normalization.py",
                                                                           "instancenorm.py")}
    if "bnref_triton" in kinds and bnref_dir:
        triton_dir = os.path.join(bnref_dir, "triton")
        if os.path.isdir(triton_dir):
            files |= {os.path.join(triton_dir, f) for f in os.listdir(triton_dir) if f.endswith(".py")}
    autograd = "autograd" in kinds and torch_dir
    if autograd:
        c_names.add("run_backward")
        files.add(os.path.join(torch_dir, "autograd", "functional.py"))

    any_torch = "torch" in kinds and torch_dir

    def forbidden(filename, name):
        if filename in files:
            return True
        if any_torch and filename.startswith(torch_dir + os.sep):
            return True
        if torch_dir and filename.startswith(torch_dir):
            if any(c in name for c in c_names if c != "run_backward"):
                return True
            if autograd:
                rel = filename[len(torch_dir) + 1:]
                if rel == os.path.join("autograd", "__init__.py") and name in ("grad", "backward"):
                    return True
                if rel == "_tensor.py" and name == "backward":
                    return True
                if rel.startswith("_functorch"):
                    return True
        return False

    return forbidden, c_names


@contextlib.contextmanager
def forbid_reference(*kinds, namespace=None, replace=None):
    """Run the block; fail it if the code inside called a forbidden reference.

    Args:
        *kinds: any of the keys of :data:`KINDS`.
        namespace: the student's globals (``globals()`` in the notebook), where
            ``replace`` puts its stand-ins.
        replace: ``{name: object}`` set in ``namespace`` for the block and
            restored after it (names that did not exist are removed again).

    Raises:
        ReferenceUsed: after the block, naming what was called.
    """
    forbidden, c_names = _matcher(kinds)
    replace = dict(replace or {})
    if replace and namespace is None:
        raise ValueError("replace needs the namespace to put the stand-ins in")
    missing = object()
    saved = {name: namespace.get(name, missing) for name in replace}
    calls, depth = [], [0]

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename == _HERE and code.co_name.startswith("trusted"):
                depth[0] += 1
            elif depth[0] == 0 and forbidden(code.co_filename, code.co_name):
                calls.append(f"{frame.f_globals.get('__name__', '?')}.{code.co_name}")
        elif event == "return":
            code = frame.f_code
            if code.co_filename == _HERE and code.co_name.startswith("trusted"):
                depth[0] -= 1
        elif event == "c_call" and depth[0] == 0:
            name = getattr(arg, "__name__", "") or ""
            if any(c in name for c in c_names):
                calls.append(name)
            elif "torch" in kinds and _is_torch_builtin(arg):
                calls.append(f"torch.{name}")

    previous = sys.getprofile()
    try:
        if namespace is not None:
            namespace.update(replace)
        sys.setprofile(profile)
        yield calls
    finally:
        sys.setprofile(previous)
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value
    if calls:
        # Name what the student called, not the reference's private helpers.
        public = sorted({c for c in calls if not c.rsplit(".", 1)[-1].startswith(("_", "<"))})
        what = " or ".join(KINDS[k] for k in kinds)
        raise ReferenceUsed(
            f"this part must be implemented without {what}; "
            f"your code called {', '.join(public or sorted(set(calls)))}"
        )


def _is_torch_builtin(function):
    """Whether a C function belongs to torch (``torch.tensor``, ``Tensor.sum``, ...)."""
    module = getattr(function, "__module__", None) or ""
    owner = getattr(function, "__self__", None)
    owner_module = getattr(type(owner), "__module__", "") or "" if owner is not None else ""
    return module.split(".")[0] == "torch" or owner_module.split(".")[0] == "torch"


# --- stand-ins for the student's own helpers (A1) -------------------------

def trusted_batchnorm_forward(x, gamma, beta, bn_param):
    from bnref.functional import batchnorm_forward
    return batchnorm_forward(x, gamma, beta, bn_param)


def trusted_batchnorm_backward(dout, cache):
    from bnref.functional import batchnorm_backward
    return batchnorm_backward(dout, cache)


def trusted_batchnorm_backward_alt(dout, cache):
    from bnref.functional import batchnorm_backward_alt
    return batchnorm_backward_alt(dout, cache)


def trusted_a1_helpers():
    """The A1 names a spatial part may call, mapped to correct stand-ins."""
    return {
        "batchnorm_forward": trusted_batchnorm_forward,
        "batchnorm_backward": trusted_batchnorm_backward,
        "batchnorm_backward_alt": trusted_batchnorm_backward_alt,
    }


def bn_train_cache(x, gamma, eps):
    """The train-mode cache A1 asks for, computed here (not by the student).

    Keys as in the assignment: mode, x_hat, xmu, var, std, invstd, gamma, eps, N.
    """
    import numpy as np

    mean = x.mean(axis=0)
    xmu = x - mean
    var = (xmu**2).mean(axis=0)
    std = np.sqrt(var + eps)
    invstd = 1.0 / std
    return dict(mode="train", x_hat=xmu * invstd, xmu=xmu, var=var, std=std,
                invstd=invstd, gamma=gamma, eps=eps, N=x.shape[0])


# --- stand-in for the student's autograd.Function (A2) --------------------

def trusted_batchnorm_function():
    """A correct ``torch.autograd.Function`` with the A2 contract:
    ``apply(x, weight, bias, eps)``, saves ``(x_hat, invstd, weight)``."""
    import torch

    class TrustedBatchNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, eps):
            return trusted_function_forward(ctx, x, weight, bias, eps)

        @staticmethod
        def backward(ctx, dout):
            return trusted_function_backward(ctx, dout)

    return TrustedBatchNormFunction


def trusted_function_forward(ctx, x, weight, bias, eps):
    dims = (0, 2, 3)
    mean = x.mean(dim=dims, keepdim=True)                          # 1,C,1,1
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)           # 1,C,1,1
    invstd = (var + eps).rsqrt()                                   # 1,C,1,1
    x_hat = (x - mean) * invstd                                    # N,C,H,W
    ctx.save_for_backward(x_hat, invstd, weight)
    return x_hat * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def trusted_function_backward(ctx, dout):
    x_hat, invstd, weight = ctx.saved_tensors
    dims = (0, 2, 3)
    m = dout.numel() // dout.shape[1]
    dbias = dout.sum(dim=dims)                                     # C
    dweight = (dout * x_hat).sum(dim=dims)                         # C
    scale = weight.view(1, -1, 1, 1) * invstd / m                  # 1,C,1,1
    dx = scale * (m * dout - dbias.view(1, -1, 1, 1) - x_hat * dweight.view(1, -1, 1, 1))
    return dx, dweight, dbias, None


# --- stand-in for the student's statistics kernel (A3) --------------------

def trusted_bn_stats(x):
    """Per-channel mean and biased variance of an ``(N, C)`` tensor, as A3's
    ``bn_stats`` returns them: float32 tensors of shape ``(C,)`` on x's device,
    computed in float64 (exact to float32 rounding whatever the mean)."""
    xd = x.double()
    mean = xd.mean(dim=0)
    var = ((xd - mean) ** 2).mean(dim=0)
    return mean.float(), var.float()


# --- A3: arithmetic inside Triton kernels only ----------------------------

#: What a Triton wrapper may do with torch: allocate, read shapes and launch.
WRAPPER_ALLOWED = frozenset({
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "new_empty", "new_zeros", "new_ones", "new_full", "size", "stride", "numel", "nelement", "dim",
    "ndimension", "is_contiguous", "contiguous", "data_ptr", "element_size", "storage_offset", "get_device",
    "is_floating_point", "untyped_storage", "__get__", "__len__", "__repr__", "__format__", "__hash__",
    "view", "reshape", "to", "cuda", "__getitem__",
})


class ArithmeticOutsideKernels(AssertionError):
    """Raised when a Triton wrapper computed with torch instead of in a kernel."""


@contextlib.contextmanager
def kernels_only():
    """Run the block; fail it if the student's own code did arithmetic with torch.

    A torch call counts when the nearest caller outside torch is neither Triton
    (its interpreter moves data with torch) nor this module (the stand-ins).
    Allowed: :data:`WRAPPER_ALLOWED` (allocation, shapes, views, launches).
    """
    import torch
    from torch.overrides import TorchFunctionMode

    torch_dir, triton_dir = _package_dir("torch"), _package_dir("triton")
    skip = tuple(d + os.sep for d in (torch_dir,) if d)
    trusted = tuple(d + os.sep for d in (triton_dir,) if d)
    calls = []

    def student_caller():
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if name == _HERE or name.startswith(trusted):
                return False
            if not (name.startswith(skip) or "torch/overrides" in name):
                return True
            frame = frame.f_back
        return False

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "") or ""
            if name not in WRAPPER_ALLOWED and student_caller():
                calls.append(name)
            return func(*args, **(kwargs or {}))

    with Watch():
        yield calls
    if calls:
        raise ArithmeticOutsideKernels(
            "this part's arithmetic must run inside @triton.jit kernels; the wrapper may only allocate "
            f"tensors, read shapes and launch kernels, but your code called torch's {', '.join(sorted(set(calls)))}"
        )

"""Runs inside the grading kernel: watch a hand-written backward pass for autograd.

A2 asks for ``BatchNorm2dFunction.backward`` written by hand. Whether a call
into autograd happened can only be seen in the process that runs the
student's code, so :func:`watch` records, under ``sys.setprofile``, every
call into autograd's entry points (``torch.autograd.grad``,
``torch.autograd.backward``, ``Tensor.backward``, ``torch.autograd.functional``,
``torch.func`` / functorch, and the engine's ``run_backward``) made while the
block runs. The record is plain data (a list of names) that the scenario
answers with; the trusted grader fails the part when it is not empty.

Remaining risk, documented on purpose: this watcher lives in the student's
process, so a student who knows it is there can switch it off (replace
``sys.setprofile``, edit this module, run the work in another thread). It is
a check against honest mistakes and casual shortcuts, not a proof. The
other parts' rules need no watcher: the kernel profile removes the
normalization routines a part could delegate to.
"""
import contextlib
import os
import sys


def _torch_dir():
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(os.path.abspath(spec.origin))


def _forbidden(torch_dir):
    autograd_init = os.path.join(torch_dir, "autograd", "__init__.py")
    functional = os.path.join(torch_dir, "autograd", "functional.py")
    tensor_file = os.path.join(torch_dir, "_tensor.py")
    functorch = os.path.join(torch_dir, "_functorch") + os.sep
    func_dir = os.path.join(torch_dir, "func") + os.sep

    def forbidden(filename, name):
        if filename == autograd_init and name in ("grad", "backward"):
            return True
        if filename == tensor_file and name == "backward":
            return True
        return filename == functional or filename.startswith(functorch) or filename.startswith(func_dir)

    return forbidden


@contextlib.contextmanager
def watch():
    """Run the block; yield a list that collects the autograd calls made inside it."""
    seen = []
    torch_dir = _torch_dir()
    if torch_dir is None:
        yield seen
        return
    forbidden = _forbidden(torch_dir)

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if forbidden(code.co_filename, code.co_name):
                seen.append(f"{frame.f_globals.get('__name__', '?')}.{code.co_name}")
        elif event == "c_call":
            name = getattr(arg, "__name__", "") or ""
            if name == "run_backward" or name == "_run_backward":
                seen.append(f"autograd engine {name}")

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)

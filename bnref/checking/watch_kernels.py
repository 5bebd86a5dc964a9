"""Watches, in the grading kernel, that A3's wrappers leave the arithmetic to Triton kernels.

A3's rule: the arithmetic of each part happens inside ``@triton.jit``
functions; the Python wrappers only allocate outputs, read shapes and launch
kernels. Whether a wrapper computed with torch can only be seen while it
runs, so :func:`watch` runs the student's call under a
``TorchFunctionMode`` and collects the names of the torch functions the
student's own code called outside :data:`WRAPPER_ALLOWED`. The list is
returned as data with the answer; the trusted check
(:mod:`grader.checks.a3`) fails the part when it is not empty. Nothing here
raises or decides a verdict.

Remaining risk, documented: this watcher runs in the student's process, so
student code can switch it off (pop the mode, patch this module, call torch
through a frame that looks like Triton's). The check's numbers are
computed outside the kernel and cannot be forged this way; only the
"kernels only" rule rests on this watcher. Delegation to a library
normalization routine or to ``bnref.triton`` does not rest on it either:
the ``triton`` kernel profile makes those unavailable.
"""
import contextlib
import os
import sys

_KERNEL_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: What a Triton wrapper may do with torch: allocate, read shapes and launch.
WRAPPER_ALLOWED = frozenset({
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "new_empty", "new_zeros", "new_ones", "new_full", "size", "stride", "numel", "nelement", "dim",
    "ndimension", "is_contiguous", "contiguous", "data_ptr", "element_size", "storage_offset", "get_device",
    "is_floating_point", "untyped_storage", "__get__", "__len__", "__repr__", "__format__", "__hash__",
    "view", "reshape", "to", "cuda", "__getitem__",
})


def _package_dir(name):
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(os.path.abspath(spec.origin)) + os.sep


@contextlib.contextmanager
def watch():
    """Run the block; yield the list of torch calls the student's code made outside the allowed set.

    A torch call counts when the nearest caller outside torch is neither
    Triton (its interpreter moves data with torch) nor this kernel package
    (the grader's stand-ins and scenarios).
    """
    from torch.overrides import TorchFunctionMode

    torch_dir, triton_dir = _package_dir("torch"), _package_dir("triton")
    skip = tuple(d for d in (torch_dir,) if d)
    trusted = tuple(d for d in (triton_dir, _KERNEL_PACKAGE) if d)
    seen = []

    def student_caller():
        frame = sys._getframe(2)  # the caller of __torch_function__
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(trusted):
                return False
            if not (name.startswith(skip) or "torch/overrides" in name):
                return True
            frame = frame.f_back
        return False

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "") or ""
            if name not in WRAPPER_ALLOWED and student_caller():
                seen.append(name)
            return func(*args, **(kwargs or {}))

    with Watch():
        yield seen

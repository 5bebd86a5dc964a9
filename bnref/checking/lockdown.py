"""What a kernel profile takes away, applied before any student code runs.

The file-system part of each profile (no torch at all for ``numpy``; no
``bnref`` reference modules; torch's Python decompositions of the
normalization ops and ``torch.nn.utils.fusion`` replaced by copies whose
functions refuse) is done by the sandbox with read-only binds
(:mod:`grader.sandbox`). What is left is in torch's C++ dispatcher: for the
``no_norm`` and ``triton`` profiles, :func:`apply` registers, for every ATen
normalization operator and every backend, a kernel that raises. The
registration handle is a pybind object the garbage collector does not
track; its last Python reference is dropped after an extra reference count
is taken, so no Python code in the kernel can reach it to take the
registration back, and the original C++ kernels cannot be called once they
are shadowed. Student code that writes its own normalization from basic
tensor operations is unaffected: that is the assignment.
"""
import ctypes
import warnings

NORM_OPS = (
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_with_update_functional",
    "_batch_norm_no_update", "batch_norm_stats", "batch_norm_elemt", "batch_norm_gather_stats",
    "batch_norm_gather_stats_with_counts", "batch_norm_backward_reduce", "batch_norm_backward_elemt",
    "batch_norm_update_stats", "native_batch_norm_backward", "native_layer_norm", "native_layer_norm_backward",
    "native_group_norm", "native_group_norm_backward", "cudnn_batch_norm", "miopen_batch_norm",
    "_batch_norm_impl_index", "batch_norm", "instance_norm", "layer_norm", "group_norm",
)
KEYS = ("CPU", "CUDA", "MkldnnCPU", "NestedTensorCPU", "NestedTensorCUDA",
        "CompositeImplicitAutograd", "CompositeExplicitAutograd")
MESSAGE = ("{op} is not available while this assignment is graded: PyTorch's normalization routines "
           "(batch_norm, layer_norm, group_norm, instance_norm and their native kernels) are switched off, "
           "so the graded parts must compute the statistics themselves")


def _refusal(op):
    def refuse(*args, **kwargs):
        raise RuntimeError(MESSAGE.format(op=op))

    return refuse


def switch_off_norm_kernels():
    """Shadow every ATen normalization kernel with one that raises; return how many were registered."""
    import torch

    handle = torch._C._dispatch_library("IMPL", "aten", "", "bnref/checking/lockdown.py", 0)
    registered = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        for op in NORM_OPS:
            for key in KEYS:
                try:
                    handle.impl(op, key, _refusal(f"torch.ops.aten.{op}"), False)
                    registered += 1
                except RuntimeError:
                    pass  # an operator this torch build does not have
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(handle))  # never freed, never reachable
    del handle
    return registered


def apply(profile):
    if profile in ("no_norm", "triton"):
        if switch_off_norm_kernels() == 0:
            raise RuntimeError("no normalization kernel could be switched off")

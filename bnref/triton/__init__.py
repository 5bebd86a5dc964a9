"""Batch norm in Triton: the GPU reference kernels of the course.

The same kernels run compiled on an NVIDIA GPU, or through Triton's
interpreter on the CPU (slow, but exact to the same float32 arithmetic).
``MODE`` says which:

* ``'gpu'``: tensors must be CUDA tensors.
* ``'interpreter'``: ``TRITON_INTERPRET=1`` was set (by you, or by this
  package when it found no GPU and the variable unset); tensors live on the CPU.
* ``'unavailable'``: no GPU and ``TRITON_INTERPRET=0``, or triton was imported
  before ``TRITON_INTERPRET=1`` was set (``WHY`` says which); calls raise.

The interpreter replaces Triton's own library when ``triton`` is first
imported, so the variable must be set before that (or import this package
first). :func:`describe` says it in words.

API: :func:`batch_norm_train`, :func:`batch_norm_backward`,
:func:`batch_norm_eval`, :class:`BatchNormFunction` (autograd),
:func:`batch_norm` (like ``torch.nn.functional.batch_norm``) and the module
:class:`BatchNorm2d` (also for (N, C) input). :func:`plan` says how an input is
split between programs (also as on a GPU with a given number of SMs, without
one), :func:`explain` says it in words, :func:`tiling` forces tile sizes.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    # Without a GPU the only way to run Triton is its interpreter. It takes
    # effect only if triton itself is not imported yet (MODE says if it did).
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402  (the top-level Triton package, not this one)

from bnref.triton.module import BatchNorm2d, BatchNormFunction, batch_norm  # noqa: E402
from bnref.triton.ops import (  # noqa: E402
    MIN_PASSES,
    MODE,
    WHY,
    Plan,
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_train,
    explain,
    plan,
    tiling,
)

__all__ = ["MODE", "describe", "batch_norm_train", "batch_norm_backward", "batch_norm_eval",
           "BatchNormFunction", "batch_norm", "BatchNorm2d", "tiling", "explain", "plan", "Plan",
           "MIN_PASSES"]


def describe():
    """One sentence: where the kernels run, with which Triton and torch."""
    versions = f"Triton {triton.__version__}, torch {torch.__version__}"
    if MODE == "gpu":
        return (f"bnref.triton: compiled kernels on {torch.cuda.get_device_name()} "
                f"({versions}); pass CUDA tensors.")
    if MODE == "interpreter":
        return (f"bnref.triton: Triton's interpreter on the CPU, TRITON_INTERPRET=1 "
                f"({versions}); pass CPU tensors. Correct but slow: keep shapes small.")
    return f"bnref.triton: unavailable ({versions}): {WHY}."

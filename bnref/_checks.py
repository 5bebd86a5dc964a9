"""Argument checks shared by bnref's modules.

:mod:`bnref.functional` and :mod:`bnref.nn` validate their inputs here, so
that bad input fails early with one message per mistake, naming the
argument, what arrived and what was expected, instead of broadcasting into a
silently wrong answer.
"""

import numbers

import numpy as np


def check_float_array(name, value, ndim):
    """Require a floating-point ``np.ndarray`` with ``ndim`` dimensions."""
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy.ndarray, got {type(value).__name__}"
        )
    if value.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions, got {value.ndim} "
            f"(shape {value.shape})"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(
            f"{name} must have a floating-point dtype, got {value.dtype} "
            "(convert explicitly, e.g. x.astype(np.float64))"
        )


def check_param_shape(name, value, shape):
    """Require a floating-point array of exactly ``shape``."""
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy.ndarray of shape {shape}, "
            f"got {type(value).__name__}"
        )
    if value.shape != tuple(shape):
        raise ValueError(
            f"{name} must have shape {tuple(shape)} to match the input, "
            f"got {value.shape}"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(
            f"{name} must have a floating-point dtype, got {value.dtype}"
        )


def check_param_dict(name, value):
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict, got {type(value).__name__}")


def is_real_number(value):
    """A real scalar (NumPy scalars included), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_eps(eps):
    if not is_real_number(eps) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")


def check_momentum(momentum, allow_none=False):
    """A number in [0, 1]; with ``allow_none``, None too (torch's cumulative average)."""
    if allow_none and momentum is None:
        return
    if not is_real_number(momentum) or not 0.0 <= momentum <= 1.0:
        expected = "None or a number" if allow_none else "a number"
        raise ValueError(f"momentum must be {expected} in [0, 1], got {momentum!r}")


def check_mode(mode):
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")


def check_batch_size(n, shape):
    """Training statistics need at least two values per channel (as in PyTorch)."""
    if n <= 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input of shape {shape}"
        )

"""Numerical gradients for checking hand-written backward passes."""

import numpy as np


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Central-difference gradient of ``sum(f(x) * df)`` with respect to ``x``.

    ``x`` is perturbed in place one element at a time and restored, so ``f``
    must read ``x`` afresh on every call (close over it, as in CS231n).

    Args:
        f: function of one array returning an array of ``df``'s shape.
        x: point at which to differentiate; modified during the call, restored after.
        df: upstream gradient, the same shape as ``f(x)``.
        h: step size.

    Returns:
        Array of ``x``'s shape.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a floating-point numpy.ndarray, got {type(x).__name__}"
                         f"{'' if not isinstance(x, np.ndarray) else ' of dtype ' + str(x.dtype)}")
    if not h > 0:
        raise ValueError(f"h must be positive, got {h!r}")
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)
        if pos.shape != np.shape(df):  # broadcasting would give a wrong gradient silently
            raise ValueError(f"df must have the shape of f(x), {pos.shape}, got {np.shape(df)}")
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def rel_error(x, y):
    """Largest elementwise relative error, ``max |x - y| / max(1e-8, |x| + |y|)``."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))

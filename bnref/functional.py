"""Batch normalization and its variants from scratch, in NumPy.

The signatures follow the CS231n convention: ``forward`` returns
``(out, cache)`` and ``backward(dout, cache)`` returns the gradients.
Every line carries a shape comment. ``N`` is the batch size, ``D`` the
feature size of 2-D input, ``C, H, W`` channels, height and width.

Statistics are computed in two passes (the mean, then the mean of the squared
deviations from it), never as ``E[x^2] - E[x]^2``: the shortcut cancels
catastrophically when the mean is large compared with the spread.

NaN in the input propagates to the output (and to the running statistics in
train mode): a NaN is never silently turned into a number.
"""

import numpy as np

from bnref._checks import (
    check_batch_size,
    check_eps,
    check_float_array,
    check_mode,
    check_momentum,
    check_param_dict,
    check_param_shape,
)

__all__ = [
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
]


def _mean(a, axis, keepdims=False):
    """Mean accumulated in at least float64, returned in ``a``'s dtype.

    NumPy sums down a non-contiguous axis one element at a time; in float32
    that loses the digits that matter when the mean is large (1e4) and the
    spread small (1).
    """
    acc = np.promote_types(a.dtype, np.float64)
    return a.mean(axis=axis, dtype=acc, keepdims=keepdims).astype(a.dtype)


def _running_buffer(bn_param, key, fill, D, dtype):
    """Fetch ``bn_param[key]`` (creating it when missing) and check its shape."""
    if key not in bn_param or bn_param[key] is None:
        bn_param[key] = np.full(D, fill, dtype=dtype)
    buf = bn_param[key]
    check_param_shape(f"bn_param['{key}']", buf, (D,))
    return buf


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of fully connected activations.

    In train mode the batch mean and (biased) variance normalize ``x`` and
    update the running statistics in place with an exponentially weighted
    average, ``running = momentum * running + (1 - momentum) * batch_stat``.
    In test mode the running statistics normalize ``x`` and nothing changes.

    Args:
        x: input of shape (N, D), floating point.
        gamma: scale of shape (D,).
        beta: shift of shape (D,).
        bn_param: dict with ``mode`` ('train' or 'test'), optional ``eps``
            (default 1e-5), ``momentum`` (EWA decay, default 0.9),
            ``running_mean`` and ``running_var`` of shape (D,) (created as
            zeros and ones when missing).

    Returns:
        out: shape (N, D).
        cache: what :func:`batchnorm_backward` needs.
    """
    check_float_array("x", x, 2)
    N, D = x.shape
    check_param_shape("gamma", gamma, (D,))
    check_param_shape("beta", beta, (D,))
    check_param_dict("bn_param", bn_param)
    mode = bn_param.get("mode")
    check_mode(mode)
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    check_eps(eps)
    check_momentum(momentum)
    running_mean = _running_buffer(bn_param, "running_mean", 0.0, D, x.dtype)
    running_var = _running_buffer(bn_param, "running_var", 1.0, D, x.dtype)

    if mode == "train":
        check_batch_size(N, x.shape)
        mean = _mean(x, axis=0)             # D
        xmu = x - mean                      # N,D
        sq = xmu**2                         # N,D
        var = _mean(sq, axis=0)             # D    biased: divide by N
        std = np.sqrt(var + eps)            # D
        invstd = 1.0 / std                  # D
        x_hat = xmu * invstd                # N,D
        out = gamma * x_hat + beta          # N,D
        running_mean *= momentum            # D    in place: the caller's
        running_mean += (1 - momentum) * mean  # array is the state
        running_var *= momentum
        running_var += (1 - momentum) * var
        cache = dict(mode=mode, x_hat=x_hat, xmu=xmu, std=std, invstd=invstd,
                     gamma=gamma, N=N)
    else:
        invstd = 1.0 / np.sqrt(running_var + eps)    # D
        x_hat = (x - running_mean) * invstd          # N,D
        out = gamma * x_hat + beta                   # N,D
        cache = dict(mode=mode, x_hat=x_hat, invstd=invstd, gamma=gamma, N=N)
    return out, cache


def _check_cache(dout, cache):
    check_param_dict("cache", cache)
    check_float_array("dout", dout, 2)
    if dout.shape != cache["x_hat"].shape:
        raise ValueError(
            f"dout must have the forward output's shape {cache['x_hat'].shape}, "
            f"got {dout.shape}"
        )


def _test_mode_backward(dout, cache):
    """In test mode the statistics are constants: BN is an affine map."""
    dbeta = dout.sum(axis=0)                            # D
    dgamma = (dout * cache["x_hat"]).sum(axis=0)        # D
    dx = dout * cache["gamma"] * cache["invstd"]        # N,D
    return dx, dgamma, dbeta


def batchnorm_backward(dout, cache):
    """Backward pass of batch normalization, node by node through the graph.

    The forward graph is ``mean -> xmu -> sq -> var -> std -> invstd ->
    x_hat -> out``; each gradient below is one node's local derivative times
    the gradient flowing into it.

    Args:
        dout: upstream gradient of shape (N, D).
        cache: from :func:`batchnorm_forward`.

    Returns:
        dx (N, D), dgamma (D,), dbeta (D,).
    """
    _check_cache(dout, cache)
    if cache["mode"] == "test":
        return _test_mode_backward(dout, cache)
    x_hat, xmu, std, invstd = cache["x_hat"], cache["xmu"], cache["std"], cache["invstd"]
    gamma, N = cache["gamma"], cache["N"]

    dbeta = dout.sum(axis=0)                    # D    out = gamma * x_hat + beta
    dgamma = (dout * x_hat).sum(axis=0)         # D
    dx_hat = dout * gamma                       # N,D
    dinvstd = (dx_hat * xmu).sum(axis=0)        # D    x_hat = xmu * invstd
    dxmu_direct = dx_hat * invstd               # N,D
    dstd = -dinvstd / std**2                    # D    invstd = 1 / std
    dvar = 0.5 * dstd / std                     # D    std = sqrt(var + eps)
    dsq = np.broadcast_to(dvar / N, xmu.shape)  # N,D  var = sum(sq) / N
    dxmu_via_var = 2.0 * xmu * dsq              # N,D  sq = xmu ** 2
    dxmu = dxmu_direct + dxmu_via_var           # N,D  two paths meet at xmu
    dmean = -dxmu.sum(axis=0)                   # D    xmu = x - mean
    dx = dxmu + dmean / N                       # N,D  mean = sum(x) / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Backward pass of batch normalization in closed form.

    ``dx = gamma * invstd / N * (N * dout - sum(dout) - x_hat * sum(dout * x_hat))``

    Args:
        dout: upstream gradient of shape (N, D).
        cache: from :func:`batchnorm_forward`.

    Returns:
        dx (N, D), dgamma (D,), dbeta (D,).
    """
    _check_cache(dout, cache)
    if cache["mode"] == "test":
        return _test_mode_backward(dout, cache)
    x_hat, invstd, gamma, N = cache["x_hat"], cache["invstd"], cache["gamma"], cache["N"]
    dbeta = dout.sum(axis=0)                    # D
    dgamma = (dout * x_hat).sum(axis=0)         # D
    dx = (gamma * invstd / N) * (N * dout - dbeta - x_hat * dgamma)  # N,D
    return dx, dgamma, dbeta


def _nchw_to_rows(x):
    N, C, H, W = x.shape
    return x.transpose(0, 2, 3, 1).reshape(N * H * W, C)     # NHW,C


def _rows_to_nchw(rows, shape):
    N, C, H, W = shape
    return rows.reshape(N, H, W, C).transpose(0, 3, 1, 2)     # N,C,H,W


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of convolutional activations, per channel.

    Each channel's statistics are taken over the batch and both spatial
    dimensions (N, H, W), so every position of a feature map is normalized
    the same way.

    Args:
        x: input of shape (N, C, H, W).
        gamma, beta: shape (C,).
        bn_param: as for :func:`batchnorm_forward`.

    Returns:
        out of shape (N, C, H, W) and a cache.
    """
    check_float_array("x", x, 4)
    N, C, H, W = x.shape
    if isinstance(bn_param, dict) and bn_param.get("mode") == "train":
        check_batch_size(N * H * W, x.shape)  # name the 4-D shape, not the rows'
    rows, cache = batchnorm_forward(_nchw_to_rows(x), gamma, beta, bn_param)
    return _rows_to_nchw(rows, x.shape), (cache, x.shape)


def spatial_batchnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_batchnorm_forward`.

    Returns:
        dx (N, C, H, W), dgamma (C,), dbeta (C,).
    """
    check_float_array("dout", dout, 4)
    bn_cache, shape = _unpack_cache(cache, 2, "spatial_batchnorm_forward")
    if dout.shape != shape:
        raise ValueError(f"dout must have shape {shape}, got {dout.shape}")
    drows, dgamma, dbeta = batchnorm_backward_alt(_nchw_to_rows(dout), bn_cache)
    return _rows_to_nchw(drows, shape), dgamma, dbeta


def _unpack_cache(cache, size, producer):
    if not isinstance(cache, tuple) or len(cache) != size:
        raise ValueError(f"cache must be the cache returned by {producer}, "
                         f"got {type(cache).__name__}")
    return cache


def _standardize_rows(x, eps):
    """Normalize each row of a 2-D array to zero mean, unit variance."""
    mean = _mean(x, axis=1, keepdims=True)              # R,1
    xmu = x - mean                                      # R,M
    var = _mean(xmu**2, axis=1, keepdims=True)          # R,1
    invstd = 1.0 / np.sqrt(var + eps)                   # R,1
    return xmu * invstd, invstd                         # R,M  R,1


def _standardize_rows_backward(dx_hat, x_hat, invstd):
    """Closed-form gradient of :func:`_standardize_rows` with respect to x."""
    mean_dx_hat = dx_hat.mean(axis=1, keepdims=True)                 # R,1
    mean_dx_hat_x_hat = (dx_hat * x_hat).mean(axis=1, keepdims=True)  # R,1
    return invstd * (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat)  # R,M


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization: each example normalized over its own features.

    Args:
        x: input of shape (N, D).
        gamma, beta: shape (D,).
        ln_param: dict with optional ``eps`` (default 1e-5).

    Returns:
        out of shape (N, D) and a cache.
    """
    check_float_array("x", x, 2)
    N, D = x.shape
    check_param_shape("gamma", gamma, (D,))
    check_param_shape("beta", beta, (D,))
    check_param_dict("ln_param", ln_param)
    eps = ln_param.get("eps", 1e-5)
    check_eps(eps)
    x_hat, invstd = _standardize_rows(x, eps)   # N,D  N,1
    out = gamma * x_hat + beta                  # N,D
    return out, (x_hat, invstd, gamma)


def layernorm_backward(dout, cache):
    """Backward pass of :func:`layernorm_forward`.

    Returns:
        dx (N, D), dgamma (D,), dbeta (D,).
    """
    x_hat, invstd, gamma = _unpack_cache(cache, 3, "layernorm_forward")
    check_float_array("dout", dout, 2)
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape}, got {dout.shape}")
    dbeta = dout.sum(axis=0)                                    # D
    dgamma = (dout * x_hat).sum(axis=0)                         # D
    dx = _standardize_rows_backward(dout * gamma, x_hat, invstd)  # N,D
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization: each example's channels split into ``G`` groups,
    each group normalized over its channels and positions.

    Args:
        x: input of shape (N, C, H, W).
        gamma, beta: shape (1, C, 1, 1), as in CS231n.
        G: number of groups, a positive integer dividing C.
        gn_param: dict with optional ``eps`` (default 1e-5).

    Returns:
        out of shape (N, C, H, W) and a cache.
    """
    check_float_array("x", x, 4)
    N, C, H, W = x.shape
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1 or C % G:
        raise ValueError(
            f"G must be a positive integer that divides the channel count C={C}, got {G!r}"
        )
    check_param_shape("gamma", gamma, (1, C, 1, 1))
    check_param_shape("beta", beta, (1, C, 1, 1))
    check_param_dict("gn_param", gn_param)
    eps = gn_param.get("eps", 1e-5)
    check_eps(eps)
    groups = x.reshape(N * G, (C // G) * H * W)         # NG,(C/G)HW
    g_hat, invstd = _standardize_rows(groups, eps)      # NG,(C/G)HW  NG,1
    x_hat = g_hat.reshape(N, C, H, W)                   # N,C,H,W
    out = gamma * x_hat + beta                          # N,C,H,W
    return out, (x_hat, invstd, gamma, G)


def spatial_groupnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_groupnorm_forward`.

    Returns:
        dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1).
    """
    x_hat, invstd, gamma, G = _unpack_cache(cache, 4, "spatial_groupnorm_forward")
    check_float_array("dout", dout, 4)
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape}, got {dout.shape}")
    N, C, H, W = dout.shape
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)             # 1,C,1,1
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3), keepdims=True)  # 1,C,1,1
    dx_hat = (dout * gamma).reshape(N * G, -1)                  # NG,(C/G)HW
    dx = _standardize_rows_backward(dx_hat, x_hat.reshape(N * G, -1), invstd)
    return dx.reshape(N, C, H, W), dgamma, dbeta

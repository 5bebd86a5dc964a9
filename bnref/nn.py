"""Batch normalization layers for PyTorch with a hand-written backward pass.

``BatchNorm1d`` and ``BatchNorm2d`` are drop-in replacements for
``torch.nn.BatchNorm1d`` and ``torch.nn.BatchNorm2d``, built on torch's own
batch-norm base class: the same constructor arguments, the same state_dict
keys (so state dicts load both ways), the same train/eval behaviour
(including the keyword-only ``bias`` of torch 2.13, which works here on
older torch too), and torch's tools that look for batch norm find them. The
difference is inside: the normalization is a
:class:`BatchNormFunction`, a ``torch.autograd.Function`` whose backward is
the closed form derived in the book, so autograd never traces through the
statistics.

As in d2l, the mathematics lives in functions (:func:`batch_norm`,
:class:`BatchNormFunction`) and the modules only do bookkeeping: they hold
the parameters and running buffers and decide which statistics to use.

Shapes: ``x`` is ``(N, C, *)``; statistics are per channel over the other
``M = N * prod(*)`` values.

NaN in the input propagates, as in PyTorch: to its channel's output and, in
training, to that channel's running statistics. The backward pass is not
itself differentiable (double backward raises).
"""

import torch
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm as _TorchBatchNorm

from bnref._checks import check_batch_size, check_eps, check_momentum

__all__ = ["BatchNormFunction", "batch_norm", "BatchNorm1d", "BatchNorm2d"]


def _reduce_dims(x):
    """Every dimension except the channel dimension 1."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(t, x):
    """View a (C,) tensor so that it broadcasts against x of shape (N, C, *)."""
    return t.view((1, -1) + (1,) * (x.ndim - 2))


def _compute_dtype(x):
    # Half precision statistics lose too many digits; accumulate in float32.
    return torch.promote_types(x.dtype, torch.float32)


class BatchNormFunction(torch.autograd.Function):
    """Batch normalization with a hand-written backward pass.

    ``forward(x, weight, bias, running_mean, running_var, training, momentum, eps)``
    takes the arguments of ``torch.nn.functional.batch_norm`` (in that
    order, apart from ``x`` first). ``training=True`` normalizes with the
    batch statistics and, when running buffers are given, updates them in
    place with ``running = (1 - momentum) * running + momentum * batch_stat``
    (the unbiased batch variance, as PyTorch does). ``training=False``
    normalizes with the running statistics, which makes the layer an
    affine map.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        acc = _compute_dtype(x)
        xa = x.to(acc)                                          # N,C,*
        dims = _reduce_dims(x)
        if training:
            var, mean = torch.var_mean(xa, dim=dims, correction=0)  # C  C
            if running_mean is not None:
                M = x.numel() // x.shape[1]
                with torch.no_grad():
                    running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
                    var_unbiased = var * (M / (M - 1))            # C
                    running_var.mul_(1 - momentum).add_(momentum * var_unbiased.to(running_var.dtype))
        else:
            mean, var = running_mean.to(acc), running_var.to(acc)   # C  C
        invstd = torch.rsqrt(var + eps)                             # C
        x_hat = (xa - _per_channel(mean, x)) * _per_channel(invstd, x)  # N,C,*
        out = x_hat
        if weight is not None:
            out = out * _per_channel(weight.to(acc), x)
        if bias is not None:
            out = out + _per_channel(bias.to(acc), x)
        ctx.training = training
        ctx.save_for_backward(x_hat, invstd, weight)
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        """``dx = weight * invstd / M * (M * dout - sum(dout) - x_hat * sum(dout * x_hat))``.

        In eval mode the statistics are constants and ``dx = weight * invstd * dout``.
        """
        x_hat, invstd, weight = ctx.saved_tensors
        dims = _reduce_dims(x_hat)
        g = dout.to(x_hat.dtype)                               # N,C,*
        dbias = g.sum(dim=dims)                                # C
        dweight = (g * x_hat).sum(dim=dims)                    # C
        scale = invstd if weight is None else invstd * weight.to(x_hat.dtype)  # C
        dx = None
        if ctx.needs_input_grad[0]:
            if ctx.training:
                M = x_hat.numel() // x_hat.shape[1]
                dx_hat_centered = (g - _per_channel(dbias / M, g)
                                   - x_hat * _per_channel(dweight / M, g))  # N,C,*
                dx = dx_hat_centered * _per_channel(scale, g)          # N,C,*
            else:
                dx = g * _per_channel(scale, g)                        # N,C,*
            dx = dx.to(dout.dtype)
        param_dtype = dout.dtype if weight is None else weight.dtype
        dweight = dweight.to(param_dtype) if ctx.needs_input_grad[1] else None
        dbias = dbias.to(param_dtype) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None, None, None


def _check_input(x, num_features=None):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, *), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must have a floating-point dtype, got {x.dtype} "
                         "(convert explicitly, e.g. x.double())")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(f"x must have num_features={num_features} channels in dimension 1, "
                         f"got shape {tuple(x.shape)}")


def _check_batch_size(x):
    check_batch_size(x.numel() // x.shape[1], tuple(x.shape))


def _check_per_channel(name, t, C):
    if t is not None and tuple(t.shape) != (C,):
        raise ValueError(f"{name} must have shape ({C},) to match the input's channels, "
                         f"got {tuple(t.shape)}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Drop-in for ``torch.nn.functional.batch_norm`` built on :class:`BatchNormFunction`.

    Args:
        x: input of shape ``(N, C, *)``, floating point.
        running_mean, running_var: (C,) buffers or None; updated in place when
            ``training`` is true.
        weight, bias: (C,) scale and shift, or None.
        training: use (and record) batch statistics instead of the running ones.
        momentum: weight of the new batch statistic in the running average.
        eps: added to the variance for numerical stability.

    Returns:
        Tensor of x's shape.
    """
    _check_input(x)
    C = x.shape[1]
    for name, t in [("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)]:
        _check_per_channel(name, t, C)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be tensors or both be None")
    if not training and running_mean is None:
        raise ValueError("training=False normalizes with running_mean and running_var, got None")
    if training:
        _check_batch_size(x)
    return BatchNormFunction.apply(x, weight, bias, running_mean, running_var,
                                   training, momentum, eps)


class _BatchNorm(_TorchBatchNorm):
    """What BatchNorm1d and BatchNorm2d share: checks, and a forward on :func:`batch_norm`.

    A subclass of torch's own batch-norm base, so parameters, buffers,
    ``reset_parameters``, state-dict loading (older checkpoints without
    ``num_batches_tracked`` included) and every torch utility that looks for
    batch norm with ``isinstance`` (``torch.optim.swa_utils.update_bn``,
    ``nn.SyncBatchNorm.convert_sync_batchnorm``) work as for ``torch.nn``.
    Only ``forward`` differs: it calls :class:`BatchNormFunction`.

    Args:
        num_features: C, the number of channels (features) of the input.
        eps: added to the variance before the square root.
        momentum: weight of each new batch statistic in the running averages;
            None means the cumulative average over ``num_batches_tracked`` batches.
        affine: learn a per-channel scale ``weight`` (gamma) and shift ``bias`` (beta).
        track_running_stats: keep running averages for eval mode; without them
            eval mode normalizes with the batch's own statistics.
        device, dtype: where and in which dtype to create parameters and buffers.
        bias: with ``affine``, whether to learn the shift (the keyword of
            torch 2.13, accepted here on older torch too).
    """

    _input_ndims = ()
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        check_eps(eps)
        check_momentum(momentum, allow_none=True)
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        if affine and not bias:  # scale without shift
            self.bias = None

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _check_input_dim(self, input):
        if isinstance(input, torch.Tensor) and input.ndim not in self._input_ndims:
            expected = " or ".join(f"{d}D" for d in self._input_ndims)
            raise ValueError(f"{type(self).__name__}: x must be {expected} {self._layout}, "
                             f"got {input.ndim}D input of shape {tuple(input.shape)}")
        _check_input(input, self.num_features)

    def forward(self, x):
        self._check_input_dim(x)
        if self.training:
            _check_batch_size(x)  # before num_batches_tracked counts a failed call
        # The bookkeeping of torch.nn.modules.batchnorm._BatchNorm.forward.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        # Without running statistics, eval mode also normalizes with the batch's.
        use_batch_stats = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if keep else None,
                          self.running_var if keep else None, self.weight, self.bias,
                          use_batch_stats, momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """Drop-in for ``torch.nn.BatchNorm1d``: input (N, C) or (N, C, L)."""

    _input_ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Drop-in for ``torch.nn.BatchNorm2d``: input (N, C, H, W)."""

    _input_ndims = (4,)
    _layout = "(N, C, H, W)"

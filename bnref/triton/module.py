"""The Triton kernels as an autograd Function, a functional wrapper and a module."""

import torch
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from bnref.triton.ops import batch_norm_backward, batch_norm_eval, batch_norm_train

__all__ = ["BatchNormFunction", "batch_norm", "BatchNorm2d"]


class BatchNormFunction(torch.autograd.Function):
    """Batch norm whose forward and backward are the Triton kernels.

    ``BatchNormFunction.apply(x, weight, bias, running_mean, running_var,
    training, momentum, eps)``; weight, bias and the running statistics may be
    None (the running statistics are required when ``training`` is False).
    The backward runs kernels that autograd cannot see, so it is not itself
    differentiable: a double backward raises instead of returning zeros.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        if training:
            y, mean, invstd = batch_norm_train(x, weight, bias, running_mean, running_var,
                                               momentum, eps)
        else:
            y = batch_norm_eval(x, weight, bias, running_mean, running_var, eps)
            mean = running_mean.float()
            invstd = torch.rsqrt(running_var.float() + eps)
        ctx.training = training
        ctx.save_for_backward(x, weight, mean, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        if ctx.training:
            dx, dweight, dbias = batch_norm_backward(dy, x, weight, mean, invstd)
        else:
            dx, dweight, dbias = _eval_backward(dy, x, weight, mean, invstd)
        return (dx, dweight if ctx.needs_input_grad[1] else None,
                dbias if ctx.needs_input_grad[2] else None, None, None, None, None, None)


def _eval_backward(dy, x, weight, mean, invstd):
    """Eval mode: the statistics are constants, so dx = dy * w * invstd.

    Rarely needed (fine-tuning with frozen statistics), so plain PyTorch in
    float32 rather than more kernels.
    """
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dims = [0] + list(range(2, x.dim()))
    dyf = dy.float()
    scale = invstd if weight is None else invstd * weight.float()
    dx = (dyf * scale.view(shape)).to(x.dtype)
    x_hat = (x.float() - mean.view(shape)) * invstd.view(shape)
    dweight, dbias = (dyf * x_hat).sum(dims), dyf.sum(dims)
    if weight is not None:
        dweight, dbias = dweight.to(weight.dtype), dbias.to(weight.dtype)
    return dx, dweight, dbias


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Drop-in for ``torch.nn.functional.batch_norm`` (same argument order), autograd included."""
    return BatchNormFunction.apply(x, weight, bias, running_mean, running_var, training,
                                   momentum, eps)


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d`` (and ``BatchNorm1d`` on (N, C) input) on the Triton kernels.

    Same arguments, buffers, state dict and semantics as PyTorch's modules:
    ``momentum`` weighs the new batch statistic (None for a cumulative
    average), the running variance is unbiased, and eval mode uses the
    running statistics unless ``track_running_stats`` is False.
    """

    def _check_input_dim(self, input):
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2D (N, C) or 4D (N, C, H, W) input, "
                             f"got {input.dim()}D of shape {tuple(input.shape)}")

    def forward(self, input):
        self._check_input_dim(input)
        # The bookkeeping of torch.nn.modules.batchnorm._BatchNorm.forward.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if keep else None,
                          self.running_var if keep else None, self.weight, self.bias,
                          use_batch_stats, factor, self.eps)

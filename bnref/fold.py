"""Folding eval-mode batch normalization into the preceding layer.

In eval mode batch normalization is a fixed per-channel affine map,

    bn(z) = gamma * (z - running_mean) / sqrt(running_var + eps) + beta
          = scale * z + (beta - scale * running_mean),   scale = gamma / sqrt(running_var + eps),

and a Linear or Conv2d layer ``z = W x + b`` before it is affine too, so the
pair collapses into one layer with weight ``scale * W`` (row by row, or output
channel by output channel) and bias ``scale * (b - running_mean) + beta``.
Inference then pays for one layer instead of two.

The functions here never modify their arguments; they return new layers.
The folded weights are computed in float64 and stored in the layer's dtype.
"""

import copy

import torch
from torch import nn

from bnref import nn as bnref_nn

__all__ = ["fold_linear_bn", "fold_conv_bn", "fold_sequential"]

_BN1D = (nn.BatchNorm1d, bnref_nn.BatchNorm1d)
_BN2D = (nn.BatchNorm2d, bnref_nn.BatchNorm2d)


def _check_bn(bn, kinds, expected, out_features, layer_name):
    if not isinstance(bn, kinds):
        raise ValueError(f"bn must be {expected}, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "bn has no running statistics (track_running_stats=False): it normalizes "
            "with batch statistics even in eval mode, so there is no fixed map to fold"
        )
    if bn.num_features != out_features:
        raise ValueError(
            f"bn.num_features must equal the {layer_name}'s {out_features} outputs, "
            f"got {bn.num_features}"
        )


def _scale_and_shift(bn):
    """The eval-mode BN as ``scale * z + shift``, in float64, both of shape (C,)."""
    var = bn.running_var.detach().double()                      # C
    mean = bn.running_mean.detach().double()                    # C
    scale = torch.rsqrt(var + bn.eps)                           # C
    shift = -mean * scale                                       # C
    if bn.weight is not None:  # affine=False BN has gamma = 1, beta = 0
        scale = scale * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double()
    if bn.bias is not None:  # torch >= 2.13 allows a weight without a bias
        shift = shift + bn.bias.detach().double()
    return scale, shift


def _folded_params(weight, bias, bn):
    """New (weight, bias) with bn folded in; ``weight`` has output channels first."""
    scale, shift = _scale_and_shift(bn)
    w = weight.detach().double()                                # C_out,...
    new_weight = w * scale.view((-1,) + (1,) * (w.ndim - 1))    # C_out,...
    new_bias = shift if bias is None else scale * bias.detach().double() + shift  # C_out
    return new_weight.to(weight.dtype), new_bias.to(weight.dtype)


def fold_linear_bn(linear, bn):
    """Fold an eval-mode ``BatchNorm1d`` into the ``nn.Linear`` before it.

    Args:
        linear: ``torch.nn.Linear`` with ``out_features`` outputs.
        bn: ``torch.nn.BatchNorm1d`` or ``bnref.nn.BatchNorm1d`` with
            ``num_features == linear.out_features`` and running statistics.

    Returns:
        A new ``nn.Linear`` (always with a bias) equal to ``bn.eval()(linear(x))``.
    """
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    _check_bn(bn, _BN1D, "a BatchNorm1d (torch.nn or bnref.nn)", linear.out_features, "linear")
    weight, bias = _folded_params(linear.weight, linear.bias, bn)
    folded = nn.Linear(linear.in_features, linear.out_features, bias=True,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


def fold_conv_bn(conv, bn):
    """Fold an eval-mode ``BatchNorm2d`` into the ``nn.Conv2d`` before it.

    Args:
        conv: ``torch.nn.Conv2d`` with ``out_channels`` outputs (any stride,
            padding, dilation or groups).
        bn: ``torch.nn.BatchNorm2d`` or ``bnref.nn.BatchNorm2d`` with
            ``num_features == conv.out_channels`` and running statistics.

    Returns:
        A new ``nn.Conv2d`` (always with a bias) equal to ``bn.eval()(conv(x))``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
    _check_bn(bn, _BN2D, "a BatchNorm2d (torch.nn or bnref.nn)", conv.out_channels, "conv")
    weight, bias = _folded_params(conv.weight, conv.bias, bn)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                       stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                       groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


def fold_sequential(model):
    """Fold every Linear/Conv2d directly followed by a BatchNorm1d/2d in ``model``.

    Nested ``nn.Sequential`` blocks are folded too. Every other layer is
    copied, so the result shares nothing with ``model``.

    Args:
        model: ``torch.nn.Sequential``.

    Returns:
        A new ``nn.Sequential`` in eval mode whose output equals ``model.eval()``'s.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be a torch.nn.Sequential, got {type(model).__name__}")
    layers, children, i = [], list(model), 0
    while i < len(children):
        layer = children[i]
        following = children[i + 1] if i + 1 < len(children) else None
        if isinstance(layer, nn.Linear) and isinstance(following, _BN1D):
            layers.append(fold_linear_bn(layer, following))
            i += 2
        elif isinstance(layer, nn.Conv2d) and isinstance(following, _BN2D):
            layers.append(fold_conv_bn(layer, following))
            i += 2
        else:
            if isinstance(layer, nn.Sequential):
                layers.append(fold_sequential(layer))
            else:
                layers.append(copy.deepcopy(layer))
            i += 1
    return nn.Sequential(*layers).eval()  # folding is for inference

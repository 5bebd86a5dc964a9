"""Bad input fails with a ValueError naming the argument, what arrived and what was expected.

One row per (public function, bad input) from the list of bad inputs: wrong ``x.ndim``,
``gamma``/``beta`` not matching the features, unknown ``mode``, integer dtype,
one value per channel in train mode, ``G`` not dividing ``C``; plus the
checks of bnref.nn's modules and bnref.fold's layer pairs.
"""

import numpy as np
import pytest
import torch
from torch import nn

import bnref.nn as bnn
from bnref import functional as bnf
from bnref.fold import fold_conv_bn, fold_linear_bn, fold_sequential

x2, g2 = np.ones((4, 3)), np.ones(3)
x4, g4, gn4 = np.ones((2, 3, 2, 2)), np.ones(3), np.ones((1, 4, 1, 1))
x4g = np.ones((2, 4, 2, 2))
TRAIN = {"mode": "train"}


def _bn_cache():
    return bnf.batchnorm_forward(np.random.default_rng(0).normal(size=(4, 3)), g2, g2,
                                 {"mode": "train"})[1]


FUNCTIONAL_CASES = {
    # batchnorm_forward
    "bn x ndim": (lambda: bnf.batchnorm_forward(np.ones(3), g2, g2, TRAIN),
                  r"x must have 2 dimensions, got 1 \(shape \(3,\)\)"),
    "bn x int": (lambda: bnf.batchnorm_forward(np.ones((4, 3), int), g2, g2, TRAIN),
                 r"x must have a floating-point dtype, got int64"),
    "bn x list": (lambda: bnf.batchnorm_forward([[1.0, 2.0]], g2, g2, TRAIN),
                  r"x must be a numpy.ndarray, got list"),
    "bn gamma": (lambda: bnf.batchnorm_forward(x2, np.ones(4), g2, TRAIN),
                 r"gamma must have shape \(3,\) to match the input, got \(4,\)"),
    "bn beta": (lambda: bnf.batchnorm_forward(x2, g2, np.ones((1, 3)), TRAIN),
                r"beta must have shape \(3,\) to match the input, got \(1, 3\)"),
    "bn gamma int": (lambda: bnf.batchnorm_forward(x2, np.ones(3, int), g2, TRAIN),
                     r"gamma must have a floating-point dtype, got int64"),
    "bn mode": (lambda: bnf.batchnorm_forward(x2, g2, g2, {"mode": "eval"}),
                r"bn_param\['mode'\] must be 'train' or 'test', got 'eval'"),
    "bn mode missing": (lambda: bnf.batchnorm_forward(x2, g2, g2, {}),
                        r"bn_param\['mode'\] must be 'train' or 'test', got None"),
    "bn batch of one": (lambda: bnf.batchnorm_forward(np.ones((1, 3)), g2, g2, TRAIN),
                        r"Expected more than 1 value per channel when training, "
                        r"got input of shape \(1, 3\)"),
    "bn running_mean": (lambda: bnf.batchnorm_forward(
                            x2, g2, g2, {"mode": "test", "running_mean": np.zeros(5)}),
                        r"bn_param\['running_mean'\] must have shape \(3,\).*got \(5,\)"),
    "bn eps": (lambda: bnf.batchnorm_forward(x2, g2, g2, {"mode": "train", "eps": 0}),
               r"eps must be a positive number, got 0"),
    "bn momentum": (lambda: bnf.batchnorm_forward(x2, g2, g2, {"mode": "train", "momentum": 2}),
                    r"momentum must be a number in \[0, 1\], got 2"),
    "bn eps bool": (lambda: bnf.batchnorm_forward(x2, g2, g2, {"mode": "train", "eps": True}),
                    r"eps must be a positive number, got True"),
    "bn param dict": (lambda: bnf.batchnorm_forward(x2, g2, g2, "train"),
                      r"bn_param must be a dict, got str"),
    # batchnorm_backward and _alt
    "bn backward dout shape": (lambda: bnf.batchnorm_backward(np.ones((4, 2)), _bn_cache()),
                               r"dout must have the forward output's shape \(4, 3\), got \(4, 2\)"),
    "bn backward dout int": (lambda: bnf.batchnorm_backward(np.ones((4, 3), int), _bn_cache()),
                             r"dout must have a floating-point dtype, got int64"),
    "bn backward_alt dout ndim": (lambda: bnf.batchnorm_backward_alt(np.ones(3), _bn_cache()),
                                  r"dout must have 2 dimensions, got 1"),
    "bn backward_alt dout shape": (lambda: bnf.batchnorm_backward_alt(np.ones((5, 3)), _bn_cache()),
                                   r"dout must have the forward output's shape \(4, 3\), got \(5, 3\)"),
    "bn backward cache": (lambda: bnf.batchnorm_backward(np.ones((4, 3)), (1, 2)),
                          r"cache must be a dict, got tuple"),
    # spatial_batchnorm_forward / backward
    "sbn x ndim": (lambda: bnf.spatial_batchnorm_forward(x2, g2, g2, TRAIN),
                   r"x must have 4 dimensions, got 2 \(shape \(4, 3\)\)"),
    "sbn x int": (lambda: bnf.spatial_batchnorm_forward(np.ones((2, 3, 2, 2), np.int32), g4, g4, TRAIN),
                  r"x must have a floating-point dtype, got int32"),
    "sbn gamma": (lambda: bnf.spatial_batchnorm_forward(x4, np.ones((1, 3, 1, 1)), g4, TRAIN),
                  r"gamma must have shape \(3,\) to match the input, got \(1, 3, 1, 1\)"),
    "sbn beta": (lambda: bnf.spatial_batchnorm_forward(x4, g4, np.ones(2), TRAIN),
                 r"beta must have shape \(3,\) to match the input, got \(2,\)"),
    "sbn mode": (lambda: bnf.spatial_batchnorm_forward(x4, g4, g4, {"mode": "Train"}),
                 r"bn_param\['mode'\] must be 'train' or 'test', got 'Train'"),
    "sbn batch of one": (lambda: bnf.spatial_batchnorm_forward(np.ones((1, 3, 1, 1)), g4, g4, TRAIN),
                         r"Expected more than 1 value per channel when training, "
                         r"got input of shape \(1, 3, 1, 1\)"),
    "sbn backward dout": (lambda: bnf.spatial_batchnorm_backward(
                              np.ones((2, 3, 2, 1)), bnf.spatial_batchnorm_forward(x4, g4, g4, TRAIN)[1]),
                          r"dout must have shape \(2, 3, 2, 2\), got \(2, 3, 2, 1\)"),
    "sbn backward dout ndim": (lambda: bnf.spatial_batchnorm_backward(
                                   x2, bnf.spatial_batchnorm_forward(x4, g4, g4, TRAIN)[1]),
                               r"dout must have 4 dimensions, got 2"),
    # layernorm
    "ln x ndim": (lambda: bnf.layernorm_forward(x4, g2, g2, {}),
                  r"x must have 2 dimensions, got 4"),
    "ln x int": (lambda: bnf.layernorm_forward(np.ones((4, 3), int), g2, g2, {}),
                 r"x must have a floating-point dtype, got int64"),
    "ln gamma": (lambda: bnf.layernorm_forward(x2, np.ones(4), g2, {}),
                 r"gamma must have shape \(3,\) to match the input, got \(4,\)"),
    "ln beta": (lambda: bnf.layernorm_forward(x2, g2, np.ones(2), {}),
                r"beta must have shape \(3,\) to match the input, got \(2,\)"),
    "ln param": (lambda: bnf.layernorm_forward(x2, g2, g2, None),
                 r"ln_param must be a dict, got NoneType"),
    "ln backward dout": (lambda: bnf.layernorm_backward(np.ones((4, 2)),
                                                        bnf.layernorm_forward(x2, g2, g2, {})[1]),
                         r"dout must have shape \(4, 3\), got \(4, 2\)"),
    "ln backward cache": (lambda: bnf.layernorm_backward(np.ones((4, 3)), _bn_cache()),
                          r"cache must be the cache returned by layernorm_forward, got dict"),
    # groupnorm
    "gn x ndim": (lambda: bnf.spatial_groupnorm_forward(x2, gn4, gn4, 2, {}),
                  r"x must have 4 dimensions, got 2"),
    "gn x int": (lambda: bnf.spatial_groupnorm_forward(np.ones((2, 4, 2, 2), int), gn4, gn4, 2, {}),
                 r"x must have a floating-point dtype, got int64"),
    "gn G": (lambda: bnf.spatial_groupnorm_forward(x4g, gn4, gn4, 3, {}),
             r"G must be a positive integer that divides the channel count C=4, got 3"),
    "gn G zero": (lambda: bnf.spatial_groupnorm_forward(x4g, gn4, gn4, 0, {}),
                  r"G must be a positive integer .* C=4, got 0"),
    "gn G float": (lambda: bnf.spatial_groupnorm_forward(x4g, gn4, gn4, 2.0, {}),
                   r"G must be a positive integer .* C=4, got 2.0"),
    "gn gamma": (lambda: bnf.spatial_groupnorm_forward(x4g, np.ones(4), gn4, 2, {}),
                 r"gamma must have shape \(1, 4, 1, 1\) to match the input, got \(4,\)"),
    "gn beta": (lambda: bnf.spatial_groupnorm_forward(x4g, gn4, np.ones((1, 2, 1, 1)), 2, {}),
                r"beta must have shape \(1, 4, 1, 1\) to match the input, got \(1, 2, 1, 1\)"),
    "gn backward dout": (lambda: bnf.spatial_groupnorm_backward(
                             np.ones((2, 4, 2, 1)), bnf.spatial_groupnorm_forward(x4g, gn4, gn4, 2, {})[1]),
                         r"dout must have shape \(2, 4, 2, 2\), got \(2, 4, 2, 1\)"),
    "gn backward cache": (lambda: bnf.spatial_groupnorm_backward(x4g, (1, 2)),
                          r"cache must be the cache returned by spatial_groupnorm_forward, got tuple"),
    "sbn backward cache": (lambda: bnf.spatial_batchnorm_backward(x4, _bn_cache()),
                           r"cache must be the cache returned by spatial_batchnorm_forward, got dict"),
}


@pytest.mark.parametrize("case", list(FUNCTIONAL_CASES))
def test_functional_errors(case):
    call, message = FUNCTIONAL_CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def _t(*shape, dtype=torch.float32):
    return torch.ones(shape, dtype=dtype)


NN_CASES = {
    "bn1d ndim": (lambda: bnn.BatchNorm1d(3)(_t(2, 3, 4, 5)),
                  r"BatchNorm1d: x must be 2D or 3D \(N, C\) or \(N, C, L\), got 4D input of shape \(2, 3, 4, 5\)"),
    "bn1d ndim 1": (lambda: bnn.BatchNorm1d(3)(_t(3)),
                    r"BatchNorm1d: x must be 2D or 3D .* got 1D input of shape \(3,\)"),
    "bn2d ndim": (lambda: bnn.BatchNorm2d(3)(_t(2, 3, 4)),
                  r"BatchNorm2d: x must be 4D \(N, C, H, W\), got 3D input of shape \(2, 3, 4\)"),
    "bn2d channels": (lambda: bnn.BatchNorm2d(3)(_t(2, 4, 2, 2)),
                      r"x must have num_features=3 channels in dimension 1, got shape \(2, 4, 2, 2\)"),
    "bn1d int": (lambda: bnn.BatchNorm1d(3)(_t(4, 3, dtype=torch.int64)),
                 r"x must have a floating-point dtype, got torch.int64"),
    "bn1d batch of one": (lambda: bnn.BatchNorm1d(3)(_t(1, 3)),
                          r"Expected more than 1 value per channel when training, "
                          r"got input of shape \(1, 3\)"),
    "bn2d batch of one": (lambda: bnn.BatchNorm2d(3)(_t(1, 3, 1, 1)),
                          r"Expected more than 1 value per channel when training, "
                          r"got input of shape \(1, 3, 1, 1\)"),
    "bn1d not a tensor": (lambda: bnn.BatchNorm1d(3)(np.ones((4, 3))),
                          r"x must be a torch.Tensor, got ndarray"),
    "num_features": (lambda: bnn.BatchNorm2d(0),
                     r"num_features must be a positive integer, got 0"),
    "eps": (lambda: bnn.BatchNorm2d(3, eps=-1.0), r"eps must be a positive number, got -1.0"),
    "momentum": (lambda: bnn.BatchNorm2d(3, momentum=1.5),
                 r"momentum must be None or a number in \[0, 1\], got 1.5"),
    "batch_norm weight": (lambda: bnn.batch_norm(_t(4, 3), None, None, _t(4), None, True),
                          r"weight must have shape \(3,\) to match the input's channels, got \(4,\)"),
    "batch_norm bias": (lambda: bnn.batch_norm(_t(4, 3), None, None, None, _t(2), True),
                        r"bias must have shape \(3,\) to match the input's channels, got \(2,\)"),
    "batch_norm running_mean": (lambda: bnn.batch_norm(_t(4, 3), _t(2), _t(3), training=True),
                                r"running_mean must have shape \(3,\) .* got \(2,\)"),
    "batch_norm eval without stats": (lambda: bnn.batch_norm(_t(4, 3), None, None, training=False),
                                      r"training=False normalizes with running_mean and running_var, got None"),
    "batch_norm ndim": (lambda: bnn.batch_norm(_t(3), None, None, training=True),
                        r"x must have at least 2 dimensions \(N, C, \*\), got shape \(3,\)"),
    "batch_norm batch of one": (lambda: bnn.batch_norm(_t(1, 3, 1), None, None, training=True),
                                r"Expected more than 1 value per channel when training, "
                                r"got input of shape \(1, 3, 1\)"),
    "batch_norm int": (lambda: bnn.batch_norm(_t(4, 3, dtype=torch.int32), None, None, training=True),
                       r"x must have a floating-point dtype, got torch.int32"),
}


@pytest.mark.parametrize("case", list(NN_CASES))
def test_nn_errors(case):
    call, message = NN_CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_failed_call_does_not_count_a_batch():
    bn = bnn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        bn(_t(1, 3))
    assert int(bn.num_batches_tracked) == 0
    bn.eval()
    assert bn(_t(1, 3)).shape == (1, 3)  # one example is fine in eval mode, as in torch


FOLD_CASES = {
    "linear type": (lambda: fold_linear_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm1d(3)),
                    r"linear must be a torch.nn.Linear, got Conv2d"),
    "linear bn type": (lambda: fold_linear_bn(nn.Linear(2, 3), nn.BatchNorm2d(3)),
                       r"bn must be a BatchNorm1d \(torch.nn or bnref.nn\), got BatchNorm2d"),
    "linear sizes": (lambda: fold_linear_bn(nn.Linear(2, 3), bnn.BatchNorm1d(4)),
                     r"bn.num_features must equal the linear's 3 outputs, got 4"),
    "linear no stats": (lambda: fold_linear_bn(nn.Linear(2, 3),
                                               nn.BatchNorm1d(3, track_running_stats=False)),
                        r"bn has no running statistics \(track_running_stats=False\)"),
    "conv type": (lambda: fold_conv_bn(nn.Linear(2, 3), nn.BatchNorm2d(3)),
                  r"conv must be a torch.nn.Conv2d, got Linear"),
    "conv bn type": (lambda: fold_conv_bn(nn.Conv2d(2, 3, 1), nn.GroupNorm(1, 3)),
                     r"bn must be a BatchNorm2d \(torch.nn or bnref.nn\), got GroupNorm"),
    "conv sizes": (lambda: fold_conv_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(5)),
                   r"bn.num_features must equal the conv's 3 outputs, got 5"),
    "conv no stats": (lambda: fold_conv_bn(nn.Conv2d(2, 3, 1),
                                           bnn.BatchNorm2d(3, track_running_stats=False)),
                      r"bn has no running statistics"),
    "sequential type": (lambda: fold_sequential(nn.Linear(2, 3)),
                        r"model must be a torch.nn.Sequential, got Linear"),
    "sequential sizes": (lambda: fold_sequential(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(4))),
                         r"bn.num_features must equal the linear's 3 outputs, got 4"),
}


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_fold_errors(case):
    call, message = FOLD_CASES[case]
    with pytest.raises(ValueError, match=message):
        call()

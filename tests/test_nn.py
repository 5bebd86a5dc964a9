"""bnref.nn against torch.nn: outputs, gradients, buffers and state dicts (float64, 1e-10)."""

import inspect
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnref.nn as bnn

TOL = dict(rtol=1e-10, atol=1e-10)
CONFIGS = list(itertools.product([0.1, None], [True, False], [True, False]))


def assert_modules_match(ours, theirs):
    """Same parameters, gradients and buffers, entry by entry."""
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key in ours_state:
        torch.testing.assert_close(ours_state[key], theirs_state[key], **TOL, msg=key)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=f"grad of {name}")


def _swap_bn(module):
    """A copy of ``module`` with every torch.nn.BatchNorm1d/2d replaced by bnref's."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            cls = bnn.BatchNorm1d if isinstance(child, nn.BatchNorm1d) else bnn.BatchNorm2d
            ours = cls(child.num_features, eps=child.eps, momentum=child.momentum,
                       affine=child.affine, track_running_stats=child.track_running_stats,
                       dtype=torch.float64)
            ours.load_state_dict(child.state_dict())
            setattr(module, name, ours)
        else:
            _swap_bn(child)
    return module


def _convnet(momentum=0.1, affine=True, track_running_stats=True):
    def bn(c):
        return nn.BatchNorm2d(c, momentum=momentum, affine=affine,
                              track_running_stats=track_running_stats)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), bn(4), nn.ReLU(),
                         nn.Conv2d(4, 3, 3), bn(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                         nn.BatchNorm1d(5, momentum=momentum, affine=affine,
                                        track_running_stats=track_running_stats)).double()


@pytest.mark.parametrize("momentum,affine,track_running_stats", CONFIGS)
def test_swapped_model_matches_torch_over_training_and_eval(momentum, affine, track_running_stats):
    """A ConvNet with bnref's BN layers tracks torch's step for step, then in eval mode."""
    torch.manual_seed(0)
    theirs = _convnet(momentum, affine, track_running_stats)
    ours = _swap_bn(_convnet(momentum, affine, track_running_stats))
    ours.load_state_dict(theirs.state_dict())
    assert sum(isinstance(m, (bnn.BatchNorm1d, bnn.BatchNorm2d)) for m in ours.modules()) == 3
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        x = torch.randn(6, 2, 6, 6, generator=gen, dtype=torch.float64) * (1 + step) + step
        target = torch.randint(0, 5, (6,), generator=gen)
        outs = []
        for model, opt in [(ours, opt_ours), (theirs, opt_theirs)]:
            opt.zero_grad()
            out = model(x)
            F.cross_entropy(out, target).backward()
            outs.append(out)
        torch.testing.assert_close(outs[0], outs[1], **TOL)
        assert_modules_match(ours, theirs)
        opt_ours.step()
        opt_theirs.step()
    ours.eval()
    theirs.eval()
    x = torch.randn(3, 2, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out_ours, out_theirs = ours(x), theirs(x2)
    torch.testing.assert_close(out_ours, out_theirs, **TOL)
    out_ours.sum().backward()
    out_theirs.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, **TOL)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (2, 3, 1)])
@pytest.mark.parametrize("momentum,affine,track_running_stats", CONFIGS)
def test_batchnorm1d_matches_torch(shape, momentum, affine, track_running_stats):
    """(N, C) and (N, C, L) input, train steps then eval, against torch.nn.BatchNorm1d."""
    kwargs = dict(momentum=momentum, affine=affine, track_running_stats=track_running_stats,
                  eps=1e-3, dtype=torch.float64)
    ours, theirs = bnn.BatchNorm1d(3, **kwargs), nn.BatchNorm1d(3, **kwargs)
    if affine:
        with torch.no_grad():
            for m in (ours, theirs):
                m.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
                m.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    gen = torch.Generator().manual_seed(2)
    for mode in ["train"] * 3 + ["eval"]:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 3
        dout = torch.randn(shape, generator=gen, dtype=torch.float64)
        grads = []
        for m in (ours, theirs):
            m.zero_grad()
            xi = x.clone().requires_grad_()
            out = m(xi)
            out.backward(dout)
            grads.append((out, xi.grad))
        torch.testing.assert_close(grads[0][0], grads[1][0], **TOL)
        torch.testing.assert_close(grads[0][1], grads[1][1], **TOL)
        assert_modules_match(ours, theirs)


def test_momentum_none_is_the_cumulative_average():
    """momentum=None: running_mean is the plain mean of the batch means (hand computation)."""
    bn = bnn.BatchNorm1d(2, momentum=None, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 2, generator=gen, dtype=torch.float64) + k for k in range(5)]
    for x in batches:
        bn(x)
    expected_mean = sum(x.mean(dim=0) for x in batches) / 5
    expected_var = sum(x.var(dim=0, unbiased=True) for x in batches) / 5
    torch.testing.assert_close(bn.running_mean, expected_mean, **TOL)
    torch.testing.assert_close(bn.running_var, expected_var, **TOL)
    assert int(bn.num_batches_tracked) == 5


def test_running_var_uses_unbiased_batch_variance():
    x = torch.tensor([[0.0], [2.0], [4.0]], dtype=torch.float64)  # mean 2, unbiased var 4
    bn = bnn.BatchNorm1d(1, momentum=0.5, dtype=torch.float64)
    bn(x)
    assert bn.running_mean.item() == pytest.approx(0.5 * 0 + 0.5 * 2)
    assert bn.running_var.item() == pytest.approx(0.5 * 1 + 0.5 * 4)


def test_track_running_stats_false_uses_batch_stats_in_eval():
    bn = bnn.BatchNorm2d(3, track_running_stats=False, dtype=torch.float64).eval()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64) * 5 + 7
    out = bn(x)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert set(bn.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_function_gradcheck(training, affine):
    """torch.autograd.gradcheck on BatchNormFunction's hand-written backward (float64)."""
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(4, 3, 2, generator=gen, dtype=torch.float64) * 2 + 1).requires_grad_()
    weight = torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_() if affine else None
    bias = torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_() if affine else None
    running_mean = torch.randn(3, generator=gen, dtype=torch.float64)
    running_var = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5
    mean, var = (None, None) if training else (running_mean, running_var)

    def f(x, weight, bias):
        return bnn.BatchNormFunction.apply(x, weight, bias, mean, var, training, 0.1, 1e-5)
    assert torch.autograd.gradcheck(f, (x, weight, bias))


def test_backward_is_hand_written():
    """The graph has one node for the whole normalization: no autograd through it."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = bnn.BatchNorm1d(3, dtype=torch.float64)(x)
    assert type(out.grad_fn).__name__ == "BatchNormFunctionBackward"
    assert out.grad_fn.next_functions[0][0].variable is x


def test_functional_batch_norm_matches_torch():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)
    weight, bias = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    for training in (True, False):
        rm_ours, rv_ours = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
        rm_theirs, rv_theirs = rm_ours.clone(), rv_ours.clone()
        out = bnn.batch_norm(x, rm_ours, rv_ours, weight, bias, training, 0.3, 1e-4)
        ref = F.batch_norm(x, rm_theirs, rv_theirs, weight, bias, training, 0.3, 1e-4)
        torch.testing.assert_close(out, ref, **TOL)
        torch.testing.assert_close(rm_ours, rm_theirs, **TOL)
        torch.testing.assert_close(rv_ours, rv_theirs, **TOL)


@pytest.mark.parametrize("affine,track_running_stats", [(True, True), (False, True), (True, False)])
def test_state_dicts_load_both_ways(affine, track_running_stats):
    kwargs = dict(affine=affine, track_running_stats=track_running_stats)
    theirs = nn.BatchNorm2d(3, **kwargs)
    theirs(torch.randn(4, 3, 2, 2) + 1)  # non-trivial buffers
    ours = bnn.BatchNorm2d(3, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    back = nn.BatchNorm2d(3, **kwargs)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
        assert torch.equal(back.state_dict()[key], value), key
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_device_dtype_and_repr_like_torch():
    ours = bnn.BatchNorm2d(5, eps=1e-3, momentum=0.2, device="cpu", dtype=torch.float64)
    theirs = nn.BatchNorm2d(5, eps=1e-3, momentum=0.2, device="cpu", dtype=torch.float64)
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].dtype == value.dtype, key
    assert ours.weight.device == theirs.weight.device
    assert "eps=0.001, momentum=0.2, affine=True" in repr(ours)


@pytest.mark.skipif("bias" not in inspect.signature(nn.BatchNorm1d).parameters,
                    reason="this torch's BatchNorm1d has no bias argument (added in torch 2.13)")
def test_bias_false_matches_torch():
    """torch 2.13's keyword-only bias=False: a scale without a shift."""
    ours = bnn.BatchNorm1d(3, bias=False, dtype=torch.float64)
    theirs = nn.BatchNorm1d(3, bias=False, dtype=torch.float64)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        ours.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, dtype=torch.float64) + 2
    torch.testing.assert_close(ours(x), theirs(x), **TOL)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), **TOL)
    assert repr(ours) == repr(theirs)


def test_float32_matches_torch_and_eval_needs_no_batch():
    """float32 agrees to float32 precision; a single example is fine in eval mode."""
    torch.manual_seed(6)
    ours, theirs = bnn.BatchNorm2d(4), nn.BatchNorm2d(4)
    x = torch.randn(8, 4, 5, 5) * 3 + 100
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-5)
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x[:1, :, :1, :1]), theirs(x[:1, :, :1, :1]))


def test_nan_propagates_like_torch():
    """A NaN poisons its own channel (output and running statistics), as in torch.nn."""
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    x[1, 2, 0, 1] = float("nan")
    ours, theirs = bnn.BatchNorm2d(3, dtype=torch.float64), nn.BatchNorm2d(3, dtype=torch.float64)
    out_ours, out_theirs = ours(x), theirs(x)
    assert torch.isnan(out_ours[:, 2]).all() and torch.isfinite(out_ours[:, :2]).all()
    torch.testing.assert_close(out_ours, out_theirs, equal_nan=True, **TOL)
    assert torch.isnan(ours.running_mean[2]) and torch.isnan(ours.running_var[2])


def test_double_backward_is_refused():
    """The hand-written backward is not itself differentiable; autograd says so."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = bnn.BatchNorm1d(3, dtype=torch.float64)(x)
    (dx,) = torch.autograd.grad((out ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()

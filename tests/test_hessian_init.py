"""bnref.experiments.top_hessian_eigenvalue against the full Hessian; init_glorot_ against its formula."""
import numpy as np
import pytest
import torch
from torch import nn

import bnref.nn as bnn
from bnref import experiments as ex


def _flat_hessian(model, X, y):
    """The full Hessian of the cross-entropy over all parameters, by torch.autograd.functional."""
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    names = [n for n, _ in model.named_parameters()]

    def loss_of(flat):
        chunks = torch.split(flat, sizes)
        new = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        out = torch.func.functional_call(model, new, (X,))
        return nn.functional.cross_entropy(out, y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(loss_of, flat)


@pytest.mark.parametrize("norm", [None, nn.BatchNorm1d])
def test_top_hessian_eigenvalue_matches_eigvalsh(norm):
    torch.manual_seed(0)
    model = ex.make_mlp([5, 6, 4, 3], norm=norm, activation="sigmoid").double()
    X = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    model.train()
    H = _flat_hessian(model, X, y)
    eig = np.linalg.eigvalsh(H.numpy())
    got = ex.top_hessian_eigenvalue(model, X, y, iters=500)
    assert got == pytest.approx(eig[-1], rel=1e-3)


def test_top_hessian_eigenvalue_finds_the_positive_top_when_a_negative_one_is_larger():
    # loss = cross-entropy of logits [a * b, 0] at a = b = 0 and class 1: Hessian of
    # a*b scaled by dL/dlogit0 = 1/2, eigenvalues +1/2 and -1/2; add a stronger
    # negative direction through a third parameter c with logit c**2 * (-3).
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(3, dtype=torch.float64))

        def forward(self, X):
            a, b, c = self.p
            logit0 = a * b - 3 * c ** 2
            return torch.stack([logit0, torch.zeros((), dtype=torch.float64)]).expand(len(X), 2)

    X, y = torch.zeros(1, 1), torch.tensor([1])
    H = torch.autograd.functional.hessian(
        lambda p: nn.functional.cross_entropy(torch.func.functional_call(Toy(), {"p": p}, (X,)), y),
        torch.zeros(3, dtype=torch.float64))
    eig = np.linalg.eigvalsh(H.numpy())
    assert abs(eig[0]) > eig[-1] > 0                      # the case this test is about
    assert ex.top_hessian_eigenvalue(Toy(), X, y, iters=200) == pytest.approx(eig[-1], rel=1e-6)


def test_top_hessian_eigenvalue_leaves_running_statistics_and_mode():
    torch.manual_seed(0)
    model = ex.make_mlp([5, 6, 3], norm=nn.BatchNorm1d)
    before = {k: b.clone() for k, b in model.named_buffers()}
    model.eval()
    ex.top_hessian_eigenvalue(model, torch.randn(8, 5), torch.randint(0, 3, (8,)), iters=2)
    assert not model.training
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k]), k


def test_top_hessian_eigenvalue_refuses_once_differentiable_bnref_layers():
    model = ex.make_mlp([3, 4, 2], norm=bnn.BatchNorm1d)
    with pytest.raises(ValueError, match="twice differentiable"):
        ex.top_hessian_eigenvalue(model, torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_top_hessian_eigenvalue_rejects_bad_iters():
    model = ex.make_mlp([3, 2])
    with pytest.raises(ValueError, match="iters"):
        ex.top_hessian_eigenvalue(model, torch.randn(4, 3), torch.zeros(4, dtype=torch.long), iters=0)


def test_init_glorot_bounds_and_variance():
    model = ex.make_mlp([300, 200, 10], activation="sigmoid")
    ex.init_glorot_(model, gain=4.0, seed=0)
    lin = model[0]
    bound = 4.0 * np.sqrt(6.0 / (300 + 200))
    w = lin.weight.detach()
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.99 * bound
    # U(-a, a) has variance a^2 / 3
    assert float(w.var()) == pytest.approx(bound ** 2 / 3, rel=0.02)
    assert float(lin.bias.detach().abs().max()) == 0.0


def test_init_glorot_rejects_bad_gain():
    with pytest.raises(ValueError, match="gain"):
        ex.init_glorot_(ex.make_mlp([3, 2]), gain=0)

"""bnref.experiments helpers of the practical-recipe chapter: weight-decay
parameter groups, training with a given optimizer, residual MLPs.

Oracles: torch.optim's own weight-decay semantics, bnref.experiments.train
(an independent loop with the same batch order), and residual blocks written
out with torch.nn.functional.batch_norm.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnref.nn as bnn
from bnref.experiments import (make_mlp, make_residual_mlp, train, train_with_optimizer,
                               weight_decay_groups)


def _data(n=96, d=12, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_weight_decay_groups_decay_weights_and_spare_gamma_beta_and_biases():
    torch.manual_seed(0)
    model = make_mlp([12, 8, 8, 4], norm=bnn.BatchNorm1d)
    decayed, spared = weight_decay_groups(model, 0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    linear_weights = {f"{i}.weight" for i, m in enumerate(model) if isinstance(m, nn.Linear)}
    assert {names[id(p)] for p in decayed["params"]} == linear_weights
    assert decayed["weight_decay"] == 0.5 and spared["weight_decay"] == 0.0
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))
    # With zero gradients, one SGD step shrinks exactly the decayed tensors by (1 - lr * wd).
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(weight_decay_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if n in linear_weights else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor)


@pytest.mark.parametrize("bad", [-1e-4, "0.1", True, float("nan")])
def test_weight_decay_groups_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="weight_decay"):
        weight_decay_groups(make_mlp([3, 2]), bad)


def test_train_with_optimizer_matches_train_with_plain_sgd():
    X, y = _data()
    torch.manual_seed(1)
    a = make_mlp([12, 16, 4], norm=bnn.BatchNorm1d)
    b = make_mlp([12, 16, 4], norm=bnn.BatchNorm1d)
    b.load_state_dict(a.state_dict())
    steps_seen = []
    losses = train_with_optimizer(a, torch.optim.SGD(a.parameters(), lr=0.05), X, y, steps=7,
                                  batch_size=32, seed=3, callback=lambda s, m: steps_seen.append(s))
    history = train(b, X, y, steps=7, batch_size=32, lr=0.05, seed=3)
    assert steps_seen == list(range(1, 8))
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(history["loss"]))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert not a.training


def test_train_with_optimizer_rejects_bad_arguments():
    X, y = _data()
    model = make_mlp([12, 4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        train_with_optimizer(model, opt, X, y, steps=-1)
    with pytest.raises(ValueError, match="batch_size"):
        train_with_optimizer(model, opt, X, y, steps=1, batch_size=len(X) + 1)


def _bn(x, bn):
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


@pytest.mark.parametrize("order", ["post", "pre"])
def test_residual_blocks_compute_the_documented_formula(order):
    torch.manual_seed(2)
    net = make_residual_mlp(in_features=12, width=8, blocks=2, num_classes=4, order=order).train()
    block = net[3] if order == "post" else net[1]
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))         # gamma and beta away from 1 and 0
        x = torch.relu(torch.randn(16, 8))
        if order == "post":
            expected = torch.relu(x + _bn(block.fc2(torch.relu(_bn(block.fc1(x), block.bn1))), block.bn2))
        else:
            expected = x + block.fc2(torch.relu(_bn(block.fc1(torch.relu(_bn(x, block.bn1))), block.bn2)))
        torch.testing.assert_close(block(x), expected)


def test_zero_last_gamma_makes_every_block_the_identity_on_nonnegative_input():
    torch.manual_seed(3)
    net = make_residual_mlp(in_features=12, width=8, blocks=3, num_classes=4,
                            zero_init_last_gamma=True).train()
    x = torch.relu(torch.randn(16, 8))
    with torch.no_grad():
        for block in net[3:6]:
            assert torch.equal(block(x), x)
        assert not torch.equal(make_residual_mlp(in_features=12, width=8, blocks=1).train()[3](x), x)
    assert net(torch.randn(5, 12)).shape == (5, 4)


def test_make_residual_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        make_residual_mlp(order="middle")
    with pytest.raises(ValueError, match="blocks"):
        make_residual_mlp(blocks=0)
    with pytest.raises(ValueError, match="zero_init_last_gamma"):
        make_residual_mlp(order="pre", zero_init_last_gamma=True)

"""Shared test helpers: hypothesis strategies, the PyTorch oracle, numerical gradients.

As in minitorch, every test module draws its shapes from the strategies here
and checks hand-written code against one of two independent oracles:
PyTorch's own implementation (with autograd for the gradients) or central
differences from :mod:`bnref.gradcheck`.

Test modules import these helpers with ``from conftest import ...`` (pytest
puts this folder on ``sys.path``).
"""

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bnref.gradcheck import eval_numerical_gradient_array

# The tensors in the tests are tiny: intra-op threads only spin and wait on
# each other, which on a loaded two-core CI machine made the suite three
# times slower (33 s against 11 s for the bnref tests).
torch.set_num_threads(1)

# Few examples keep the whole suite fast on two cores; each example already
# checks dozens of numbers against PyTorch.
FAST = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def rows_shapes(draw, min_n=2):
    """(N, D) for batch and layer norm."""
    return draw(st.integers(min_n, 9)), draw(st.integers(1, 7))


@st.composite
def nchw_shapes(draw, min_n=1):
    """(N, C, H, W) with at least two values per channel."""
    shape = (draw(st.integers(min_n, 4)), draw(st.integers(1, 5)),
             draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if shape[0] * shape[2] * shape[3] < 2:
        shape = (2,) + shape[1:]
    return shape


@st.composite
def groupnorm_cases(draw):
    """(shape, G) with G dividing C and at least two values per group (as PyTorch requires)."""
    G = draw(st.integers(1, 3))
    C = G * draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if (C // G) * H * W < 2:
        W = 2
    return (draw(st.integers(1, 3)), C, H, W), G


seeds = st.integers(0, 2**31 - 1)


def random_inputs(shape, param_shape, seed, dtype=np.float64):
    """x (with a non-zero mean and non-unit spread), gamma, beta and dout."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * rng.uniform(0.5, 3.0) + rng.uniform(-4, 4)).astype(dtype)
    gamma = rng.normal(1.0, 0.5, size=param_shape).astype(dtype)
    beta = rng.normal(0.0, 0.5, size=param_shape).astype(dtype)
    dout = rng.normal(size=shape).astype(dtype)
    return x, gamma, beta, dout


def torch_reference(fn, x, gamma, beta, dout):
    """Run ``fn(x, gamma, beta)`` on float64 torch tensors and backprop ``dout``.

    Returns:
        out, dx, dgamma, dbeta as NumPy arrays (gradients shaped like the inputs).
    """
    xt, gt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True)
                  for a in (x, gamma, beta))
    out = fn(xt, gt, bt)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def numerical_grads(forward, x, gamma, beta, dout):
    """Central-difference dx, dgamma, dbeta of ``sum(forward(x, gamma, beta) * dout)``.

    ``forward`` must not change state between calls (use test mode or a fresh
    bn_param per call for batch norm in train mode).
    """
    dx = eval_numerical_gradient_array(lambda a: forward(a, gamma, beta), x, dout)
    dgamma = eval_numerical_gradient_array(lambda a: forward(x, a, beta), gamma, dout)
    dbeta = eval_numerical_gradient_array(lambda a: forward(x, gamma, a), beta, dout)
    return dx, dgamma, dbeta

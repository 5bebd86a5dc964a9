"""bnref.gradcheck against derivatives and relative errors worked out by hand."""

import numpy as np
import pytest

from bnref.gradcheck import eval_numerical_gradient_array, rel_error


def test_numerical_gradient_of_known_functions():
    """d/dx sum(sin(x) * df) = cos(x) * df and d/dx sum(x^3 * df) = 3 x^2 df."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    df = rng.normal(size=(3, 4))
    grad = eval_numerical_gradient_array(np.sin, x, df)
    np.testing.assert_allclose(grad, np.cos(x) * df, rtol=1e-8, atol=1e-9)
    grad = eval_numerical_gradient_array(lambda a: a**3, x, df)
    np.testing.assert_allclose(grad, 3 * x**2 * df, rtol=1e-8, atol=1e-9)


def test_numerical_gradient_couples_elements_and_restores_x():
    """f mixes elements (a cumulative sum), and x is left exactly as it was."""
    x = np.array([1.0, -2.0, 0.5])
    x_before = x.copy()
    df = np.array([1.0, 2.0, 3.0])
    # out_j = sum_{i<=j} x_i, so d/dx_i sum_j out_j df_j = sum_{j>=i} df_j
    grad = eval_numerical_gradient_array(np.cumsum, x, df)
    np.testing.assert_allclose(grad, [6.0, 5.0, 3.0], rtol=1e-9)
    assert np.array_equal(x, x_before)


def test_rel_error_by_hand():
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)
    assert rel_error(np.array([1.0, 3.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    # Both tiny: the 1e-8 floor keeps the ratio finite and small.
    assert rel_error(np.array([1e-12]), np.array([-1e-12])) == pytest.approx(2e-4)


def test_errors():
    with pytest.raises(ValueError, match=r"x must be a floating-point numpy.ndarray.*int64"):
        eval_numerical_gradient_array(np.sin, np.arange(3), np.ones(3))
    with pytest.raises(ValueError, match=r"x must be a floating-point numpy.ndarray, got list"):
        eval_numerical_gradient_array(np.sin, [1.0, 2.0], np.ones(2))
    with pytest.raises(ValueError, match=r"h must be positive, got 0"):
        eval_numerical_gradient_array(np.sin, np.ones(2), np.ones(2), h=0)
    with pytest.raises(ValueError, match=r"df must have the shape of f\(x\), \(2,\), got \(1,\)"):
        eval_numerical_gradient_array(np.sin, np.ones(2), np.ones(1))
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        rel_error(np.ones(2), np.ones(3))

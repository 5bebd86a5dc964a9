"""bnref.experiments: the data split, the model builders and a short training run."""

import numpy as np
import pytest
import torch
from torch import nn

import bnref.nn as bnn
from bnref.experiments import (accuracy, digits_tensors, load_digits_split, make_convnet,
                               make_mlp, train)


def test_load_digits_split_sizes_and_standardization():
    X_train, y_train, X_test, y_test = load_digits_split(test_fraction=0.25, seed=0)
    assert len(X_train) + len(X_test) == 1797  # scikit-learn's digits
    assert len(X_test) == int(np.ceil(0.25 * 1797))
    assert X_train.shape[1] == 64 and X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    std = X_train.std(axis=0)
    varying = std > 0
    np.testing.assert_allclose(X_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(std[varying], 1, atol=1e-4)
    assert not np.allclose(X_test.mean(axis=0)[varying], 0, atol=1e-5)  # test set uses train stats
    raw_train, *_ = load_digits_split(seed=0, standardize=False)
    assert raw_train.min() == 0 and raw_train.max() == 16


def test_digits_tensors_image_shape():
    X_train, y_train, X_test, _ = digits_tensors(image=True)
    assert X_train.shape[1:] == (1, 8, 8) and X_test.shape[1:] == (1, 8, 8)
    assert X_train.dtype == torch.float32 and y_train.dtype == torch.int64


@pytest.mark.parametrize("norm,bias,expected_bias", [
    (None, None, True), (nn.BatchNorm1d, None, False), (bnn.BatchNorm1d, True, True),
])
def test_make_mlp_structure(norm, bias, expected_bias):
    model = make_mlp([64, 20, 10, 3], norm=norm, bias=bias, activation="tanh")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 20), (20, 10), (10, 3)]
    assert [m.bias is not None for m in linears[:-1]] == [expected_bias] * 2
    assert linears[-1].bias is not None
    norms = [m for m in model if norm is not None and isinstance(m, norm)]
    assert [m.num_features for m in norms] == ([20, 10] if norm else [])
    assert sum(isinstance(m, nn.Tanh) for m in model) == 2


def test_make_convnet_output_and_norms():
    model = make_convnet(channels=(4, 6), num_classes=7, norm=bnn.BatchNorm2d)
    assert [m.num_features for m in model if isinstance(m, bnn.BatchNorm2d)] == [4, 6]
    assert all(m.bias is None for m in model if isinstance(m, nn.Conv2d))
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 7)


def test_train_reduces_loss_and_records_accuracy():
    torch.manual_seed(0)
    X_train, y_train, X_test, y_test = digits_tensors()
    model = make_mlp([64, 32, 10], norm=bnn.BatchNorm1d)
    chance = accuracy(model.eval(), X_test, y_test)
    history = train(model, X_train, y_train, steps=60, batch_size=32, lr=0.1, seed=0,
                    eval_every=30, X_test=X_test, y_test=y_test)
    assert len(history["loss"]) == 60 and history["step"] == [30, 60]
    assert np.mean(history["loss"][-10:]) < 0.5 * np.mean(history["loss"][:5])
    assert history["test_acc"][-1] == pytest.approx(accuracy(model, X_test, y_test))
    assert history["test_acc"][-1] > max(0.8, chance)
    assert not model.training

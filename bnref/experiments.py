"""Small, seeded experiments on scikit-learn's bundled handwritten digits.

The book's chapters and the assignments train tiny models here: an MLP on
the 64 pixel features and a ConvNet on the 8x8 images. Everything is seeded
and sized to run in seconds on two CPU cores.
"""

import numpy as np


def load_digits_split(test_fraction=0.25, seed=0, standardize=True):
    """The 1797 digits, split into train and test arrays.

    Args:
        test_fraction: share of examples held out for testing, in (0, 1).
        seed: seed of the shuffle.
        standardize: scale pixels to zero mean and unit variance per feature,
            with statistics from the training split only.

    Returns:
        X_train (N, 64) float32, y_train (N,) int64, X_test, y_test.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    digits = load_digits()
    X = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if standardize:
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std[std == 0] = 1.0  # constant border pixels: leave them at zero
        X_train = (X_train - mean) / std
        X_test = (X_test - mean) / std
    return X_train, y_train, X_test, y_test


def digits_tensors(image=False, **kwargs):
    """:func:`load_digits_split` as torch tensors; ``image=True`` gives (N, 1, 8, 8)."""
    import torch

    X_train, y_train, X_test, y_test = load_digits_split(**kwargs)
    shape = (-1, 1, 8, 8) if image else (-1, 64)
    return (torch.from_numpy(X_train).reshape(shape), torch.from_numpy(y_train),
            torch.from_numpy(X_test).reshape(shape), torch.from_numpy(y_test))


def make_mlp(sizes, norm=None, activation="relu", bias=None):
    """A fully connected network with an optional norm layer after each hidden linear layer.

    Args:
        sizes: layer widths, e.g. ``[64, 100, 100, 10]``.
        norm: ``None``, or a callable ``norm(num_features) -> nn.Module``
            (``torch.nn.BatchNorm1d``, ``bnref.nn.BatchNorm1d``, ...).
        activation: 'relu', 'tanh' or 'sigmoid'.
        bias: whether hidden linear layers carry a bias; by default only when
            there is no norm layer (a norm layer's shift makes it redundant).

    Returns:
        ``torch.nn.Sequential``.
    """
    from torch import nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes!r}")
    hidden_bias = (norm is None) if bias is None else bias
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(nn.Linear(fan_in, fan_out, bias=hidden_bias))
        if norm is not None:
            layers.append(norm(fan_out))
        layers.append(acts[activation]())
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def make_convnet(channels=(16, 32), num_classes=10, norm=None):
    """A small ConvNet for 8x8 digits: conv-norm-ReLU blocks, a pool, a classifier.

    Args:
        channels: output channels of each 3x3 conv block; a 2x2 max-pool follows the first.
        num_classes: output size.
        norm: ``None`` or a callable ``norm(num_channels) -> nn.Module``
            (``torch.nn.BatchNorm2d``, ``bnref.nn.BatchNorm2d``, a GroupNorm factory, ...).

    Returns:
        ``torch.nn.Sequential`` mapping (N, 1, 8, 8) to (N, num_classes).
    """
    from torch import nn

    layers, in_ch = [], 1
    for i, out_ch in enumerate(channels):
        layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=norm is None))
        if norm is not None:
            layers.append(norm(out_ch))
        layers.append(nn.ReLU())
        if i == 0:
            layers.append(nn.MaxPool2d(2))
        in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]
    return nn.Sequential(*layers)


def accuracy(model, X, y, batch_size=None):
    """Classification accuracy of ``model`` in its current train/eval mode.

    ``batch_size=None`` evaluates the whole set as one batch.
    """
    import torch

    with torch.no_grad():
        if batch_size is None:
            pred = model(X).argmax(dim=1)
        else:
            pred = torch.cat([model(X[i:i + batch_size]).argmax(dim=1)
                              for i in range(0, len(X), batch_size)])
    return float((pred == y).float().mean())


def _batches(n, batch_size, seed):
    """Index tensors of mini-batches from ``n`` examples, without replacement within an
    epoch (a fresh permutation when the next batch would not fit), forever."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(n, generator=gen), 0
    while True:
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos:pos + batch_size]
        pos += batch_size


def train(model, X, y, *, steps, batch_size=64, lr=0.1, optimizer="sgd",
          seed=0, eval_every=None, X_test=None, y_test=None, progress=False):
    """Mini-batch training with cross-entropy; returns a history dict.

    Args:
        model: a ``torch.nn.Module`` producing logits.
        X, y: training tensors.
        steps: number of parameter updates.
        batch_size: examples per mini-batch (sampled without replacement within an epoch).
        lr: learning rate.
        optimizer: 'sgd', 'momentum' (SGD with 0.9), 'rmsprop' or 'adam'.
        seed: seeds the batch order.
        eval_every: if set, record test accuracy (eval mode) every that many steps.
        X_test, y_test: the evaluation set for ``eval_every``.
        progress: show a tqdm progress bar.

    Returns:
        ``{"loss": [...], "step": [...], "test_acc": [...]}``; ``loss`` has one
        entry per step (NaN once training diverges), ``test_acc`` one per evaluation.
    """
    import torch
    from torch import nn

    optimizers = {
        "sgd": lambda p: torch.optim.SGD(p, lr=lr),
        "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr),
        "adam": lambda p: torch.optim.Adam(p, lr=lr),
    }
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    if eval_every is not None and (X_test is None or y_test is None):
        raise ValueError("eval_every needs X_test and y_test")
    opt = optimizers[optimizer](model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    history = {"loss": [], "step": [], "test_acc": []}
    steps_iter = range(steps)
    if progress:
        from tqdm.auto import tqdm
        steps_iter = tqdm(steps_iter, desc="training", leave=False)
    for step, idx in zip(steps_iter, _batches(len(X), batch_size, seed)):
        model.train()
        loss = loss_fn(model(X[idx]), y[idx])
        history["loss"].append(loss.item())
        if not torch.isfinite(loss):
            history["loss"] += [float("nan")] * (steps - step - 1)
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        if eval_every is not None and (step + 1) % eval_every == 0:
            model.eval()
            history["step"].append(step + 1)
            history["test_acc"].append(accuracy(model, X_test, y_test))
    model.eval()
    return history


# --- Helpers for the chapters on input normalization and initialization ---

def gd_least_squares(X, y, lr, steps, w0=None, batch_size=None, seed=0):
    """(Stochastic) gradient descent on ``L(w) = mean((X @ w - y)**2) / 2``.

    Args:
        X: (N, D) inputs.
        y: (N,) targets.
        lr: learning rate.
        steps: number of updates.
        w0: (D,) starting weights; zeros by default.
        batch_size: ``None`` for full-batch gradient descent, else the number of
            examples drawn (without replacement, reshuffled every epoch) per update.
        seed: seeds the example order when ``batch_size`` is set.

    Returns:
        (steps + 1, D) array: the starting point and the weights after every update.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (N, D) and y (N,), got {X.shape} and {y.shape}")
    if batch_size is not None and not 1 <= batch_size <= len(X):
        raise ValueError(f"batch_size must be None or in [1, {len(X)}], got {batch_size!r}")
    w = np.zeros(X.shape[1]) if w0 is None else np.array(w0, dtype=np.float64)
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(len(X)), 0
    path = [w.copy()]
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            if batch_size is None:
                Xb, yb = X, y
            else:
                if pos + batch_size > len(X):
                    order, pos = rng.permutation(len(X)), 0
                idx = order[pos:pos + batch_size]
                pos += batch_size
                Xb, yb = X[idx], y[idx]
            w = w - lr * Xb.T @ (Xb @ w - yb) / len(Xb)
            path.append(w.copy())
    return np.array(path)


def largest_stable_lr(X):
    """Largest learning rate for which full-batch GD on least squares converges.

    The loss ``mean((X @ w - y)**2) / 2`` has Hessian ``H = X.T @ X / N``; gradient
    descent contracts every eigendirection iff ``lr < 2 / lambda_max(H)``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (N, D) array, got shape {X.shape}")
    lambda_max = np.linalg.eigvalsh(X.T @ X / len(X))[-1]
    return 2.0 / lambda_max


def init_weights_(model, scheme, seed=0):
    """Re-initialize every ``nn.Linear`` weight in place; biases become zero.

    Args:
        model: a ``torch.nn.Module``.
        scheme: 'small' (std 0.01), 'large' (std 1), 'xavier' (std
            ``1/sqrt(fan_in)``, Glorot and Bengio's variance-preserving choice for
            fan_in = fan_out) or 'he' (std ``sqrt(2/fan_in)``, for ReLU).
        seed: seeds the draws.

    Returns:
        ``model``.
    """
    import torch
    from torch import nn

    stds = {"small": lambda n: 0.01, "large": lambda n: 1.0,
            "xavier": lambda n: (1.0 / n) ** 0.5, "he": lambda n: (2.0 / n) ** 0.5}
    if scheme not in stds:
        raise ValueError(f"scheme must be one of {sorted(stds)}, got {scheme!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                std = stds[scheme](layer.in_features)
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
                if layer.bias is not None:
                    layer.bias.zero_()
    return model


def layer_activations(model, x):
    """Outputs of every activation module (ReLU, LeakyReLU, ELU, Tanh, Sigmoid), in order.

    Runs one forward pass of ``x`` through ``model`` (in its current mode, without
    gradients) and returns a list of NumPy arrays, one per activation layer.
    """
    import torch
    from torch import nn

    kinds = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, out: outputs.append(out.detach().numpy().copy()))
             for m in model.modules() if isinstance(m, kinds)]
    if not hooks:
        raise ValueError(f"model has no activation module among {[k.__name__ for k in kinds]}")
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def _batch_norm_layers(model):
    """Modules that keep running statistics (torch.nn and bnref.nn batch norm alike)."""
    import torch

    return [m for m in model.modules()
            if isinstance(getattr(m, "running_mean", None), torch.Tensor)
            and isinstance(getattr(m, "running_var", None), torch.Tensor)]


def population_statistics_(model, X, batch_size=64, seed=0):
    """Replace every BN layer's running statistics by population statistics over ``X``.

    PreciseBN (Wu and Johnson, 2021): with the weights fixed, run the model in
    training mode over all of ``X`` in shuffled mini-batches, record each BN
    layer's per-batch mean and biased variance of its input, and merge them
    into the mean and variance over every value the layer saw::

        mean = sum_B n_B * mean_B / n
        var  = sum_B n_B * (var_B + (mean_B - mean)**2) / n

    This is the law of total variance, so the result is the variance of all
    the values for any batching. Averaging the batch variances alone falls
    short by exactly the spread of the batch means (the second term); for
    shuffled batches of equal size ``m`` that shortfall is on average the
    familiar factor ``(m - 1) / m``, one bias, which a correction by
    ``m / (m - 1)`` removes only on average and only for such batches, while the
    merge removes it for class-ordered or correlated batches and unequal sizes
    too. Upstream BN layers normalize with batch statistics while this runs,
    as they do in training. A last batch of a single example joins the batch
    before it (training-mode BN cannot normalize one example).

    Args:
        model: a ``torch.nn.Module`` with at least one batch-norm layer.
        X: input tensor, ``len(X) >= 2``.
        batch_size: examples per mini-batch, at least 2.
        seed: seeds the shuffle.

    Returns:
        ``model``, with running_mean/running_var set to the population mean and
        (biased) population variance, its train/eval mode and
        ``num_batches_tracked`` as they were.
    """
    import torch

    layers = _batch_norm_layers(model)
    if not layers:
        raise ValueError("model must contain a batch-norm layer with running statistics, found none")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2, got {batch_size!r}")
    if not isinstance(X, torch.Tensor) or X.ndim < 2 or len(X) < 2:
        raise ValueError(f"X must be a tensor of at least 2 examples, got "
                         f"{type(X).__name__} of shape {tuple(getattr(X, 'shape', ()))}")
    stats = {id(m): [] for m in layers}  # per layer: (n_B, mean_B, var_B) in float64

    def record(module, args):
        x = args[0].detach().double()
        dims = (0,) + tuple(range(2, x.ndim))                    # all but channels
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)  # C  C
        stats[id(module)].append((x.numel() // x.shape[1], mean, var))

    was_training = model.training
    tracked = [m.num_batches_tracked.clone() if getattr(m, "num_batches_tracked", None) is not None
               else None for m in layers]
    hooks = [m.register_forward_pre_hook(record) for m in layers]
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    chunks = list(order.split(batch_size))
    if len(chunks[-1]) < 2:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    try:
        model.train()
        with torch.no_grad():
            for idx in chunks:
                model(X[idx])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    with torch.no_grad():
        for m, saved in zip(layers, tracked):
            n_b = torch.tensor([s[0] for s in stats[id(m)]], dtype=torch.float64)[:, None]
            means = torch.stack([s[1] for s in stats[id(m)]])    # batches,C
            variances = torch.stack([s[2] for s in stats[id(m)]])
            mean = (n_b * means).sum(0) / n_b.sum()               # C
            var = (n_b * (variances + (means - mean) ** 2)).sum(0) / n_b.sum()
            m.running_mean.copy_(mean.to(m.running_mean.dtype))
            m.running_var.copy_(var.to(m.running_var.dtype))
            if saved is not None:
                m.num_batches_tracked.copy_(saved)
    return model


def interactive_progress():
    """Whether long loops should draw a progress bar (``train(progress=...)``).

    True in a notebook that a person runs in Jupyter (the server sets
    ``JPY_SESSION_NAME`` for the kernel; VS Code does too) or in Colab; False
    in scripts and when the book is built (nbclient sets neither), so built
    pages stay free of progress bars. ``BNREF_PROGRESS=1`` or ``0`` overrides.
    """
    import os

    setting = os.environ.get("BNREF_PROGRESS")
    if setting is not None:
        return setting.strip().lower() not in ("", "0", "false", "no")
    return "JPY_SESSION_NAME" in os.environ or "COLAB_RELEASE_TAG" in os.environ


# --- Helpers for the practical recipe (weight decay, parameter groups) ---

def weight_decay_groups(model, weight_decay):
    """Optimizer parameter groups that decay weight matrices and kernels only.

    Parameters with two or more dimensions (linear weights, convolution kernels)
    get ``weight_decay``; one-dimensional ones (biases, BN's gamma and beta) get
    none, the usual recipe for networks with batch norm.

    Args:
        model: a ``torch.nn.Module``.
        weight_decay: a float >= 0 for the decayed group.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``,
        ready for any ``torch.optim`` optimizer.
    """
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have trainable parameters, found none")
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": float(weight_decay)},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def train_with_optimizer(model, optimizer, X, y, *, steps, batch_size=64, seed=0, callback=None):
    """Mini-batch cross-entropy training with a ready ``torch.optim`` optimizer.

    Draws the same batches as :func:`train` for the same ``seed`` (without
    replacement within an epoch), so that the two differ only in the optimizer.

    Args:
        model: a ``torch.nn.Module`` producing logits.
        optimizer: a ``torch.optim.Optimizer`` over ``model``'s parameters.
        X, y: training tensors.
        steps: number of parameter updates.
        batch_size: examples per mini-batch, at most ``len(X)``.
        seed: seeds the batch order.
        callback: optional ``callback(step, model)``, called after each update
            (``step`` counts from 1) with the model in training mode.

    Returns:
        The list of training-batch losses, one per step.
    """
    from torch import nn

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(X):
        raise ValueError(f"batch_size must be an integer in [1, len(X)={len(X)}], got {batch_size!r}")
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for step, idx in zip(range(steps), _batches(len(X), batch_size, seed)):
        model.train()
        loss = loss_fn(model(X[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step + 1, model)
    model.eval()
    return losses


_RESIDUAL_BLOCK = []  # the class, built once on first use (torch is imported lazily here)


def _residual_block_class():
    if _RESIDUAL_BLOCK:
        return _RESIDUAL_BLOCK[0]
    import torch
    from torch import nn

    import bnref.nn as bnn

    class ResidualBlock(nn.Module):
        """A fully connected residual block with batch norm, post- or pre-activation.

        ``"post"`` (He et al., 2016): ``relu(x + bn2(fc2(relu(bn1(fc1(x))))))``.
        ``"pre"`` (He et al., identity mappings): ``x + fc2(relu(bn2(fc1(relu(bn1(x))))))``.
        """

        def __init__(self, width, order="post"):
            super().__init__()
            if order not in ("post", "pre"):
                raise ValueError(f"order must be 'post' or 'pre', got {order!r}")
            self.order = order
            self.fc1 = nn.Linear(width, width, bias=False)
            self.fc2 = nn.Linear(width, width, bias=order == "pre")  # no BN follows it in "pre"
            self.bn1, self.bn2 = bnn.BatchNorm1d(width), bnn.BatchNorm1d(width)

        def forward(self, x):  # N,width -> N,width
            if self.order == "post":
                branch = self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x)))))
                return torch.relu(x + branch)
            return x + self.fc2(torch.relu(self.bn2(self.fc1(torch.relu(self.bn1(x))))))

    _RESIDUAL_BLOCK.append(ResidualBlock)
    return ResidualBlock


def make_residual_mlp(in_features=64, width=64, blocks=4, num_classes=10, order="post",
                      zero_init_last_gamma=False):
    """A residual MLP with ``bnref.nn.BatchNorm1d``: stem, residual blocks, classifier.

    Args:
        in_features, width, num_classes: input, hidden and output sizes.
        blocks: number of residual blocks, at least 1.
        order: ``"post"`` (linear-BN-ReLU-linear-BN, add, ReLU; the stem is
            linear-BN-ReLU) or ``"pre"`` (BN-ReLU-linear twice, add; a final
            BN-ReLU before the classifier).
        zero_init_last_gamma: start the last BN of every ``"post"`` block with
            gamma = 0, so that each block starts as the identity on its
            (non-negative) input (Goyal et al., 2017).

    Returns:
        ``torch.nn.Sequential``; the blocks are its modules of type ``ResidualBlock``.
    """
    from torch import nn

    import bnref.nn as bnn

    if order not in ("post", "pre"):
        raise ValueError(f"order must be 'post' or 'pre', got {order!r}")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks must be an integer >= 1, got {blocks!r}")
    if zero_init_last_gamma and order != "post":
        raise ValueError("zero_init_last_gamma needs order='post' (a 'pre' block ends in a linear layer, not BN)")
    Block = _residual_block_class()
    if order == "post":
        layers = [nn.Linear(in_features, width, bias=False), bnn.BatchNorm1d(width), nn.ReLU()]
    else:
        layers = [nn.Linear(in_features, width)]
    for _ in range(blocks):
        block = Block(width, order)
        if zero_init_last_gamma:
            nn.init.zeros_(block.bn2.weight)
        layers.append(block)
    if order == "pre":
        layers += [bnn.BatchNorm1d(width), nn.ReLU()]
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


# --- Initialization gains per activation ---

def init_with_gain_(model, gain, mode="fan_avg", bias=0.0, seed=0):
    """Re-initialize every ``nn.Linear`` in place with a Gaussian scaled by a gain.

    The weight std is ``gain * sqrt(2 / (fan_in + fan_out))`` (Glorot and
    Bengio's compromise, ``mode='fan_avg'``) or ``gain / sqrt(fan_in)``
    (``mode='fan_in'``); the usual gains are 1 for a linear layer, 5/3 for
    tanh, sqrt(2) for ReLU and 4 for sigmoid (whose slope at zero is 1/4).

    Args:
        model: a ``torch.nn.Module``.
        gain: positive float multiplying the variance-preserving std.
        mode: 'fan_avg' or 'fan_in'.
        bias: the constant every bias is set to (0 by default; a small
            positive value is the old advice for ReLU units).
        seed: seeds the draws.

    Returns:
        ``model``.
    """
    import torch
    from torch import nn

    if mode not in ("fan_avg", "fan_in"):
        raise ValueError(f"mode must be 'fan_avg' or 'fan_in', got {mode!r}")
    if not gain > 0:
        raise ValueError(f"gain must be a positive number, got {gain!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                fan_in, fan_out = layer.in_features, layer.out_features
                std = gain * ((2.0 / (fan_in + fan_out)) if mode == "fan_avg" else (1.0 / fan_in)) ** 0.5
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
                if layer.bias is not None:
                    layer.bias.fill_(bias)
    return model


def sigmoid_layer_statistics(model, X, y):
    """Per hidden sigmoid layer: pre-activation std, mean slope, and the std of its weight gradient.

    One forward and backward pass of the cross-entropy loss on ``(X, y)``
    through a ``make_mlp(..., activation='sigmoid')`` network.

    Returns:
        ``{"pre_std": [...], "slope": [...], "weight_std": [...],
        "weight_grad_std": [...]}``, one entry per hidden layer, from the input
        side (``weight_std`` and ``weight_grad_std`` are those of the linear
        layer that feeds the sigmoid).
    """
    import torch
    from torch import nn

    pre = []
    hooks = [m.register_forward_hook(lambda m, inp, out: pre.append(inp[0].detach()))
             for m in model if isinstance(m, nn.Sigmoid)]
    if not hooks:
        raise ValueError("model has no nn.Sigmoid layer: expected a make_mlp(..., activation='sigmoid') network")
    model.zero_grad()
    try:
        nn.functional.cross_entropy(model(X), y).backward()
    finally:
        for h in hooks:
            h.remove()
    linears = [m for m in model if isinstance(m, nn.Linear)][:len(pre)]
    return {"pre_std": [float(z.std()) for z in pre],
            "slope": [float((torch.sigmoid(z) * (1 - torch.sigmoid(z))).mean()) for z in pre],
            "weight_std": [float(l.weight.detach().std()) for l in linears],
            "weight_grad_std": [float(l.weight.grad.std()) for l in linears]}


# --- Ablations of batch normalization (exercises of the algorithm chapter) ---

def partial_batchnorm1d(center=True, scale=True, affine=True, momentum=0.1, eps=1e-5):
    """A factory for BN layers with parts switched off, usable as ``make_mlp(..., norm=...)``.

    ``center=False`` skips subtracting the batch mean (variance-only BN: the
    input is divided by ``sqrt(var + eps)`` but not centred); ``scale=False``
    skips the division (mean-only BN); ``affine=False`` freezes gamma at 1 and
    beta at 0. Test mode uses running statistics kept as PyTorch keeps them.
    With everything on, the layer computes ``torch.nn.BatchNorm1d``'s output
    in both modes. Autograd differentiates it (no hand-written backward).

    Returns:
        ``factory(num_features) -> nn.Module``.
    """
    import torch
    from torch import nn

    class PartialBatchNorm1d(nn.Module):
        def __init__(self, num_features):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(num_features), requires_grad=affine)
            self.bias = nn.Parameter(torch.zeros(num_features), requires_grad=affine)
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))

        def forward(self, x):
            if x.dim() != 2 or x.shape[1] != self.weight.numel():
                raise ValueError(f"x must have shape (N, {self.weight.numel()}), got {tuple(x.shape)}")
            if self.training:
                mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)        # D
                with torch.no_grad():
                    unbiased = var * len(x) / max(len(x) - 1, 1)
                    self.running_mean.lerp_(mean, momentum)
                    self.running_var.lerp_(unbiased, momentum)
            else:
                mean, var = self.running_mean, self.running_var
            out = x - mean if center else x                                    # N, D
            if scale:
                out = out / torch.sqrt(var + eps)
            return out * self.weight + self.bias

    return PartialBatchNorm1d


# --- Helpers for the chapters on training and on why batch norm works ---

def init_glorot_(model, gain=1.0, seed=0):
    """Glorot-uniform ``nn.Linear`` weights scaled by ``gain``, in place; biases become zero.

    Weights are drawn from ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``
    (Glorot and Bengio's normalized initialization). ``gain=4`` suits sigmoid,
    whose slope at zero is 1/4.

    Returns:
        ``model``.
    """
    import torch
    from torch import nn

    if not gain > 0:
        raise ValueError(f"gain must be a positive number, got {gain!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                bound = gain * (6.0 / (layer.in_features + layer.out_features)) ** 0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                if layer.bias is not None:
                    layer.bias.zero_()
    return model


def top_hessian_eigenvalue(model, X, y, iters=20, seed=0):
    """Largest eigenvalue of the Hessian of the cross-entropy on ``(X, y)``.

    Power iteration on Hessian-vector products (double backward through
    ``torch.autograd``), over all parameters that require gradients. Power
    iteration finds the eigenvalue of largest magnitude; when that one is
    negative, a second run on ``H - lambda I`` finds the largest (positive)
    one, the eigenvalue that limits gradient descent's step (``lr < 2 / lambda``).
    The model runs in training mode, so batch-norm layers use the statistics
    of ``X``; their running statistics and the model's mode are restored.

    Args:
        model: a ``torch.nn.Module`` producing logits, twice differentiable
            (``torch.nn.BatchNorm1d``, not ``bnref.nn``'s, whose hand-written
            backward is differentiable once).
        X, y: the batch that defines the loss.
        iters: power-iteration steps (per run).
        seed: seeds the random starting vector.

    Returns:
        The Rayleigh quotient ``v^T H v`` of the last unit vector ``v``, a float.
    """
    import torch
    from torch import nn

    from bnref.nn import BatchNormFunction

    if not (isinstance(iters, int) and iters >= 1):
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    once = [type(m).__name__ for m in model.modules() if type(m).__module__ == "bnref.nn"]
    if once:
        raise ValueError(f"model must be twice differentiable, got bnref.nn layers {once} "
                         f"(their backward, {BatchNormFunction.__name__}, is differentiable once); "
                         "use torch.nn.BatchNorm1d/2d for Hessians")
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        loss = nn.functional.cross_entropy(model(X), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        gen = torch.Generator().manual_seed(seed)
        start = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]

        def power_iteration(shift):
            v, rayleigh = start, 0.0
            for _ in range(iters):
                norm = torch.sqrt(sum((u * u).sum() for u in v))
                v = [u / norm for u in v]
                Hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
                Hv = [h.detach() - shift * u for h, u in zip(Hv, v)]      # (H - shift I) v
                rayleigh = float(sum((h * u).sum() for h, u in zip(Hv, v)))
                v = Hv
            return rayleigh + shift

        top = power_iteration(0.0)
        if top < 0:
            top = power_iteration(top)
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        model.train(was_training)
    return top

"""Checks of A2 (batch norm in PyTorch, test-time inference): every graded cell.

Profiles: ``no_norm`` for Parts 1-4 (the kernel's normalization routines
refuse to run and ``bnref``'s references are absent, so a part cannot
delegate to them), ``plain`` for the experiment (the grader's own model
uses ``torch.nn.BatchNorm2d``) and the questions after it.

The kernel answers with data (:mod:`bnref.checking.scenarios_a2`); every
expected value is computed here with ``torch.nn.functional``. The rule that
the backward pass is written by hand is watched in the kernel
(:mod:`bnref.checking.watch_autograd`) and reported as data.
"""
import functools

import numpy as np

from grader import checks
from grader.checks import fail, raised, require, variable

ASSIGNMENT = "a2_test_time_inference"
check = functools.partial(checks.check, ASSIGNMENT)

DIMS = (0, 2, 3)


def _torch():
    import torch

    return torch


def tensor(value):
    return _torch().from_numpy(np.ascontiguousarray(value, dtype=np.float64))


def _tensor(value, what, shape=None):
    torch = _torch()
    raised(value, what)
    if not isinstance(value, torch.Tensor):
        fail(f"{what} must be a tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value.double()


def _allclose(got, want, rtol, atol):
    torch = _torch()
    return (tuple(got.shape) == tuple(want.shape) and bool(torch.isfinite(got).all())
            and bool(torch.allclose(got.double(), want.double(), rtol=rtol, atol=atol)))


def _case(scenario, **fields):
    return dict(scenario=scenario, **fields)


# --- Part 1: the autograd Function ------------------------------------------

@check("bn_function_forward", profile="no_norm")
def bn_function_forward(rng):
    # The visible test's case: float64 (4, 3, 5, 5), weight positive (the test divides by it), eps 1e-5.
    x = tensor(rng.normal(size=(4, 3, 5, 5)) * 2 + 1)
    weight, bias = tensor(rng.uniform(0.1, 1, size=3)), tensor(rng.normal(size=3))
    yield (_case("a2_function_forward", x=x, weight=weight, bias=bias, eps=1e-5),
           _verify_forward(x, weight, bias, 1e-5, visible=True))
    for _ in range(3):
        shape = tuple(int(v) for v in rng.integers(1, 7, size=4))
        shape = (shape[0] + 1,) + shape[1:]
        C = shape[1]
        x = tensor(rng.normal(size=shape) * 3 + rng.normal(size=(1, C, 1, 1)))
        weight, bias = tensor(rng.normal(size=C)), tensor(rng.normal(size=C))
        eps = float(rng.uniform(1e-5, 1e-1))
        yield (_case("a2_function_forward", x=x, weight=weight, bias=bias, eps=eps),
               _verify_forward(x, weight, bias, eps))


def _verify_forward(x, weight, bias, eps, visible=False):
    torch = _torch()
    F = torch.nn.functional
    want = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    mean = x.mean(dim=DIMS, keepdim=True)
    invstd = (x.var(dim=DIMS, unbiased=False, keepdim=True) + eps).rsqrt()
    C, shape = x.shape[1], tuple(x.shape)

    def verify(result):
        out = raised(result["out"], "BatchNorm2dFunction.apply")
        out = _tensor(out, "out")
        require(tuple(out.shape) == shape, f"out must have x's shape {shape}, got {tuple(out.shape)}")
        if visible:
            centered = (out - bias.view(1, -1, 1, 1)) / weight.view(1, -1, 1, 1)
            require(torch.allclose(centered.mean(dim=DIMS), torch.zeros(C, dtype=torch.float64), atol=1e-7),
                    "each channel of (out - bias) / weight should have mean 0")
            require(torch.allclose(centered.var(dim=DIMS, unbiased=False), torch.ones(C, dtype=torch.float64),
                                   atol=1e-4),
                    "biased variance (divide by N*H*W): (out - bias) / weight must have variance 1")
        require(_allclose(out, want, 1e-7, 1e-9), f"the output is wrong for x of shape {shape}")
        require(result["own"] is True,
                "the output must come from BatchNorm2dFunction (its grad_fn), not from autograd through other operations")
        saved = raised(result["saved"], "reading the saved tensors")
        require(isinstance(saved, (tuple, list)) and len(saved) == 3, "save exactly (x_hat, invstd, weight) for backward")
        require(_allclose(_tensor(saved[0], "the saved x_hat"), (x - mean) * invstd, 1e-7, 1e-9),
                "the saved x_hat is wrong")
        got_invstd = _tensor(saved[1], "the saved invstd")
        require(got_invstd.numel() == C and _allclose(got_invstd.reshape(1, C, 1, 1), invstd, 1e-7, 0),
                "the saved invstd is wrong")

    return verify


@check("bn_function_backward", profile="no_norm")
def bn_function_backward(rng):
    shapes = [(3, 2, 4, 4)] + [tuple(int(v) for v in rng.integers(2, 6, size=4)) for _ in range(3)]
    for trial, shape in enumerate(shapes):
        C = shape[1]
        x = tensor(rng.normal(size=shape) * 2 + 1)
        weight = tensor(rng.uniform(0.1, 1, size=C) if trial == 0 else rng.normal(size=C))
        bias, dout = tensor(rng.normal(size=C)), tensor(rng.normal(size=shape))
        yield _backward_case(x, weight, bias, dout, 1e-5, visible=trial == 0)


def _backward_case(x, weight, bias, dout, eps, visible):
    torch = _torch()
    F = torch.nn.functional
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
    want = torch.autograd.grad(F.batch_norm(xg, None, None, wg, bg, training=True, eps=eps), (xg, wg, bg), dout)
    invstd = (x.var(dim=DIMS, unbiased=False, keepdim=True) + eps).rsqrt()
    x_hat = (x - x.mean(dim=DIMS, keepdim=True)) * invstd
    shape = tuple(x.shape)
    request = _case("a2_function_backward", saved=(x_hat, invstd, weight), dout=dout,
                    needs_input_grad=(True, True, True, False))

    def verify(result):
        grads = raised(result["returned"], "BatchNorm2dFunction.backward")
        require(not result["autograd"],
                "backward must compute the gradients by hand, without autograd; "
                f"your backward called {', '.join(result['autograd'])}")
        require(isinstance(grads, (tuple, list)) and len(grads) == 4, "backward must return dx, dweight, dbias, None")
        for name, got, w in zip(("dx", "dweight", "dbias"), grads, want):
            got = _tensor(got, name)
            if visible:
                require(tuple(got.shape) == tuple(w.shape),
                        f"{name} must have shape {tuple(w.shape)}, got {tuple(got.shape)}")
                require(torch.allclose(got, w, atol=1e-8), f"{name} does not match autograd")
            require(tuple(got.shape) == tuple(w.shape), f"{name} has shape {tuple(got.shape)}, expected {tuple(w.shape)}")
            require(_allclose(got, w, 1e-7, 1e-9), f"{name} is wrong for x of shape {shape}")

    return request, verify


# --- Part 2: the module -------------------------------------------------------

MODULE_MISS = ("in train mode the module must normalize with BatchNorm2dFunction.apply(x, self.weight, self.bias, "
               "self.eps) (the grader replaced BatchNorm2dFunction by a table of the right outputs for the inputs "
               "it feeds, so a bug in Part 1 costs Part 1 only)")
STATE_KEYS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


@check("bn_module_train", profile="no_norm")
def bn_module_train(rng):
    torch = _torch()
    # The visible test's case: BatchNorm2d(3) with its defaults, float32, one step.
    x = (tensor(rng.normal(size=(8, 3, 4, 4))) * 2 + 5).float()
    yield _module_train_case(3, {}, torch.ones(3), torch.zeros(3), [x], visible=True)
    for _ in range(2):
        C = int(rng.integers(1, 6))
        options = {"eps": float(rng.uniform(1e-5, 1e-2)), "momentum": float(rng.uniform(0.05, 0.4))}
        weight, bias = tensor(rng.normal(size=C)), tensor(rng.normal(size=C))
        xs = []
        for _ in range(3):
            shape = (int(rng.integers(2, 9)), C, int(rng.integers(1, 5)), 3)
            xs.append(tensor(rng.normal(size=shape) * 2 + rng.normal(size=(1, C, 1, 1))))
        yield _module_train_case(C, options, weight, bias, xs)


def _module_train_case(C, options, weight, bias, xs, visible=False):
    torch = _torch()
    F = torch.nn.functional
    eps, momentum = options.get("eps", 1e-5), options.get("momentum", 0.1)
    dtype = xs[0].dtype
    weight, bias = weight.to(dtype), bias.to(dtype)
    table = [{"x": x, "weight": weight, "bias": bias, "eps": eps,
              "out": F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)} for x in xs]
    ref = torch.nn.BatchNorm2d(C, eps=eps, momentum=momentum).to(dtype)
    with torch.no_grad():
        ref.weight.copy_(weight)
        ref.bias.copy_(bias)
    expected = []
    with torch.no_grad():
        for x in xs:
            ref(x)
            expected.append({k: v.clone() for k, v in ref.state_dict().items()})
    request = _case("a2_module_train", C=C, options=options, weight=weight, bias=bias, xs=xs, table=table,
                    miss=MODULE_MISS)

    def verify(result):
        raised(result["built"], "BatchNorm2d(...)")
        for step, (x, entry, want, got) in enumerate(zip(xs, table, expected, result["steps"])):
            out = _tensor(raised(got["out"], "BatchNorm2d's forward"), "the module's output")
            state = raised(got["state"], "state_dict()")
            require(isinstance(state, dict) and set(state) == STATE_KEYS,
                    f"state_dict keys must match torch.nn.BatchNorm2d's, got {sorted(state) if isinstance(state, dict) else state}")
            require(got["own"] is True, "in train mode the module must normalize with BatchNorm2dFunction")
            require(_allclose(out, entry["out"], 1e-7, 1e-9), f"train-mode output is wrong at step {step + 1}")
            if visible:
                require(_allclose(state["running_mean"], 0.1 * x.double().mean(dim=DIMS), 0, 1e-5),
                        "PyTorch's momentum convention: from zeros, running_mean must become 0.1 * mean")
                require(_allclose(state["running_var"], 0.9 + 0.1 * x.double().var(dim=DIMS, unbiased=True), 0, 1e-4),
                        "running_var uses the unbiased variance (divide by N*H*W - 1): wrong after one step")
                n = int(state["num_batches_tracked"])
                require(n == 1, f"num_batches_tracked must count the training steps: 1 after one step, got {n}")
            tol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-7, 1e-9)
            for key in ("running_mean", "running_var"):
                require(_allclose(state[key], want[key], *tol),
                        f"{key} is wrong after {step + 1} step(s) with momentum={momentum:.3f}")
            require(int(state["num_batches_tracked"]) == step + 1, "num_batches_tracked must count the training steps")
        require(len(result["steps"]) == len(xs), "the module did not run every step")

    return request, verify


EVAL_MISS = "eval mode must use the running statistics (it must not call BatchNorm2dFunction)"


@check("bn_module_eval", profile="no_norm")
def bn_module_eval(rng):
    torch = _torch()
    # The visible test's case: BatchNorm2d(2), running_mean 1, running_var 4, float32.
    x = tensor(rng.normal(size=(5, 2, 3, 3))).float()
    values = {"running_mean": torch.full((2,), 1.0), "running_var": torch.full((2,), 4.0)}
    yield _module_eval_case(2, {}, values, x, visible=True)
    for _ in range(2):
        C = int(rng.integers(1, 6))
        eps = float(rng.uniform(1e-5, 1e-1))
        values = {"weight": tensor(rng.normal(size=C)), "bias": tensor(rng.normal(size=C)),
                  "running_mean": tensor(rng.normal(size=C)), "running_var": tensor(rng.uniform(0.5, 1.5, size=C)),
                  "num_batches_tracked": 7}  # an int (as a state_dict may hold one)
        x = tensor(rng.normal(size=(int(rng.integers(1, 6)), C, 3, 2)) * 3)
        yield _module_eval_case(C, {"eps": eps}, values, x)


def _module_eval_case(C, options, values, x, visible=False):
    torch = _torch()
    F = torch.nn.functional
    eps = options.get("eps", 1e-5)
    full = {"weight": torch.ones(C), "bias": torch.zeros(C), **values}
    want = F.batch_norm(x.double(), full["running_mean"].double(), full["running_var"].double().clone(),
                        full["weight"].double(), full["bias"].double(), training=False, eps=eps)
    request = _case("a2_module_eval", C=C, options=options, values=values, x=x, miss=EVAL_MISS)

    def verify(result):
        raised(result["built"], "BatchNorm2d(...)")
        out = _tensor(raised(result["out"], "BatchNorm2d's forward in eval mode"), "the eval-mode output")
        before, after = raised(result["before"], "state_dict()"), raised(result["after"], "state_dict()")
        if visible:
            require(_allclose(out, want, 0, 1e-5), "eval mode must use the running statistics")
            require(bool(torch.all(after["running_mean"] == 1.0)), "eval mode must not change running_mean")
        require(_allclose(out, want, 1e-7, 1e-9) if x.dtype == torch.float64 else _allclose(out, want, 1e-5, 1e-6),
                f"eval-mode output is wrong for x of shape {tuple(x.shape)}")
        for key, value in before.items():
            require(key in after and torch.equal(after[key], value), f"eval mode changed {key}")

    return request, verify


# --- Part 3: population statistics --------------------------------------------

@check("population_stats", profile="no_norm")
def population_stats(rng):
    # The visible test's case: identity features, 10 images of (2, 3, 3) in batches of 4.
    data = (tensor(rng.normal(size=(10, 2, 3, 3))) * 3 + 1).float()
    yield _population_case(data, None, 4, visible=True)
    n, cin, c = int(rng.integers(7, 40)), int(rng.integers(1, 4)), int(rng.integers(1, 5))
    data = tensor(rng.normal(size=(n, cin, 5, 4)) * 2 + 3)
    conv = {"weight": tensor(rng.normal(size=(c, cin, 3, 3)) * 0.3), "bias": tensor(rng.normal(size=c) * 0.3)}
    yield _population_case(data, conv, int(rng.integers(2, 6)))


def _population_case(data, conv, batch_size, visible=False):
    torch = _torch()
    with torch.no_grad():
        a = data.double() if conv is None else torch.nn.functional.conv2d(data, conv["weight"], conv["bias"], padding=1)
    a = a.transpose(0, 1).reshape(a.shape[1], -1)
    want_mean, want_var = a.mean(dim=1), a.var(dim=1)
    request = _case("a2_population_stats", data=data, conv=conv, batch_size=batch_size)

    def verify(result):
        returned = raised(result["returned"], "population_statistics")
        require(isinstance(returned, (tuple, list)) and len(returned) == 2,
                "population_statistics must return (mean, var)")
        mean, var = _tensor(returned[0], "mean"), _tensor(returned[1], "var")
        if visible:
            require(_allclose(mean.reshape(-1), want_mean, 0, 1e-5) and mean.numel() == want_mean.numel(),
                    "mean is wrong")
            require(_allclose(var.reshape(-1), want_var, 0, 1e-4) and var.numel() == want_var.numel(), "var is wrong")
            return
        C = want_mean.numel()
        require(tuple(mean.shape) == (C,) and tuple(var.shape) == (C,), "mean and var must have shape (C,)")
        require(_allclose(mean, want_mean, 1e-6, 1e-8), "mean is wrong (are the batches weighted by their size?)")
        require(_allclose(var, want_var, 1e-6, 1e-8), "var is wrong (unbiased, over every value of each channel)")

    return request, verify


# --- Part 4: folding ------------------------------------------------------------

def _bn_values(rng, C, eps, visible):
    torch = _torch()
    if visible:  # the visible tests' BatchNorm: weight 1, bias 0, running statistics drawn
        return {"eps": 1e-5, "weight": torch.ones(C), "bias": torch.zeros(C),
                "running_mean": tensor(rng.uniform(-1, 1, size=C)).float(),
                "running_var": tensor(rng.uniform(0.5, 2, size=C)).float()}
    return {"eps": eps, "weight": tensor(rng.normal(size=C)), "bias": tensor(rng.normal(size=C)),
            "running_mean": tensor(rng.normal(size=C)), "running_var": tensor(rng.uniform(0.3, 1.3, size=C))}


def _expected(layer, bn, x):
    torch = _torch()
    F = torch.nn.functional
    with torch.no_grad():
        w = layer["weight"].double()
        b = None if layer["bias"] is None else layer["bias"].double()
        if layer["kind"] == "Linear":
            y = F.linear(x.double(), w, b)
        else:
            y = F.conv2d(x.double(), w, b, stride=layer["stride"], padding=layer["padding"],
                         dilation=layer.get("dilation", 1), groups=layer.get("groups", 1))
        return F.batch_norm(y, bn["running_mean"].double(), bn["running_var"].double().clone(),
                            bn["weight"].double(), bn["bias"].double(), training=False, eps=bn["eps"])


def _folded_output(answer, kind, x):
    """The folded layer's output on ``x``, computed here from its data."""
    torch = _torch()
    F = torch.nn.functional
    weight = _tensor(answer.get("weight"), "the folded layer's weight")
    bias = answer.get("bias")
    bias = None if bias is None else _tensor(bias, "the folded layer's bias")
    try:
        with torch.no_grad():
            if kind == "Linear":
                return F.linear(x.double(), weight, bias)
            stride, padding, dilation, groups = (answer.get(k) for k in ("stride", "padding", "dilation", "groups"))
            require(stride is not None and padding is not None and dilation is not None
                    and isinstance(groups, int), "the folded nn.Conv2d must keep stride, padding, dilation and groups")
            return F.conv2d(x.double(), weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    except (RuntimeError, TypeError, ValueError) as err:
        fail(f"the folded layer cannot be applied to x of shape {tuple(x.shape)}: {err}")


def _fold_case(fn, layer, bn, x, label, visible, rtol, atol):
    torch = _torch()
    kind = layer["kind"]
    want = _expected(layer, bn, x)
    before = {"weight": layer["weight"]}
    if layer["bias"] is not None:
        before["bias"] = layer["bias"]
    request = _case("a2_fold", fn=fn, layer=layer, bn=bn)

    def verify(result):
        if result["raised"] is not None:
            if visible:
                fail(f"a {kind} with {label}: {fn} failed with {result['raised']!r}")
            fail(f"{fn} raised {result['raised']!r} ({label})")
        require(result[f"is_{'linear' if kind == 'Linear' else 'conv'}"] is True,
                f"return a new nn.{kind}" + ("" if visible else f", got {result.get('type')}"))
        require(result["same"] is False, "return a new layer, do not modify the one you are given")
        after = raised(result["layer_after"], "the given layer's state_dict()")
        unchanged = isinstance(after, dict) and set(after) == set(before) and all(
            torch.equal(after[k].to(v.dtype), v) for k, v in before.items())
        short = "linear" if kind == "Linear" else "conv"
        require(unchanged, f"{fn} must not modify the {short} it is given" if visible
                else "the original layer was modified")
        out = _folded_output(result, kind, x)
        if visible:
            require(tuple(out.shape) == tuple(want.shape) and _allclose(out, want, 0, 1e-5),
                    f"a {kind} with {label}: {fn}({short}, bn)(x) must equal bn({short}(x))")
        require(_allclose(out, want, rtol, atol), f"the folded layer differs from bn(layer(x)) ({label})")

    return request, verify


@check("fold_linear_bn", profile="no_norm")
def fold_linear_bn(rng):
    for has_bias in (True, False):  # the visible test's layers: Linear(4, 3), float32
        layer = {"kind": "Linear", "weight": tensor(rng.uniform(-0.5, 0.5, size=(3, 4))).float(),
                 "bias": tensor(rng.uniform(-0.5, 0.5, size=3)).float() if has_bias else None}
        x = tensor(rng.normal(size=(6, 4))).float()
        yield _fold_case("fold_linear_bn", layer, _bn_values(rng, 3, None, True), x, f"bias={has_bias}", True,
                         1e-5, 1e-5)
    for has_bias in (True, False):
        cin, cout = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        layer = {"kind": "Linear", "weight": tensor(rng.normal(size=(cout, cin))),
                 "bias": tensor(rng.normal(size=cout)) if has_bias else None}
        bn = _bn_values(rng, cout, float(rng.uniform(1e-5, 1e-1)), False)
        x = tensor(rng.normal(size=(5, cin)))
        yield _fold_case("fold_linear_bn", layer, bn, x, f"layer bias={has_bias}", False, 1e-5, 1e-6)


@check("fold_conv_bn", profile="no_norm")
def fold_conv_bn(rng):
    for k, stride, padding, has_bias in ((3, 1, 1, False), (3, 2, 0, True)):  # the visible test's convs
        layer = {"kind": "Conv2d", "weight": tensor(rng.uniform(-0.3, 0.3, size=(3, 2, k, k))).float(),
                 "bias": tensor(rng.uniform(-0.3, 0.3, size=3)).float() if has_bias else None,
                 "stride": stride, "padding": padding}
        x = tensor(rng.normal(size=(2, 2, 7, 7))).float()
        label = f"stride={stride}, padding={padding}, bias={has_bias}"
        yield _fold_case("fold_conv_bn", layer, _bn_values(rng, 3, None, True), x, label, True, 1e-5, 1e-5)
    for has_bias, stride in ((True, 1), (False, 1), (True, 2), (False, 2)):
        cin, cout = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        k, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        layer = {"kind": "Conv2d", "weight": tensor(rng.normal(size=(cout, cin, k, k))),
                 "bias": tensor(rng.normal(size=cout)) if has_bias else None, "stride": stride, "padding": padding}
        bn = _bn_values(rng, cout, float(rng.uniform(1e-5, 1e-1)), False)
        x = tensor(rng.normal(size=(int(rng.integers(1, 4)), cin, 7, 6)))
        label = f"bias={has_bias}, stride={stride}, padding={padding}"
        yield _fold_case("fold_conv_bn", layer, bn, x, label, False, 1e-5, 1e-6)
    # The release text: a Conv2d keeps its dilation and groups too.
    for dilation, groups in ((2, 1), (1, int(rng.integers(2, 4)))):
        cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        has_bias, padding = bool(rng.integers(0, 2)), int(rng.integers(0, 3))
        layer = {"kind": "Conv2d", "weight": tensor(rng.normal(size=(cout, cin // groups, 3, 3))),
                 "bias": tensor(rng.normal(size=cout)) if has_bias else None, "stride": 1, "padding": padding,
                 "dilation": dilation, "groups": groups}
        bn = _bn_values(rng, cout, float(rng.uniform(1e-5, 1e-1)), False)
        x = tensor(rng.normal(size=(2, cin, 7, 6)))
        label = f"bias={has_bias}, padding={padding}, dilation={dilation}, groups={groups}"
        yield _fold_case("fold_conv_bn", layer, bn, x, label, False, 1e-5, 1e-6)


# --- Part 5: the experiment -----------------------------------------------------

DIGITS_CHANNELS = (4, 8)


def _grader_model(rng):
    """The grader's own model, with ``torch.nn.BatchNorm2d``, after a few seeded training steps."""
    torch = _torch()
    from bnref.experiments import digits_tensors, make_convnet, train

    X_train, y_train, X_test, y_test = digits_tensors(image=True)
    with torch.random.fork_rng():
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        model = make_convnet(channels=DIGITS_CHANNELS, norm=torch.nn.BatchNorm2d)
        train(model, X_train, y_train, steps=int(rng.integers(5, 15)), batch_size=32, lr=0.1,
              optimizer="momentum", seed=int(rng.integers(0, 1000)))
    return model, X_test, y_test


def _accuracy_band(model, X, y, batch_size):
    """``bnref.experiments.accuracy``'s value, and how far another process may land from it.

    The kernel recomputes the same logits, possibly with another summation
    order (thread count); an example whose two largest logits are closer
    than 1e-4 may flip, so each such example widens the band by 1 / len(X).
    """
    torch = _torch()
    with torch.no_grad():
        if batch_size is None:
            logits = model(X)
        else:
            logits = torch.cat([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    top2 = logits.topk(2, dim=1).values
    near_ties = int(((top2[:, 0] - top2[:, 1]) < 1e-4).sum())
    value = float((logits.argmax(dim=1) == y).float().mean())
    return value, (near_ties + 1e-4) / len(X)


@check("digits_experiment", profile="plain")
def digits_experiment(rng):
    import copy

    torch = _torch()
    model, X, y = _grader_model(rng)
    # The visible test's case first (train mode, batches of 4), then fresh batch sizes in both modes.
    for training, batch_size, visible in ((True, 4, True), (True, int(rng.integers(2, 40)), False),
                                          (False, int(rng.integers(2, 40)), False)):
        model.train(training)
        state = copy.deepcopy(model.state_dict())
        want_running = _accuracy_band(copy.deepcopy(model).eval(), X, y, None)
        want_batch = _accuracy_band(copy.deepcopy(model).train(), X, y, batch_size)
        request = _case("a2_digits", channels=list(DIGITS_CHANNELS), state=state, training=training, X=X, y=y,
                        batch_size=batch_size)

        def verify(result, training=training, batch_size=batch_size, state=state, visible=visible,
                   want_running=want_running, want_batch=want_batch):
            returned = raised(result["returned"], "compare_statistics")
            require(isinstance(returned, (tuple, list)) and len(returned) == 2,
                    "compare_statistics must return (acc_running, acc_batch)")
            values = []
            for name, value in zip(("acc_running", "acc_batch"), returned):
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    value = float(value)
                require(isinstance(value, (int, float)) and not isinstance(value, bool),
                        f"{name} must be a number, got {type(value).__name__}")
                values.append(float(value))
            ra, ba = values
            require(0.0 <= ra <= 1.0 and 0.0 <= ba <= 1.0, "accuracies are numbers between 0 and 1")
            if visible:
                require(result["training"] is True,
                        "compare_statistics must leave the model's mode as it was (work on a deep copy)")
            require(result["training"] is training, "compare_statistics changed the model's mode")
            after = raised(result["state"], "the model's state_dict()")
            same = isinstance(after, dict) and set(after) == set(state) and all(
                torch.equal(after[k].reshape(-1), v.reshape(-1)) for k, v in state.items())  # 0-d arrive as 1-d
            require(same, "compare_statistics must leave the model's running statistics as they were "
                          "(work on deep copies)" if visible else "compare_statistics changed the model's state")
            require(abs(ra - want_running[0]) <= want_running[1],
                    "acc_running is not the eval-mode accuracy of the model on the whole test set")
            require(abs(ba - want_batch[0]) <= want_batch[1],
                    f"acc_batch is not the train-mode accuracy on batches of {batch_size}")

        yield request, verify


# --- Questions -------------------------------------------------------------

def question(part, name, answer):
    @check(part, profile="plain")
    def cases(rng):
        def verify(value):
            require(isinstance(value, str) and value in ("a", "b", "c", "d"),
                    "answer with one letter: 'a', 'b', 'c' or 'd'")
            require(value == answer, "not the right answer")

        yield variable(name), verify

    return cases


question("q_momentum", "answer_momentum", "b")
question("q_single_image", "answer_single_image", "b")

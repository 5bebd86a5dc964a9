"""Runs inside the grading kernel: A2's scenarios (autograd Function, module, folding, experiment).

Each scenario builds the objects a part needs from plain data, calls the
student's code on them and answers with plain data: tensors, numbers,
names, the module's buffers after the call. The trusted grader
(:mod:`grader.checks.a2`) computes every expected value itself.

Nothing here computes a batch norm. The stand-in for ``BatchNorm2dFunction``
that isolates the module part from Part 1 is a lookup table: it returns the
grader's precomputed outputs for the exact inputs the check feeds, and
refuses any other call.
"""
import types

from bnref.checking.driver import lookup, reported, scenario
from bnref.checking.watch_autograd import watch

_ABSENT = object()


def _same(a, b):
    import torch

    return (isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
            and bool(torch.equal(a.detach(), b)))


def table_function(entries, miss):
    """An ``autograd.Function`` that answers only the listed calls.

    ``entries``: ``[{"x", "weight", "bias", "eps", "out"}, ...]``; a call
    ``apply(x, weight, bias, eps)`` whose arguments equal one entry's
    returns a copy of its ``out``; any other call raises ``AssertionError(miss)``.
    """
    import torch

    class BatchNorm2dFunctionTable(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, eps):
            for entry in entries:
                if (_same(x, entry["x"]) and _same(weight, entry["weight"]) and _same(bias, entry["bias"])
                        and isinstance(eps, (int, float)) and float(eps) == entry["eps"]):
                    return entry["out"].clone()
            raise AssertionError(miss)

        @staticmethod
        def backward(ctx, dout):
            raise AssertionError("the grader's stand-in has no backward pass")

    return BatchNorm2dFunctionTable


def _state(module):
    try:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    except Exception as err:
        return err


# --- Part 1: the autograd Function ------------------------------------------

@scenario
def a2_function_forward(ns, x, weight, bias, eps):
    """``BatchNorm2dFunction.apply``: the output, whether its grad_fn is the Function, what it saved."""
    function = lookup(ns, "BatchNorm2dFunction")
    weight, bias = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    out = reported(lambda: function.apply(x, weight, bias, eps))
    answer = {"out": out, "own": False, "saved": None}
    grad_fn = getattr(out, "grad_fn", None)
    if grad_fn is not None:
        answer["own"] = getattr(grad_fn, "_forward_cls", None) is function
        try:
            answer["saved"] = tuple(grad_fn.saved_tensors)
        except Exception as err:
            answer["saved"] = err
    return answer


@scenario
def a2_function_backward(ns, saved, dout, needs_input_grad):
    """``BatchNorm2dFunction.backward`` on a context holding the grader's saved tensors,
    with the autograd calls it made."""
    function = lookup(ns, "BatchNorm2dFunction")
    ctx = types.SimpleNamespace(saved_tensors=tuple(saved), needs_input_grad=tuple(needs_input_grad))
    with watch() as seen:
        grads = reported(function.backward, ctx, dout)
    return {"returned": grads, "autograd": list(dict.fromkeys(seen))}


# --- Part 2: the module -------------------------------------------------------

@scenario
def a2_module_train(ns, C, options, weight, bias, xs, table, miss):
    """Train steps of ``BatchNorm2d`` with ``BatchNorm2dFunction`` replaced by a lookup table."""
    import torch

    saved = ns.get("BatchNorm2dFunction", _ABSENT)
    standin = table_function(table, miss)
    ns["BatchNorm2dFunction"] = standin
    steps = []
    try:
        cls = lookup(ns, "BatchNorm2d")
        bn = reported(lambda: cls(C, **options))
        if isinstance(bn, Exception):
            return {"built": bn, "steps": steps}
        bn = bn.to(xs[0].dtype)
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        for x in xs:
            out = reported(bn, x)
            steps.append({"out": out, "own": getattr(getattr(out, "grad_fn", None), "_forward_cls", None) is standin,
                          "state": _state(bn)})
    finally:
        if saved is _ABSENT:
            ns.pop("BatchNorm2dFunction", None)
        else:
            ns["BatchNorm2dFunction"] = saved
    return {"built": True, "steps": steps}


@scenario
def a2_module_eval(ns, C, options, values, x, miss):
    """An eval-mode ``BatchNorm2d`` given these parameters and buffers: output, state after."""
    import torch

    saved = ns.get("BatchNorm2dFunction", _ABSENT)
    ns["BatchNorm2dFunction"] = table_function([], miss)
    try:
        cls = lookup(ns, "BatchNorm2d")
        bn = reported(lambda: cls(C, **options))
        if isinstance(bn, Exception):
            return {"built": bn}
        bn = bn.to(x.dtype)
        with torch.no_grad():
            for key, value in values.items():
                target = getattr(bn, key)
                target.fill_(value) if isinstance(value, int) else target.copy_(value)
        bn.eval()
        before = _state(bn)
        out = reported(bn, x)
        return {"built": True, "out": out, "before": before, "after": _state(bn)}
    finally:
        if saved is _ABSENT:
            ns.pop("BatchNorm2dFunction", None)
        else:
            ns["BatchNorm2dFunction"] = saved


# --- Part 3: population statistics --------------------------------------------

@scenario
def a2_population_stats(ns, data, conv, batch_size):
    """``population_statistics(features, loader)`` over ``data`` in batches of ``batch_size``;
    ``conv`` is ``None`` (identity) or a 3x3 padded conv's ``{"weight", "bias"}``."""
    import torch
    from torch import nn

    function = lookup(ns, "population_statistics")
    if conv is None:
        features = nn.Identity()
    else:
        weight = conv["weight"]
        features = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], padding=weight.shape[2] // 2)
        features = features.to(weight.dtype)
        with torch.no_grad():
            features.weight.copy_(weight)
            features.bias.copy_(conv["bias"])
    dataset = torch.utils.data.TensorDataset(data, torch.zeros(len(data)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    return {"returned": reported(function, features, loader)}


# --- Part 4: folding ------------------------------------------------------------

@scenario
def a2_fold(ns, fn, layer, bn):
    """``fold_*_bn(layer, bn)``: the folded layer as data, and the given layer after the call."""
    import torch
    from torch import nn

    function = lookup(ns, fn)
    weight = layer["weight"]
    has_bias = layer["bias"] is not None
    if layer["kind"] == "Linear":
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
        norm = nn.BatchNorm1d(weight.shape[0], eps=bn["eps"])
    else:
        groups = layer.get("groups", 1)
        module = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[2], stride=layer["stride"],
                           padding=layer["padding"], dilation=layer.get("dilation", 1), groups=groups,
                           bias=has_bias)
        norm = nn.BatchNorm2d(weight.shape[0], eps=bn["eps"])
    module, norm = module.to(weight.dtype), norm.to(weight.dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
        if has_bias:
            module.bias.copy_(layer["bias"])
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, key).copy_(bn[key])
    norm.eval()
    folded = reported(function, module, norm)
    answer = {"raised": folded if isinstance(folded, Exception) else None, "layer_after": _state(module),
              "same": folded is module}
    if not isinstance(folded, Exception):
        answer["type"] = type(folded).__name__
        answer["is_linear"] = isinstance(folded, nn.Linear)
        answer["is_conv"] = isinstance(folded, nn.Conv2d)
        for key in ("weight", "bias"):
            value = getattr(folded, key, None)
            answer[key] = value.detach().clone() if isinstance(value, torch.Tensor) else None
        for key in ("stride", "padding", "dilation", "groups"):
            value = getattr(folded, key, None)
            answer[key] = value if isinstance(value, (int, str, tuple)) else None
    return answer


# --- Part 5: the experiment -----------------------------------------------------

@scenario
def a2_digits(ns, channels, state, training, X, y, batch_size):
    """``compare_statistics`` on the grader's model (``torch.nn.BatchNorm2d``), rebuilt from its state."""
    from torch import nn

    from bnref.experiments import make_convnet

    function = lookup(ns, "compare_statistics")
    model = make_convnet(channels=tuple(channels), norm=nn.BatchNorm2d)
    model.load_state_dict(state)
    model.train(training)
    returned = reported(function, model, X, y, batch_size)
    return {"returned": returned, "training": model.training, "state": _state(model)}


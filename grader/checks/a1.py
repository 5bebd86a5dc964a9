"""Checks of A1 (batch norm in NumPy): every graded cell, visible rules and fresh cases.

Profile ``numpy``: the grading kernel has no torch and no ``bnref``
reference modules at all, so a part cannot delegate to either.
"""
import numpy as np

import functools

from grader import checks
from grader.checks import array, call, calls, close, fail, ref, rel_error, require, returned, variable

ASSIGNMENT = "a1_batchnorm_numpy"
check = functools.partial(checks.check, ASSIGNMENT)

CACHE_KEYS = ("mode", "x_hat", "xmu", "var", "std", "invstd", "gamma", "eps", "N")


def _ref():
    import bnref.functional as F

    return F


def train_cache(x, gamma, eps):
    """The train-mode cache A1 asks for, built here so a backward part is checked alone."""
    mean = x.mean(axis=0)
    xmu = x - mean
    var = (xmu ** 2).mean(axis=0)
    std = np.sqrt(var + eps)
    return dict(mode="train", x_hat=xmu / std, xmu=xmu, var=var, std=std, invstd=1 / std,
                gamma=gamma, eps=eps, N=x.shape[0])


# --- Part 1: forward -------------------------------------------------------

def _verify_train_steps(xs_list, gamma, beta, param):
    F = _ref()
    N, D = xs_list[0].shape
    ref_param = dict(param)
    expected = []
    for xs in xs_list:
        out, _ = F.batchnorm_forward(xs, gamma, beta, ref_param)
        expected.append((out, ref_param["running_mean"].copy(), ref_param["running_var"].copy()))
    eps = param.get("eps", 1e-5)

    def verify(result):
        for step, (xs, step_result, (ref_out, ref_rm, ref_rv)) in enumerate(zip(xs_list, result, expected)):
            out, cache = returned(step_result, "batchnorm_forward", 2)
            out = array(out, "out", (N, D))
            if not isinstance(cache, dict):
                fail(f"the cache must be a dict, got {type(cache).__name__}")
            for key in CACHE_KEYS:
                require(key in cache, f"the cache must hold the key {key!r}")
            mean, var = xs.mean(axis=0), xs.var(axis=0)
            std = np.sqrt(var + eps)
            require(close(array(cache["xmu"], "cache['xmu']"), xs - mean),
                    "mean of each feature over axis 0 (the batch): cache['xmu'] must be x - mean")
            require(close(array(cache["var"], "cache['var']"), var),
                    "biased variance (divide by N, not N - 1): cache['var'] is wrong")
            require(close(array(cache["std"], "cache['std']"), std),
                    "eps goes inside the square root: cache['std'] must be sqrt(var + eps)")
            require(close(array(cache["invstd"], "cache['invstd']"), 1 / std), "cache['invstd'] must be 1 / std")
            require(close(array(cache["x_hat"], "cache['x_hat']"), (xs - mean) / std),
                    "cache['x_hat'] must be (x - mean) / sqrt(var + eps)")
            require(cache["N"] == N and cache["mode"] == "train", "cache['N'] or cache['mode'] is wrong")
            require(rel_error(out, ref_out) < 1e-7,
                    f"out must be gamma * (x - mean) / sqrt(var + eps) + beta: wrong for x of shape {(N, D)}")
            after = step_result["objects"]["p"]
            for key, want in (("running_mean", ref_rm), ("running_var", ref_rv)):
                require(key in after, f"train mode must store bn_param[{key!r}]")
                require(close(array(after[key], f"bn_param[{key!r}]"), want),
                        f"bn_param[{key!r}] after {step + 1} train step(s) is wrong "
                        f"(momentum={param.get('momentum', 0.9)} is the decay of the old value; "
                        "running_var is updated with the biased variance)")

    return verify


@check("bn_forward_train", profile="numpy")
def bn_forward_train(rng):
    for trial in range(3):
        N, D = int(rng.integers(3, 40)), int(rng.integers(1, 12))
        x = rng.normal(rng.normal(0, 5), rng.uniform(0.5, 3), size=(N, D))
        gamma, beta = rng.normal(size=D), rng.normal(size=D)
        param = {"mode": "train"}
        if trial:
            param.update(eps=float(rng.uniform(1e-3, 1e-1)), momentum=float(rng.uniform(0.6, 0.95)))
        xs_list = [x + rng.normal(size=x.shape) * step for step in range(3)]
        request = calls([("batchnorm_forward", (xs, gamma, beta, ref("p"))) for xs in xs_list],
                        objects={"p": dict(param)})
        yield request, _verify_train_steps(xs_list, gamma, beta, param)


@check("bn_forward_test", profile="numpy")
def bn_forward_test(rng):
    F = _ref()
    for _ in range(3):
        N, D = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        x = rng.normal(size=(N, D)) * 3 + 1
        gamma, beta = rng.normal(size=D), rng.normal(size=D)
        rm, rv = rng.normal(size=D), rng.uniform(0.2, 4, size=D)
        param = {"mode": "test", "running_mean": rm, "running_var": rv,
                 "momentum": float(rng.uniform(0.6, 0.95)), "eps": float(rng.uniform(1e-5, 1e-1))}
        ref_out, _ = F.batchnorm_forward(x, gamma, beta, dict(param, running_mean=rm.copy(), running_var=rv.copy()))

        def verify(result, N=N, D=D, rm=rm, rv=rv, ref_out=ref_out):
            out, _ = returned(result[0], "batchnorm_forward", 2)
            out = array(out, "out", (N, D))
            after = result[0]["objects"]["p"]
            require(np.array_equal(array(after.get("running_mean"), "running_mean"), rm)
                    and np.array_equal(array(after.get("running_var"), "running_var"), rv),
                    "test mode must not change running_mean or running_var")
            require(rel_error(out, ref_out) < 1e-7,
                    f"test mode must use running_mean and running_var: output wrong for x of shape {(N, D)}")

        yield call("batchnorm_forward", x, gamma, beta, ref("p"), objects={"p": param}), verify


# --- Parts 2-3: backward ---------------------------------------------------

def _backward_cases(rng, part, fn, eps_choices):
    F = _ref()
    reference = getattr(F, fn)
    for _ in range(3):
        N, D = int(rng.integers(4, 30)), int(rng.integers(1, 10))
        x = rng.normal(size=(N, D)) * rng.uniform(0.5, 3) + rng.normal()
        gamma, beta, dout = rng.normal(size=D), rng.normal(size=D), rng.normal(size=(N, D))
        eps = float(rng.choice(eps_choices))
        _, ref_cache = F.batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": eps})
        want = reference(dout, ref_cache)
        standins = {"batchnorm_backward": {"miss": "batchnorm_backward_alt must not call batchnorm_backward"}} \
            if fn == "batchnorm_backward_alt" else None
        yield (call(fn, dout, train_cache(x, gamma, eps), standins=standins),
               _verify_grads(fn, want, f"x of shape {(N, D)}"))


def _verify_grads(fn, want, label):
    def verify(result):
        got = returned(result[0], fn, 3)
        for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
            g = array(g, name)
            require(g.shape == w.shape, f"{name} has shape {g.shape}, expected {w.shape}")
            require(rel_error(g, w) < 1e-7, f"{name} does not match the gradient for {label}")

    return verify


@check("bn_backward", profile="numpy")
def bn_backward(rng):
    yield from _backward_cases(rng, "bn_backward", "batchnorm_backward", [1e-5, 1e-2])


@check("bn_backward_alt", profile="numpy")
def bn_backward_alt(rng):
    yield from _backward_cases(rng, "bn_backward_alt", "batchnorm_backward_alt", [1e-5])


# --- Part 4: spatial -------------------------------------------------------

ROWS_MISS = ("{fn} was called with an array that is not x's channels as columns with rows in "
             "(N, H, W) order: x.transpose(0, 2, 3, 1).reshape(-1, C)")


def rows_of(x):
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


@check("spatial_bn_forward", profile="numpy")
def spatial_bn_forward(rng):
    F = _ref()
    for mode in ("train", "test"):
        N, C, H, W = (int(v) for v in rng.integers(1, 6, size=4))
        N += 1
        x = rng.normal(size=(N, C, H, W)) * 2 + rng.normal(size=(1, C, 1, 1))
        gamma, beta = rng.normal(size=C), rng.normal(size=C)
        param = {"mode": mode, "running_mean": rng.normal(size=C), "running_var": rng.uniform(0.5, 2, size=C)}
        ref_param = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in param.items()}
        ref_out, _ = F.spatial_batchnorm_forward(x, gamma, beta, ref_param)
        # Your batchnorm_forward is replaced by a table of the right answers for x's rows, so a
        # bug in Part 1 costs Part 1 only.
        row_param = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in param.items()}
        row_out, row_cache = F.batchnorm_forward(rows_of(x), gamma, beta, row_param)
        entry = {"match": [[0, rows_of(x)]], "returns": (row_out, row_cache)}
        if mode == "train":
            entry["updates"] = [[3, {"running_mean": row_param["running_mean"],
                                     "running_var": row_param["running_var"]}]]
        standins = {"batchnorm_forward": {"entries": [entry], "miss": ROWS_MISS.format(fn="batchnorm_forward")}}

        def verify(result, x=x, mode=mode, ref_out=ref_out, ref_param=ref_param):
            out, cache = returned(result[0], "spatial_batchnorm_forward", 2)
            out = array(out, "out", x.shape)
            require(rel_error(out, ref_out) < 1e-7, f"{mode}-mode output is wrong for x of shape {x.shape}")
            after = result[0]["objects"]["p"]
            require(close(array(after.get("running_mean"), "running_mean"), ref_param["running_mean"]),
                    f"running_mean is wrong after {mode} mode")
            require(isinstance(cache, (tuple, list)) and len(cache) == 2
                    and tuple(np.asarray(cache[1]).tolist()) == x.shape, "cache must be (bn_cache, x.shape)")

        yield call("spatial_batchnorm_forward", x, gamma, beta, ref("p"), objects={"p": param},
                   standins=standins), verify


@check("spatial_bn_backward", profile="numpy")
def spatial_bn_backward(rng):
    F = _ref()
    for _ in range(2):
        N, C, H, W = (int(v) for v in rng.integers(2, 6, size=4))
        x = rng.normal(size=(N, C, H, W)) * 2 + 1
        gamma, beta, dout = rng.normal(size=C), rng.normal(size=C), rng.normal(size=x.shape)
        _, ref_cache = F.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
        want = F.spatial_batchnorm_backward(dout, ref_cache)
        rows_cache = train_cache(rows_of(x), gamma, 1e-5)
        row_grads = F.batchnorm_backward(rows_of(dout), rows_cache)
        standins = {fn: {"entries": [{"match": [[0, rows_of(dout)]], "returns": row_grads}],
                         "miss": ROWS_MISS.format(fn=fn).replace("x's", "dout's").replace("x.", "dout.")}
                    for fn in ("batchnorm_backward", "batchnorm_backward_alt")}
        yield (call("spatial_batchnorm_backward", dout, (rows_cache, x.shape), standins=standins),
               _verify_grads("spatial_batchnorm_backward", want,
                             f"x of shape {x.shape} (rows of bn_cache in (N, H, W) order?)"))


# --- Part 5: layer norm ----------------------------------------------------

@check("ln_forward", profile="numpy")
def ln_forward(rng):
    F = _ref()
    for trial in range(3):
        N, D = (1 if trial == 0 else int(rng.integers(2, 20))), int(rng.integers(2, 15))
        x = rng.normal(size=(N, D)) * rng.uniform(0.5, 4) + rng.normal(0, 5, size=(N, 1))
        gamma, beta = rng.normal(size=D), rng.normal(size=D)
        param = {} if trial == 1 else {"eps": float(rng.uniform(1e-5, 1e-1))}
        ref_out, (ref_x_hat, ref_invstd, _) = F.layernorm_forward(x, gamma, beta, dict(param))

        def verify(result, N=N, D=D, ref_out=ref_out, ref_x_hat=ref_x_hat, ref_invstd=ref_invstd):
            out, cache = returned(result[0], "layernorm_forward", 2)
            out = array(out, "out", (N, D))
            require(isinstance(cache, (tuple, list)) and len(cache) == 3
                    and np.shape(cache[0]) == (N, D) and np.shape(cache[1]) == (N, 1),
                    "cache must be (x_hat (N, D), invstd (N, 1), gamma)")
            require(close(array(cache[0], "x_hat"), ref_x_hat), "normalize each row over its features (axis 1)")
            require(close(array(cache[1], "invstd"), ref_invstd),
                    "eps goes inside the square root: invstd = 1 / sqrt(var + eps)")
            require(rel_error(out, ref_out) < 1e-7,
                    f"out must be gamma * x_hat + beta: wrong for x of shape {(N, D)}")

        yield call("layernorm_forward", x, gamma, beta, param), verify


@check("ln_backward", profile="numpy")
def ln_backward(rng):
    F = _ref()
    for trial in range(3):
        N, D = (1 if trial == 0 else int(rng.integers(2, 20))), int(rng.integers(2, 15))
        x = rng.normal(size=(N, D)) * rng.uniform(0.5, 3) + rng.normal()
        gamma, beta, dout = rng.normal(size=D), rng.normal(size=D), rng.normal(size=(N, D))
        _, cache = F.layernorm_forward(x, gamma, beta, {"eps": float(rng.choice([1e-5, 1e-2]))})
        want = F.layernorm_backward(dout, cache)
        yield call("layernorm_backward", dout, tuple(cache)), _verify_grads(
            "layernorm_backward", want, f"x of shape {(N, D)}")


# --- Questions -------------------------------------------------------------

def question(part, name, answer):
    @check(part, profile="numpy")
    def cases(rng):
        def verify(result):
            value = result
            require(isinstance(value, str) and value in ("a", "b", "c", "d"), "answer with one letter: 'a', 'b', 'c' or 'd'")
            require(value == answer, "not the right answer")

        yield variable(name), verify

    return cases


question("q_single_example", "answer_single_example", "b")
question("q_scaled_input", "answer_scaled_input", "b")
question("q_dx_sum", "answer_dx_sum", "a")

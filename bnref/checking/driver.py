"""Runs inside the grading kernel: call the student's code on given inputs, answer with data.

The trusted grader (:mod:`grader.checks`) sends each graded part's cases as
one request; :func:`answer` runs them against the names the student's
notebook defined and displays the outputs under :data:`codec.MIME`. Every
output is data (:mod:`bnref.checking.codec`): the grader reads it, never runs
it, and decides the verdict in its own process. Whatever the student's code
does to this module changes nothing but the data it answers with.

A request is ``{"nonce", "cases": [case, ...]}``; each case names a scenario
of :data:`SCENARIOS` and its arguments. ``calls`` covers plain functions;
the assignments that need objects (autograd Functions, modules, kernels)
add scenarios of their own in ``scenarios_<assignment>.py``.
"""
import importlib
import json

import numpy as np

from bnref.checking import codec

SCENARIOS = {}
_EXTRA = ("bnref.checking.scenarios_a2", "bnref.checking.scenarios_a3")


def scenario(function):
    """Register a scenario under its function's name."""
    SCENARIOS[function.__name__] = function
    return function


class Missing(AssertionError):
    """The notebook does not define a name a part needs."""


def lookup(ns, name):
    if name not in ns:
        raise Missing(f"the notebook does not define {name!r}: run the cell that defines it "
                      "and keep the name the assignment gives")
    return ns[name]


def _resolve(value, objects):
    if isinstance(value, dict) and set(value) == {"$ref"}:
        return objects[value["$ref"]]
    if isinstance(value, list):
        return [_resolve(v, objects) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, objects) for v in value)
    return value


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        except (TypeError, ValueError):
            return False
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-10, atol=1e-12))
    return a == b


def reported(function, *args):
    """``function(*args)``, or the exception it raised: a student's error is an answer, sent as data."""
    try:
        return function(*args)
    except Exception as err:
        return err


def table_function(name, spec):
    """A stand-in for one of the student's helpers that knows only given calls.

    ``spec`` is ``{"entries": [...], "miss": message}``; each entry is
    ``{"match": [[position, value], ...], "returns": value, "updates":
    [[position, {key: value}], ...]}``: a call whose arguments at those
    positions equal the values returns ``returns`` (after setting the keys
    of dict arguments as ``updates`` says); any other call raises
    ``AssertionError(miss)``. It computes nothing, so it is nothing a part
    could delegate to.
    """
    entries, miss = spec.get("entries", []), spec.get("miss") or f"{name} was not expected to be called"

    def stand_in(*args, **kwargs):
        for entry in entries:
            if all(position < len(args) and _same(args[position], value)
                   for position, value in entry["match"]):
                for position, keys in entry.get("updates", []):
                    args[position].update({k: np.array(v, copy=True) for k, v in keys.items()})
                return entry["returns"]
        raise AssertionError(miss)

    stand_in.__name__ = name
    return stand_in


@scenario
def calls(ns, calls, objects=None, standins=None):
    """Call notebook functions in order; report what each returned and the objects after it.

    Args:
        calls: ``[{"fn": name, "args": [...]}]``; an argument ``{"$ref": key}``
            is the object ``objects[key]``, shared by the calls (a ``bn_param``
            dict the student's function updates in place).
        objects: named mutable inputs.
        standins: ``{name: spec}``: names replaced by :func:`table_function`
            while the calls run, and put back after.
    """
    objects = dict(objects or {})
    saved = {}
    for name, spec in (standins or {}).items():
        saved[name] = ns.get(name, Missing)
        ns[name] = table_function(name, spec)
    results = []
    try:
        for call in calls:
            function = lookup(ns, call["fn"])
            returned = reported(function, *_resolve(call.get("args", []), objects))
            snapshot = codec.decode(codec.encode(objects), tensors=False)
            results.append({"returned": returned, "objects": snapshot})
    finally:
        for name, value in saved.items():
            if value is Missing:
                ns.pop(name, None)
            else:
                ns[name] = value
    return results


@scenario
def value(ns, name):
    """The value of one notebook variable (a multiple-choice answer)."""
    return lookup(ns, name)


def run(ns, request):
    """Run a decoded request's cases; a list of encoded results, one per case."""
    for module in _EXTRA:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    results = []
    for case in request["cases"]:
        try:
            kind = case.get("scenario")
            if kind not in SCENARIOS:
                raise KeyError(f"unknown scenario {kind!r}")
            args = {k: v for k, v in case.items() if k != "scenario"}
            results.append(codec.encode(SCENARIOS[kind](ns, **args)))
        except Exception as err:
            results.append(codec.encode(err))
    return results


def answer(request_text):
    """Entry point the grader calls in the kernel; displays the answers."""
    from IPython import get_ipython
    from IPython.display import display

    request = codec.loads(request_text, max_bytes=64 << 20, tensors=True)
    results = run(get_ipython().user_ns, request)
    display({codec.MIME: {"nonce": request["nonce"], "results": results}}, raw=True)

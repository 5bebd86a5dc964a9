"""tools/copy_report.py on a synthetic class: a submission copied from bnref,
two that share code under renamed variables, and independent ones.

The oracle is the construction of the class itself: we know which pairs were
copied, and the report must rank them above every independent pair.
"""

import csv
import inspect
import json
import re

import pytest

import copydetect  # noqa: F401,E402  (pinned in requirements.txt: the report needs it)

import bnref.functional as F  # noqa: E402
from tools import copy_report  # noqa: E402

ASSIGNMENT = "a0_copy"

STUBS = [
    "def batchnorm_forward(x, gamma, beta, bn_param):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n",
    "def batchnorm_backward_alt(dout, cache):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n",
]

# Written to the same specification as bnref's functions, each in its own style.
INDEPENDENT = [
    '''
def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    mom = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    rm = bn_param.setdefault("running_mean", np.zeros(D))
    rv = bn_param.setdefault("running_var", np.ones(D))
    if mode == "train":
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        xh = (x - mu) / np.sqrt(var + eps)
        rm[:] = mom * rm + (1 - mom) * mu
        rv[:] = mom * rv + (1 - mom) * var
        return gamma * xh + beta, (xh, gamma, np.sqrt(var + eps))
    xh = (x - rm) / np.sqrt(rv + eps)
    return gamma * xh + beta, None


def batchnorm_backward_alt(dout, cache):
    xh, gamma, sd = cache
    n = dout.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * xh).sum(0)
    dx = gamma / (n * sd) * (n * dout - dbeta - xh * dgamma)
    return dx, dgamma, dbeta
''',
    '''
def batchnorm_forward(x, gamma, beta, bn_param):
    out, cache = None, None
    if bn_param["mode"] == "test":
        scale = gamma / np.sqrt(bn_param["running_var"] + bn_param.get("eps", 1e-5))
        shift = beta - bn_param["running_mean"] * scale
        return x * scale + shift, cache
    N = len(x)
    total = np.zeros(x.shape[1])
    for row in x:
        total += row
    centre = total / N
    spread = np.einsum("nd,nd->d", x - centre, x - centre) / N
    normed = (x - centre) * (spread + bn_param.get("eps", 1e-5)) ** -0.5
    m = bn_param.get("momentum", 0.9)
    bn_param["running_mean"] = m * bn_param.get("running_mean", 0) + (1 - m) * centre
    bn_param["running_var"] = m * bn_param.get("running_var", 1) + (1 - m) * spread
    out = normed * gamma + beta
    cache = {"normed": normed, "gamma": gamma, "spread": spread, "eps": bn_param.get("eps", 1e-5)}
    return out, cache


def batchnorm_backward_alt(dout, cache):
    g = cache["gamma"]
    z = cache["normed"]
    inv = 1 / np.sqrt(cache["spread"] + cache["eps"])
    dz = dout * g
    dx = inv * (dz - dz.mean(axis=0) - z * (dz * z).mean(axis=0))
    return dx, np.einsum("nd,nd->d", dout, z), dout.sum(axis=0)
''',
    '''
import numpy as np


def _stats(a):
    k = a.shape[0]
    m1 = a.sum(axis=0) / k
    m2 = ((a - m1) ** 2).sum(axis=0) / k
    return m1, m2


def batchnorm_forward(x, gamma, beta, bn_param):
    eps = bn_param.get("eps", 1e-5)
    if bn_param["mode"] != "train":
        stat_mean, stat_var = bn_param["running_mean"], bn_param["running_var"]
        y = gamma * (x - stat_mean) / np.sqrt(stat_var + eps) + beta
        return y, {}
    m1, m2 = _stats(x)
    r = bn_param.get("momentum", 0.9)
    for key, new in (("running_mean", m1), ("running_var", m2)):
        old = bn_param.get(key)
        bn_param[key] = new * (1 - r) + (old if old is not None else (key == "running_var")) * r
    inv_sigma = np.reciprocal(np.sqrt(m2 + eps))
    t = (x - m1) * inv_sigma
    return gamma * t + beta, {"t": t, "inv_sigma": inv_sigma, "gamma": gamma}


def batchnorm_backward_alt(dout, cache):
    t, inv_sigma, gamma = cache["t"], cache["inv_sigma"], cache["gamma"]
    g_sum = np.sum(dout, axis=0)
    gt_sum = np.sum(dout * t, axis=0)
    k = dout.shape[0]
    grad = (gamma * inv_sigma / k) * (k * dout - g_sum - t * gt_sum)
    return grad, gt_sum, g_sum
''',
]

# One student's code; a second student hands in the same code with every name changed.
SHARED = INDEPENDENT[0]
RENAMES = {"mode": "phase", "eps": "epsilon", "mom": "decay", "rm": "run_mu", "rv": "run_var",
           "mu": "avg", "var": "variance", "xh": "x_norm", "sd": "sigma", "n": "count",
           "dbeta": "db", "dgamma": "dg", "dx": "grad_x"}


def renamed(code):
    return re.sub(r"\b(" + "|".join(RENAMES) + r")\b", lambda m: RENAMES[m.group(1)], code)


def copied_from_bnref():
    """The forward and closed-form backward from bnref, with the docstrings dropped."""
    parts = []
    for fn in (F.batchnorm_forward, F.batchnorm_backward_alt):
        source = inspect.getsource(fn)
        parts.append(re.sub(r'"""(.|\n)*?"""\n', "", source, count=1))
    return "\n\n".join(parts)


def notebook(cells):
    """A minimal nbgrader notebook whose code cells are solution cells."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "outputs": [], "source": src,
                       "metadata": {"nbgrader": {"grade": False, "grade_id": f"code_{i}", "locked": False,
                                                 "schema_version": 3, "solution": True}}}
                      for i, src in enumerate(cells)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def split_in_two(code):
    """A submission's code split at its second function, as two solution cells."""
    at = code.index("def batchnorm_backward_alt")
    return [code[:at], code[at:]]


@pytest.fixture(scope="module")
def class_report(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    release = course / "release" / ASSIGNMENT
    release.mkdir(parents=True)
    (release / f"{ASSIGNMENT}.ipynb").write_text(json.dumps(notebook(STUBS)))
    submissions = {
        "copier": copied_from_bnref(),
        "sharer_a": SHARED,
        "sharer_b": renamed(SHARED),
        "indep_1": INDEPENDENT[1],
        "indep_2": INDEPENDENT[2],
        # two students who hand in the release's stubs untouched
        "stubs_a": "".join(STUBS),
        "stubs_b": "".join(STUBS),
    }
    for student, code in submissions.items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / f"{ASSIGNMENT}.ipynb").write_text(json.dumps(notebook(split_in_two(code))))
    # A symlink planted among the submissions is not followed.
    (course / "submitted" / "planted").symlink_to(course / "submitted" / "copier")
    out = course / "out"
    rows = copy_report.report(ASSIGNMENT, course=course, out=out)
    return rows, out


def pair_score(rows, a, b):
    for row in rows:
        if {row["submission"], row["other"]} == {a, b}:
            return row["score"]
    raise AssertionError(f"no row for {a} ~ {b}")


def test_copied_and_shared_rank_above_every_independent_pair(class_report):
    rows, _ = class_report
    bnref_copy = max(r["score"] for r in rows
                     if r["submission"] == "copier" and r["other"] == "bnref.functional")
    shared = pair_score(rows, "sharer_a", "sharer_b")
    flagged = {("copier", "bnref.functional"), ("sharer_a", "sharer_b"), ("sharer_b", "sharer_a")}
    innocent = [r for r in rows if (r["submission"], r["other"]) not in flagged
                and not (r["submission"] == "copier" and r["other_kind"] == "submission")]
    worst_innocent = max(r["score"] for r in innocent)
    print(f"copier ~ bnref.functional {bnref_copy:.2f}; sharer_a ~ sharer_b {shared:.2f}; "
          f"highest independent pair {worst_innocent:.2f}")
    assert bnref_copy > worst_innocent and shared > worst_innocent
    top = {(r["submission"], r["other"]) for r in rows[:2]} | {(r["other"], r["submission"]) for r in rows[:2]}
    assert ("copier", "bnref.functional") in top and ("sharer_a", "sharer_b") in top


def test_csv_and_html_are_written_ranked(class_report):
    rows, out = class_report
    with open(out / f"{ASSIGNMENT}-similarity.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in written] == list(range(1, len(rows) + 1))
    scores = [float(r["score"]) for r in written]
    assert scores == sorted(scores, reverse=True)
    html = (out / f"{ASSIGNMENT}-similarity.html").read_text()
    assert "sharer_b.py" in html and "copier.py" in html


def test_planted_symlink_is_not_read(class_report):
    rows, _ = class_report
    assert "planted" not in {r["submission"] for r in rows} | {r["other"] for r in rows}


def test_release_stubs_do_not_count_as_shared(class_report):
    rows, _ = class_report
    stub_rows = [r for r in rows if {r["submission"], r["other"]} == {"stubs_a", "stubs_b"}]
    assert stub_rows and all(r["score"] == 0 for r in stub_rows), stub_rows


def test_too_few_submissions_is_a_clear_error(tmp_path):
    (tmp_path / "submitted" / "only" / ASSIGNMENT).mkdir(parents=True)
    (tmp_path / "submitted" / "only" / ASSIGNMENT / "x.ipynb").write_text(json.dumps(notebook(STUBS)))
    with pytest.raises(ValueError, match="expected at least 2"):
        copy_report.report(ASSIGNMENT, course=tmp_path, out=tmp_path / "out")

"""The pieces that keep verdicts out of the student's process (issue #12):
the codec (answers are data and nothing else), the lockdown of torch's
normalization kernels, and the sanitized copies a kernel profile binds."""
import base64
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from grader import hide
from bnref.checking import codec

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_codec_round_trip_keeps_values_and_types():
    value = {"out": np.arange(6.0).reshape(2, 3), "n": 3, "f": float("nan"), "s": "train",
             "t": (np.float32(1.5), None, [True, -2]), "x": torch.ones(2, dtype=torch.float64)}
    back = codec.loads(codec.dumps(value))
    assert np.array_equal(back["out"], value["out"]) and back["out"].dtype == np.float64
    assert back["n"] == 3 and np.isnan(back["f"]) and back["s"] == "train"
    assert back["t"] == (1.5, None, [True, -2]) and isinstance(back["t"], tuple)
    assert isinstance(back["x"], torch.Tensor) and back["x"].dtype == torch.float64


def test_codec_turns_exceptions_and_objects_into_inert_data():
    back = codec.loads(codec.dumps([KeyError("mode"), object(), lambda: 1]))
    assert isinstance(back[0], codec.Raised) and back[0].type == "KeyError" and "mode" in back[0].message
    assert isinstance(back[1], codec.Opaque) and isinstance(back[2], codec.Opaque)


def test_codec_subclass_answers_arrive_as_plain_arrays():
    class Always(np.ndarray):
        def __eq__(self, other):
            return True

    back = codec.loads(codec.dumps(np.zeros(3).view(Always)))
    assert type(back) is np.ndarray and not np.array_equal(back, np.ones(3))


def _array(dtype="float64", shape=(2,), data=b"\0" * 16):
    return {"$array": {"dtype": dtype, "shape": list(shape), "b64": base64.b64encode(data).decode()}}


@pytest.mark.parametrize("payload, words", [
    (_array(dtype="object"), "dtype must be one of"),
    (_array(dtype="V8"), "dtype must be one of"),
    (_array(shape=(3,)), "needs 24 bytes, got 16"),
    (_array(shape=(-1,)), "shape must be"),
    ({"$pickle": "gASVAAAAAAAAAAA="}, "unknown tag"),
    ({"__reduce__": 1, "x": 2}, "one tag"),
    ({"$array": {"dtype": "float64", "shape": [1], "b64": "not base64!"}}, "not base64"),
    ({"$dict": [[1, 2]]}, "[key, value]"),
])
def test_codec_refuses_what_is_not_an_answer(payload, words):
    with pytest.raises(codec.DecodeError, match=None) as err:
        codec.decode(payload)
    assert words in str(err.value), str(err.value)


def test_codec_refuses_oversized_and_deeply_nested_answers():
    big = codec.encode(np.zeros(1000))
    with pytest.raises(codec.DecodeError, match="larger than the limit of 100 bytes"):
        codec.decode(big, max_bytes=100)
    deep = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(codec.DecodeError, match="nested deeper"):
        codec.decode(deep)
    with pytest.raises(codec.DecodeError, match="not JSON"):
        codec.loads("[" * 100000)


LOCKDOWN = textwrap.dedent("""
    import gc, json, sys
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, sys.argv[1])
    from bnref.checking import lockdown
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    before = F.batch_norm(x, None, None, training=True)
    lockdown.apply("no_norm")
    attempts = {
        "F.batch_norm": lambda: F.batch_norm(x, None, None, training=True),
        "nn.BatchNorm2d": lambda: torch.nn.BatchNorm2d(3).double()(x),
        "eval BatchNorm2d": lambda: torch.nn.BatchNorm2d(3).double().eval()(x),
        "inference_mode": lambda: torch.inference_mode()(lambda: F.batch_norm(x, None, None, training=True))(),
        "layer_norm": lambda: F.layer_norm(x, (2, 2)),
        "group_norm": lambda: F.group_norm(x, 3),
        "instance_norm": lambda: F.instance_norm(x),
        "aten op": lambda: torch.ops.aten.native_batch_norm.default(x, None, None, None, None, True, 0.1, 1e-5),
        "mkldnn": lambda: torch.batch_norm(x.float().to_mkldnn(), None, None, None, None, True, 0.1, 1e-5, False),
    }
    refused = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            refused[name] = False
        except RuntimeError:
            refused[name] = True
    handles = [o for o in gc.get_objects() if type(o).__name__ == "_DispatchModule"]
    basic = torch.allclose((x - x.mean((0, 2, 3), keepdim=True)) / x.var((0, 2, 3), unbiased=False, keepdim=True
                           ).add(1e-5).sqrt(), before)
    print(json.dumps({"refused": refused, "handles": len(handles), "basic_ops_work": basic}))
""")


def test_lockdown_refuses_every_normalization_route_and_leaves_no_handle():
    done = subprocess.run([sys.executable, "-c", LOCKDOWN, str(REPO)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(report["refused"].values()), report
    assert report["handles"] == 0, "the registration handle is reachable through gc"
    assert report["basic_ops_work"], "basic tensor arithmetic must keep working"


def test_sanitized_copy_keeps_the_module_and_refuses_matching_functions(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(textwrap.dedent('''
        import functools
        def register(f):
            return f
        @register
        def native_batch_norm(x):
            return x * 2
        def layer_norm(x):
            return x
        def add(a, b):
            return a + b
    '''))
    copy = hide.sanitized_copy(str(source), hide.NORM_FUNCTIONS, "{name} is refused")
    namespace = {}
    exec(compile(open(copy).read(), copy, "exec"), namespace)
    assert namespace["add"](2, 3) == 5
    for name in ("native_batch_norm", "layer_norm"):
        with pytest.raises(RuntimeError, match=f"{name} is refused"):
            namespace[name](1)
    with pytest.raises(RuntimeError, match="no function matches"):
        hide.sanitized_copy(str(source), r"^nothing_here$", "x")

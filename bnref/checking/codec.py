"""Plain data between the trusted grader and the student's kernel.

Values cross the boundary as JSON: numbers, strings, ``None``, lists, and
tagged objects for what JSON lacks (arrays, tensors, tuples, dicts,
non-finite floats, exceptions raised). Arrays travel as their raw bytes
in base64 with a dtype from a short list and a shape, so decoding never
builds anything but a plain ``numpy.ndarray`` (no pickle, no subclass, no
object with a method of the sender's). :func:`decode` checks every tag, type,
size and nesting depth and raises :class:`DecodeError` naming what it found.

The module is the same on both sides; only the trusted side's decoding is
relied on.
"""
import base64
import json
import math

import numpy as np

#: The MIME type of the driver's answers in the kernel's display output.
MIME = "application/x-bncourse-answers+json"

DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_DEPTH = 12


class DecodeError(ValueError):
    """Data that is not a well-formed answer."""


def _array(value, tag):
    array = np.asarray(value)
    array = np.ascontiguousarray(array).reshape(array.shape)  # keeps 0-d arrays 0-d
    if array.dtype.name not in DTYPES:
        return {"$object": f"array of dtype {array.dtype}"}
    return {tag: {"dtype": array.dtype.name, "shape": list(array.shape),
                  "b64": base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode()}}


def encode(value, depth=0):
    """A JSON-ready form of ``value`` (what :func:`decode` reads back)."""
    if depth > MAX_DEPTH:
        return {"$object": "too deeply nested"}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else {"$float": repr(float(value))}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.generic):
        return encode(value.item(), depth)
    if isinstance(value, np.ndarray):
        return _array(np.asarray(value), "$array")
    if type(value).__module__.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter"):
        tensor = value.detach()
        if tensor.dtype.is_floating_point and tensor.element_size() < 4:
            tensor = tensor.float()  # bf16 has no NumPy dtype
        out = _array(tensor.cpu().numpy(), "$tensor")
        if "$tensor" in out:
            out["$tensor"]["requires_grad"] = bool(value.requires_grad)
            out["$tensor"]["device"] = str(value.device)
        return out
    if isinstance(value, BaseException):
        return {"$raised": {"type": type(value).__name__, "message": str(value)[:500]}}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, depth + 1) for v in value]}
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[str(k), encode(v, depth + 1)] for k, v in value.items()]}
    return {"$object": type(value).__name__}


def dumps(value):
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":"))


class Raised:
    """An exception the student's code raised, as data: its type name and message."""

    def __init__(self, type_name, message):
        self.type, self.message = type_name, message

    def __repr__(self):
        return f"{self.type}: {self.message}" if self.message else self.type


class Opaque:
    """A value that cannot cross as data (a module, a function, ...): only its type name."""

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return f"<{self.what}>"


def _decode_array(spec, budget, as_tensor):
    if not isinstance(spec, dict) or set(spec) - {"dtype", "shape", "b64", "requires_grad", "device"}:
        raise DecodeError(f"an array must be {{dtype, shape, b64}}, got {str(spec)[:80]}")
    dtype, shape, b64 = spec.get("dtype"), spec.get("shape"), spec.get("b64")
    if dtype not in DTYPES:
        raise DecodeError(f"array dtype must be one of {', '.join(DTYPES)}, got {str(dtype)[:40]!r}")
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape)):
        raise DecodeError(f"array shape must be a list of at most 8 sizes, got {str(shape)[:80]}")
    if not isinstance(b64, str):
        raise DecodeError("array data must be a base64 string")
    if len(b64) > budget[0]:
        raise DecodeError(f"the answer is larger than the limit of {budget[1]} bytes")
    budget[0] -= len(b64)
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as err:
        raise DecodeError(f"array data is not base64: {err}") from None
    dt = np.dtype(dtype).newbyteorder("<")
    if len(raw) != math.prod(shape) * dt.itemsize:
        raise DecodeError(f"array of shape {tuple(shape)} and dtype {dtype} needs "
                          f"{math.prod(shape) * dt.itemsize} bytes, got {len(raw)}")
    array = np.frombuffer(raw, dtype=dt).reshape(shape).astype(dtype)
    if as_tensor:
        import torch

        return torch.from_numpy(array.copy())
    return array


def decode(data, max_bytes=16 << 20, tensors=True):
    """Rebuild values from :func:`encode`'s form, refusing anything else.

    Args:
        data: parsed JSON.
        max_bytes: the largest total of array data accepted.
        tensors: decode tensors as ``torch.Tensor`` (else as NumPy arrays).
    """
    budget = [max_bytes, max_bytes]

    def walk(value, depth):
        if depth > MAX_DEPTH + 2:
            raise DecodeError(f"values nested deeper than {MAX_DEPTH} levels")
        if value is None or isinstance(value, (bool, str, int)):
            if isinstance(value, str):
                if len(value) > budget[0]:
                    raise DecodeError(f"the answer is larger than the limit of {budget[1]} bytes")
                budget[0] -= len(value)
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            raise DecodeError(f"expected a value or one tag, got {str(value)[:80]}")
        (tag, body), = value.items()
        if tag == "$array":
            return _decode_array(body, budget, False)
        if tag == "$tensor":
            return _decode_array(body, budget, tensors)
        if tag == "$tuple" and isinstance(body, list):
            return tuple(walk(v, depth + 1) for v in body)
        if tag == "$dict" and isinstance(body, list):
            out = {}
            for item in body:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                    raise DecodeError(f"a dict item must be [key, value], got {str(item)[:80]}")
                out[item[0]] = walk(item[1], depth + 1)
            return out
        if tag == "$float" and body in ("nan", "inf", "-inf") or (tag == "$float" and isinstance(body, str)):
            try:
                return float(body)
            except ValueError:
                raise DecodeError(f"not a float: {body[:40]!r}") from None
        if tag == "$raised" and isinstance(body, dict):
            return Raised(str(body.get("type", "Exception"))[:100], str(body.get("message", ""))[:500])
        if tag == "$object":
            return Opaque(str(body)[:100])
        raise DecodeError(f"unknown tag {str(tag)[:40]!r}")

    return walk(data, 0)


def loads(text, max_bytes=16 << 20, tensors=True):
    if not isinstance(text, str):
        raise DecodeError(f"an answer must be JSON text, got {type(text).__name__}")
    if len(text) > 2 * max_bytes:
        raise DecodeError(f"the answer is larger than the limit of {max_bytes} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise DecodeError(f"not JSON: {str(err)[:80]}") from None
    return decode(data, max_bytes=max_bytes, tensors=tensors)

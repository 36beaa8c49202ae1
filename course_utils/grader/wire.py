"""The wire format between the trusted judge and the student's kernel: plain data, never pickle.

A message is a JSON-able *header* plus a list of binary *buffers* (Jupyter messages carry both). Values are
encoded into JSON trees; anything that JSON cannot say directly is a dict with one tag key::

    None, bool, int, str, finite float      as themselves
    {"$f": "nan" | "inf" | "-inf"}          non-finite floats
    {"$c": [re, im]}                        complex
    {"$b": i}                               bytes (buffer i)
    {"$l": [...]}, {"$t": [...]}            list, tuple
    {"$d": [[k, v], ...]}                   dict (any data keys)
    {"$s": [...]}, {"$fs": [...]}           set, frozenset
    {"$tensor": [dtype, shape, i, requires_grad, is_parameter]}   a CPU tensor's bytes in buffer i
    {"$nd": [dtype, shape, i]}              a numeric numpy array
    {"$dtype": "float32"}, {"$device": "cpu"}, {"$slice": [a, b, c]}, {"$ellipsis": 0}
    {"$h": [id, info]}                      kernel -> judge: a handle to an object that is not data
    {"$ref": id}                            judge -> kernel: one of the kernel's own objects, by handle
    {"$obj": i}                             judge -> kernel: a trusted object by value (``torch.save`` bytes)

The two directions are not symmetric, on purpose. :func:`decode` in the judge (``trusted=False`` input) accepts
data and handles only, within :class:`Limits`; it never imports, unpickles or calls anything. The kernel's
decoder also accepts ``$ref`` and ``$obj``: the judge is trusted, and the kernel runs arbitrary code anyway.
This module uses the standard library, plus torch and numpy when they are importable.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

try:  # the kernel and the judge both have torch; keep the module importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]
try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None  # type: ignore[assignment]

TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32",
                "int64", "uint8", "uint16", "uint32", "uint64", "bool")
NUMPY_KINDS = "biufc"
IMMUTABLE_SCALARS = (type(None), bool, int, float, complex, str, bytes)


class WireError(ValueError):
    """A message that is not in the wire format, or over its limits (the sender is at fault)."""


@dataclass(frozen=True)
class Limits:
    """What the judge accepts from a kernel in one reply."""

    max_bytes: int = 64 * 1024 * 1024      # all buffers together (zmq drops a larger message: kernel.MAX_MESSAGE_BYTES)
    max_nodes: int = 2_000_000             # JSON nodes
    max_depth: int = 64
    max_str: int = 20_000_000              # characters in one string


@dataclass(frozen=True)
class HandleInfo:
    """What the kernel says about an object it keeps: its class's MRO as "module.qualname" names."""

    id: int
    classes: tuple[str, ...]     # the MRO: "module.qualname" of each class
    callable: bool
    is_class: bool
    class_ids: tuple[int, ...] = ()   # handles of the MRO's classes (for an instance): isinstance() answered here


# ------------------------------------------------------------------------------------------------ encoding


class Encoder:
    """Encodes one message's values; collects the buffers.

    ``fallback(value, encoder)`` is called for anything that is not data: the kernel answers with a handle
    (``{"$h": ...}``), the judge with a reference or a pickled trusted object (whose bytes it adds with
    :meth:`add_buffer`).
    """

    def __init__(self, fallback: Callable[[Any, "Encoder"], Any] | None = None) -> None:
        self.buffers: list[bytes] = []
        self.fallback = fallback

    def add_buffer(self, data: bytes) -> int:
        """Append ``data`` to the message's buffers; its index."""
        self.buffers.append(bytes(data))
        return len(self.buffers) - 1

    _buffer = add_buffer

    def encode(self, value: Any, depth: int = 0) -> Any:
        if depth > 200:
            raise WireError("the value is nested too deeply to send")
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is str:
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$f": repr(value)}
        if kind is complex:
            return {"$c": [self.encode(value.real), self.encode(value.imag)]}
        if kind is bytes or kind is bytearray:
            return {"$b": self._buffer(value)}
        if kind is list:
            return {"$l": [self.encode(v, depth + 1) for v in value]}
        if kind is tuple:
            return {"$t": [self.encode(v, depth + 1) for v in value]}
        if kind is dict:
            return {"$d": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        if kind is set or kind is frozenset:
            return {"$s" if kind is set else "$fs": [self.encode(v, depth + 1) for v in value]}
        if kind is slice:
            return {"$slice": [self.encode(value.start), self.encode(value.stop), self.encode(value.step)]}
        if value is Ellipsis:
            return {"$ellipsis": 0}
        if torch is not None:
            if kind is torch.Size:
                return {"$t": [int(v) for v in value]}
            if kind is torch.dtype:
                return {"$dtype": str(value).replace("torch.", "")}
            if kind is torch.device:
                return {"$device": str(value)}
            if is_plain_tensor(value):
                return self.tensor(value)
        if np is not None:
            if isinstance(value, np.generic) and value.dtype.kind in NUMPY_KINDS:
                return self.encode(value.item(), depth)
            if kind is np.ndarray and value.dtype.kind in NUMPY_KINDS:
                arr = np.ascontiguousarray(value)
                return {"$nd": [arr.dtype.str, list(arr.shape), self._buffer(arr.tobytes())]}
        if self.fallback is None:
            raise WireError(f"a {kind.__name__} is not plain data")
        return self.fallback(value, self)

    def tensor(self, value: Any) -> dict:
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        dtype = str(t.dtype).replace("torch.", "")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        is_param = isinstance(value, torch.nn.Parameter)
        return {"$tensor": [dtype, list(t.shape), self._buffer(raw), bool(value.requires_grad), is_param]}


def is_plain_tensor(value: Any) -> bool:
    """A dense, strided tensor of a known dtype, of class Tensor or Parameter (subclasses are not data)."""
    if torch is None or type(value) not in (torch.Tensor, torch.nn.Parameter):
        return False
    try:
        return (value.layout == torch.strided and not value.is_quantized and not value.is_meta
                and not value.is_nested and str(value.dtype).replace("torch.", "") in TORCH_DTYPES)
    except Exception:  # noqa: BLE001 - an unusual tensor is simply not data
        return False


# ------------------------------------------------------------------------------------------------ decoding


class Decoder:
    """Decodes one message's values. ``trusted`` says whether ``$ref``/``$obj`` may appear (kernel side only).

    ``make_handle(info)`` turns a ``$h`` node into the judge's proxy; ``resolve(id)`` turns a ``$ref`` into the
    kernel's own object; ``unpickle(bytes)`` loads a ``$obj``.
    """

    def __init__(self, buffers: list, *, limits: Limits = Limits(), trusted: bool = False,
                 make_handle: Callable[[HandleInfo], Any] | None = None,
                 resolve: Callable[[int], Any] | None = None, unpickle: Callable[[bytes], Any] | None = None) -> None:
        self.buffers = [bytes(b) for b in buffers]
        total = sum(len(b) for b in self.buffers)
        if total > limits.max_bytes:
            raise WireError(f"the reply carries {total:,} bytes, more than the {limits.max_bytes:,} allowed")
        self.limits, self.trusted = limits, trusted
        self.make_handle, self.resolve, self.unpickle = make_handle, resolve, unpickle
        self.nodes = 0

    def buffer(self, index: Any) -> bytes:
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise WireError(f"no buffer {index!r}")
        return self.buffers[index]

    def decode(self, node: Any, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise WireError(f"the reply has more than {self.limits.max_nodes:,} values")
        if depth > self.limits.max_depth:
            raise WireError(f"the reply is nested more than {self.limits.max_depth} levels deep")
        kind = type(node)
        if node is None or kind is bool or kind is int:
            return node
        if kind is float:
            return node
        if kind is str:
            if len(node) > self.limits.max_str:
                raise WireError(f"a string of {len(node):,} characters is longer than allowed")
            return node
        if kind is not dict or len(node) != 1:
            raise WireError(f"not a wire value: a {kind.__name__}")
        [(tag, body)] = node.items()
        items = lambda: self._list(body, depth)  # noqa: E731
        if tag == "$f":
            if body not in ("nan", "inf", "-inf"):
                raise WireError(f"bad float {body!r}")
            return float(body)
        if tag == "$c":
            re_, im = self._list(body, depth)
            if not all(type(x) in (int, float) for x in (re_, im)):
                raise WireError("bad complex number")
            return complex(re_, im)
        if tag == "$b":
            return self.buffer(body)
        if tag == "$l":
            return items()
        if tag == "$t":
            return tuple(items())
        if tag in ("$s", "$fs"):
            values = items()
            try:
                return set(values) if tag == "$s" else frozenset(values)
            except TypeError as err:
                raise WireError(f"an unhashable set member: {err}") from None
        if tag == "$d":
            if type(body) is not list:
                raise WireError("bad dict")
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("bad dict item")
                key = self.decode(pair[0], depth + 1)
                try:
                    out[key] = self.decode(pair[1], depth + 1)
                except TypeError as err:
                    raise WireError(f"an unhashable dict key: {err}") from None
            return out
        if tag == "$slice":
            a, b, c = self._list(body, depth)
            return slice(a, b, c)
        if tag == "$ellipsis":
            return Ellipsis
        if tag == "$dtype":
            if body not in TORCH_DTYPES or torch is None:
                raise WireError(f"unknown dtype {body!r}")
            return getattr(torch, body)
        if tag == "$device":
            if type(body) is not str or torch is None:
                raise WireError("bad device")
            try:
                return torch.device(body)
            except (RuntimeError, ValueError) as err:
                raise WireError(f"bad device {body!r}") from err
        if tag == "$tensor":
            return self._tensor(body)
        if tag == "$nd":
            return self._ndarray(body)
        if tag == "$h":
            if self.make_handle is None or type(body) is not list or len(body) != 2:
                raise WireError("a handle where none may be")
            return self.make_handle(_handle_info(body))
        if tag == "$ref":
            if not self.trusted or self.resolve is None or type(body) is not int:
                raise WireError("a reference where none may be")
            return self.resolve(body)
        if tag == "$obj":
            if not self.trusted or self.unpickle is None:
                raise WireError("an object by value where none may be")
            return self.unpickle(self.buffer(body))
        raise WireError(f"unknown tag {tag!r}")

    def _list(self, body: Any, depth: int) -> list:
        if type(body) is not list:
            raise WireError("expected a list")
        return [self.decode(v, depth + 1) for v in body]

    def _shape(self, shape: Any) -> tuple[int, ...]:
        if type(shape) is not list or len(shape) > 32 or not all(type(s) is int and 0 <= s for s in shape):
            raise WireError(f"bad shape {shape!r}")
        return tuple(shape)

    def _tensor(self, body: Any):
        if torch is None or type(body) is not list or len(body) != 5:
            raise WireError("bad tensor")
        dtype_name, shape, index, requires_grad, is_param = body
        if dtype_name not in TORCH_DTYPES or not hasattr(torch, dtype_name):
            raise WireError(f"unknown tensor dtype {dtype_name!r}")
        dtype = getattr(torch, dtype_name)
        shape = self._shape(shape)
        raw = self.buffer(index)
        numel = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise WireError(f"a {dtype_name} tensor of shape {shape} needs {numel * itemsize} bytes, got {len(raw)}")
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
        if is_param is True:
            return torch.nn.Parameter(t, requires_grad=bool(requires_grad))
        if requires_grad is True and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        return t

    def _ndarray(self, body: Any):
        if np is None or type(body) is not list or len(body) != 3:
            raise WireError("bad array")
        dtype_str, shape, index = body
        try:
            dtype = np.dtype(dtype_str) if type(dtype_str) is str and len(dtype_str) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in NUMPY_KINDS or dtype.hasobject:
            raise WireError(f"bad array dtype {dtype_str!r}")
        shape = self._shape(shape)
        raw = self.buffer(index)
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise WireError("array buffer of the wrong size")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _handle_info(body: list) -> HandleInfo:
    hid, info = body
    if type(hid) is not int or type(info) is not dict:
        raise WireError("bad handle")
    mro = info.get("mro", [])
    if type(mro) is not list or len(mro) > 64 or not all(type(m) is str and len(m) < 300 for m in mro):
        raise WireError("bad handle type")
    ids = info.get("mro_ids", [])
    if type(ids) is not list or len(ids) != (len(mro) if ids else 0) or not all(type(i) is int for i in ids):
        raise WireError("bad handle class ids")
    return HandleInfo(hid, tuple(mro), info.get("callable") is True, info.get("class") is True, tuple(ids))


def tensors_in(value: Any, is_tensor: Callable[[Any], bool]) -> list:
    """The tensors in an argument structure (lists, tuples, dict values), depth first, in order: the same order
    on both sides, which is how a recorded call's gradients are matched to its inputs."""
    if is_tensor(value):
        return [value]
    if type(value) in (list, tuple):
        return [t for v in value for t in tensors_in(v, is_tensor)]
    if type(value) is dict:
        return [t for v in value.values() for t in tensors_in(v, is_tensor)]
    return []


def type_names(cls: type) -> list[str]:
    """"module.qualname" of each class in ``cls``'s MRO (as the kernel reports them)."""
    names = []
    for klass in getattr(cls, "__mro__", (cls,))[:64]:
        module = getattr(klass, "__module__", "?")
        qualname = getattr(klass, "__qualname__", getattr(klass, "__name__", "?"))
        names.append(f"{module}.{qualname}"[:299] if isinstance(module, str) and isinstance(qualname, str) else "?")
    return names


def torch_save_bytes(value: Any) -> bytes:
    """A trusted object by value (judge -> kernel only)."""
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def torch_load_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)


def dumps(header: dict) -> str:
    """Compact JSON for logs and size checks (the messages themselves go through Jupyter's own packer)."""
    return json.dumps(header, separators=(",", ":"), allow_nan=False)

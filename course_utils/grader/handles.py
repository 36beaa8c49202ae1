"""The judge's stand-ins for the student's objects: :class:`Handle` (an object that is not data) and the stand-in
classes of the student's own classes (:class:`RemoteClassMeta`).

A handle forwards attribute reads, calls, indexing and iteration to the kernel (through its
:class:`~course_utils.grader.proxy.Remote`); comparisons, arithmetic and torch functions first fetch its value as
data and then run in the judge, so no expected value is ever sent to the kernel. ``isinstance`` is answered from
the MRO the kernel reported: a trusted library class (``torch.nn.Parameter``) or the stand-in of a student's class.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from course_utils.grader import wire

TRUSTED_MODULES = ("builtins", "collections", "torch", "transformers", "peft", "numpy", "math", "fractions",
                   "decimal", "typing", "tokenizers")
PASSTHROUGH_DUNDERS = {"__name__", "__qualname__", "__doc__", "__module__", "__wrapped__"}



def _value(obj: Any) -> Any:
    """A handle's object as local data (fetched from the kernel); anything else unchanged."""
    if type(obj) is Handle:
        return object.__getattribute__(obj, "_remote").request("value", h=object.__getattribute__(obj, "_hid"))
    if type(obj) in (list, tuple):
        return type(obj)(_value(v) for v in obj)
    if type(obj) is dict:
        return {k: _value(v) for k, v in obj.items()}
    return obj


def _data_or_none(obj: Handle) -> tuple[bool, Any]:
    try:
        return True, _value(obj)
    except TypeError:
        return False, None


def _binary(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: Handle, other: Any) -> Any:
        ok, value = _data_or_none(self)
        if not ok:
            return NotImplemented
        return op(value, _value(other))
    return method


def _reflected(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: Handle, other: Any) -> Any:
        ok, value = _data_or_none(self)
        if not ok:
            return NotImplemented
        return op(_value(other), value)
    return method


def _unary(op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def method(self: Handle) -> Any:
        return op(_value(self))
    return method


class Handle:
    """One of the kernel's objects. Attribute reads, calls, indexing and iteration go to the kernel."""

    __slots__ = ("_remote", "_hid", "_info", "__weakref__")

    def __init__(self, remote: Any, info: wire.HandleInfo) -> None:
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_hid", info.id)
        object.__setattr__(self, "_info", info)

    # --- what the kernel is asked
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in PASSTHROUGH_DUNDERS:
            raise AttributeError(name)
        return object.__getattribute__(self, "_remote").request("getattr", h=object.__getattribute__(self, "_hid"),
                                                                  name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__getattribute__(self, "_remote").request("setattr", h=object.__getattribute__(self, "_hid"),
                                                          name=name, values={"value": value})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self, "_remote").call(object.__getattribute__(self, "_hid"), args, kwargs)

    def __getitem__(self, key: Any) -> Any:
        return object.__getattribute__(self, "_remote").request("getitem", h=object.__getattribute__(self, "_hid"),
                                                                  values={"key": key})

    def __setitem__(self, key: Any, value: Any) -> None:
        object.__getattribute__(self, "_remote").request("setitem", h=object.__getattribute__(self, "_hid"),
                                                          values={"key": key, "value": value})

    def __iter__(self) -> "_RemoteIterator":
        remote = object.__getattribute__(self, "_remote")
        return _RemoteIterator(remote, remote.request("iter", h=object.__getattribute__(self, "_hid")))

    def __len__(self) -> int:
        n = object.__getattribute__(self, "_remote").request("len", h=object.__getattribute__(self, "_hid"))
        if type(n) is not int or n < 0:
            raise TypeError(f"len() of the student's object gave {n!r}")
        return n

    def __bool__(self) -> bool:
        return object.__getattribute__(self, "_remote").request("bool", h=object.__getattribute__(self, "_hid")) \
            is True

    def __contains__(self, item: Any) -> bool:
        return object.__getattribute__(self, "_remote").request(
            "contains", h=object.__getattribute__(self, "_hid"), values={"item": item}) is True

    def __repr__(self) -> str:
        text = object.__getattribute__(self, "_remote").request("repr", h=object.__getattribute__(self, "_hid"))
        return text if type(text) is str else "<object>"

    def __str__(self) -> str:
        text = object.__getattribute__(self, "_remote").request("str", h=object.__getattribute__(self, "_hid"))
        return text if type(text) is str else "<object>"

    def __format__(self, spec: str) -> str:
        ok, value = _data_or_none(self)
        return format(value, spec) if ok else format(str(self), spec)

    # --- what the judge computes on the object's value, fetched as data
    def __course_value__(self) -> Any:
        return _value(self)

    def __eq__(self, other: Any) -> Any:
        if other is self:
            return True
        ok, value = _data_or_none(self)
        return value == _value(other) if ok else NotImplemented

    def __ne__(self, other: Any) -> Any:
        if other is self:
            return False
        ok, value = _data_or_none(self)
        return value != _value(other) if ok else NotImplemented

    __hash__ = object.__hash__
    __lt__ = _binary(lambda a, b: a < b)
    __le__ = _binary(lambda a, b: a <= b)
    __gt__ = _binary(lambda a, b: a > b)
    __ge__ = _binary(lambda a, b: a >= b)
    __add__, __radd__ = _binary(lambda a, b: a + b), _reflected(lambda a, b: a + b)
    __sub__, __rsub__ = _binary(lambda a, b: a - b), _reflected(lambda a, b: a - b)
    __mul__, __rmul__ = _binary(lambda a, b: a * b), _reflected(lambda a, b: a * b)
    __matmul__, __rmatmul__ = _binary(lambda a, b: a @ b), _reflected(lambda a, b: a @ b)
    __truediv__, __rtruediv__ = _binary(lambda a, b: a / b), _reflected(lambda a, b: a / b)
    __floordiv__, __rfloordiv__ = _binary(lambda a, b: a // b), _reflected(lambda a, b: a // b)
    __mod__, __rmod__ = _binary(lambda a, b: a % b), _reflected(lambda a, b: a % b)
    __pow__, __rpow__ = _binary(lambda a, b: a ** b), _reflected(lambda a, b: a ** b)
    __and__, __rand__ = _binary(lambda a, b: a & b), _reflected(lambda a, b: a & b)
    __or__, __ror__ = _binary(lambda a, b: a | b), _reflected(lambda a, b: a | b)
    __xor__, __rxor__ = _binary(lambda a, b: a ^ b), _reflected(lambda a, b: a ^ b)
    __neg__ = _unary(lambda a: -a)
    __pos__ = _unary(lambda a: +a)
    __abs__ = _unary(abs)
    __invert__ = _unary(lambda a: ~a)
    __float__ = _unary(float)
    __int__ = _unary(int)
    __index__ = _unary(lambda a: a.__index__())
    __complex__ = _unary(complex)
    __round__ = _unary(round)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy as np  # noqa: PLC0415

        return np.asarray(_value(self), dtype=dtype)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return func(*_value(tuple(args)), **_value(dict(kwargs or {})))

    @property
    def __class__(self) -> type:  # type: ignore[override]
        """For isinstance(): a trusted library class from the object's MRO, or the stand-in of its class."""
        info = object.__getattribute__(self, "_info")
        local = trusted_class(info.classes[0]) if info.classes else None
        if local is not None:
            return local
        remote = object.__getattribute__(self, "_remote")
        if info.class_ids:
            known = remote.classes.get(info.class_ids[0])
            if known is None:
                known = remote.classes[info.class_ids[0]] = stand_in(
                    remote, wire.HandleInfo(info.class_ids[0], info.classes, True, True))
            return known
        try:
            cls = object.__getattribute__(self, "_remote").request(
                "getattr", h=object.__getattribute__(self, "_hid"), name="__class__")
        except Exception:  # noqa: BLE001 - a kernel that will not say: an opaque handle
            return Handle
        return cls if isinstance(cls, type) else Handle

    def __reduce__(self) -> Any:
        raise TypeError("a handle to the student's object cannot be copied or pickled")

    def __deepcopy__(self, memo: dict) -> Any:
        raise TypeError("a handle to the student's object cannot be copied in the judge; build a fresh one")


class _RemoteIterator:
    """Iterates a kernel-side iterator, fetching items in chunks (one request per chunk, not per item)."""

    CHUNK = 64

    def __init__(self, remote: Any, handle: Any) -> None:
        self.remote, self.handle = remote, handle
        self.buffer: list = []
        self.stopped = False
        self.chunk = 1

    def __iter__(self) -> "_RemoteIterator":
        return self

    def __next__(self) -> Any:
        if not self.buffer and not self.stopped:
            step = self.remote.request("next", h=object.__getattribute__(self.handle, "_hid"), n=self.chunk)
            self.chunk = min(self.CHUNK, self.chunk * 4)
            items = step.get("items") if isinstance(step, dict) else None
            self.buffer = list(items) if isinstance(items, list) else []
            self.stopped = not isinstance(step, dict) or step.get("stop") is not False
        if not self.buffer:
            raise StopIteration
        return self.buffer.pop(0)


# ---------------------------------------------------------------------------------------------------- classes


class RemoteClassMeta(type):
    """The metaclass of stand-ins for the student's classes."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.__remote__.call(cls.__remote_id__, args, kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        if type(obj) is not Handle or object.__getattribute__(obj, "_remote") is not cls.__remote__:
            return False
        info = object.__getattribute__(obj, "_info")
        if info.class_ids:       # the kernel said which classes the object's MRO holds
            return cls.__remote_id__ in info.class_ids
        return cls.__remote__.request("isinstance", h=object.__getattribute__(obj, "_hid"),
                                      cls=cls.__remote_id__) is True

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in PASSTHROUGH_DUNDERS:
            raise AttributeError(name)
        return cls.__remote__.request("getattr", h=cls.__remote_id__, name=name)

    def __repr__(cls) -> str:
        return f"<the student's class {cls.__name__}>"


def stand_in(remote: Any, info: wire.HandleInfo) -> type:
    name = info.classes[0].rsplit(".", 1)[-1] if info.classes else "StudentClass"
    base = next((c for c in (trusted_class(m) for m in info.classes[1:]) if c is not None and c is not object), None)
    namespace = {"__remote__": remote, "__remote_id__": info.id, "__module__": "student"}
    for bases in ((base,) if base is not None else (), ()):
        try:
            meta = type("RemoteClassMeta", (RemoteClassMeta, type(bases[0])), {}) if bases and \
                type(bases[0]) is not type else RemoteClassMeta
            return meta(name, bases or (object,), dict(namespace))
        except TypeError:
            continue
    return RemoteClassMeta(name, (object,), namespace)


def trusted_class(qualified: str) -> type | None:
    """The judge's own class ``module.qualname`` when its module is a trusted, already imported library."""
    module_name, _, qualname = qualified.rpartition(".")
    if not module_name or module_name.split(".")[0] not in TRUSTED_MODULES:
        return None
    module = sys.modules.get(module_name)
    if module is None:
        return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None

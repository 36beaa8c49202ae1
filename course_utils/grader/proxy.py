"""The judge's side of the oracle: proxies that stand for the student's objects while tests run in the judge.

A :class:`Remote` is one student kernel seen from the judge. ``remote.resolve("causal_mask")`` returns what the
test code gets for an exercise name:

* plain data (numbers, strings, containers, tensors) as local copies;
* a :class:`Handle` for an object that is not data (a function, a student's ``nn.Module``): calling it, reading
  or setting its attributes, indexing and iterating it are requests to the kernel; comparisons, arithmetic and
  torch functions first fetch its value as data and then run here, in the judge;
* a stand-in *class* for a student's class (``LoRALinear``): calling it builds an instance in the kernel, and
  ``isinstance(handle, LoRALinear)`` asks the kernel.

Arguments sent to the kernel are data, handles (by reference) or trusted judge objects (an ``nn.Module`` the
test built, by value). Tensor arguments that require grad make a *recorded* call: the result comes back attached
to the judge's autograd graph, and ``.backward()`` asks the kernel for the input gradients, so a loss function
written by the student can drive a training loop that runs in the judge.

Everything that comes back is decoded by :class:`course_utils.grader.wire.Decoder` within limits: the kernel can
send wrong answers, never code.
"""

from __future__ import annotations

import functools
import sys
import threading
import types
import weakref
from typing import Any, Callable

from course_utils.grader import wire
from course_utils.grader.handles import TRUSTED_MODULES, Handle, RemoteClassMeta, stand_in

Transport = Callable[[dict, list], "Reply"]


_FUNCTIONS = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.BuiltinMethodType,
              functools.partial)


def _library_function(fn: Any) -> bool:
    """A function of a trusted library, which pickles by reference (the kernel uses its own copy)."""
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", "") or ""
    return (isinstance(module, str) and module.split(".")[0] in TRUSTED_MODULES and "<" not in qualname
            and not isinstance(fn, (functools.partial, types.MethodType)))


class Reply:
    """What the transport got back for one request: the reply header and buffers, and the kernel's output."""

    def __init__(self, header: dict, buffers: list, output: str = "") -> None:
        self.header, self.buffers, self.output = header, buffers, output


class RemoteError(Exception):
    """The student's code raised an exception that the judge does not re-raise as a built-in one."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name, self.message, self.remote_traceback = type_name, message, traceback


class KernelGone(RuntimeError):
    """The kernel died, was killed, or stopped answering: nothing more can be asked of it."""


class Remote:
    """One student kernel as seen from the judge: requests, the handle registry, stand-in classes."""

    def __init__(self, transport: Transport, *, limits: wire.Limits = wire.Limits(),
                 max_output_chars: int = 200_000) -> None:
        self.transport = transport
        self.limits = limits
        self.handles: dict[int, weakref.ref] = {}
        self.classes: dict[int, type] = {}
        self.unused: list[int] = []
        self.lock = threading.RLock()
        self.output_budget = max_output_chars
        self.requests = 0

    # ------------------------------------------------------------------ requests

    def request(self, op: str, *, values: dict[str, Any] | None = None, **fields: Any) -> Any:
        """Send one request; decode the answer; raise what the student's code raised."""
        encoder = wire.Encoder(self._outgoing)
        header = {"op": op, **fields}
        if wire.torch is not None:
            header["grad"] = wire.torch.is_grad_enabled()     # the judge's autograd mode applies in the kernel
        for key, value in (values or {}).items():
            header[key] = encoder.encode(value)
        with self.lock:
            if self.unused:     # handles the judge no longer holds: forgotten with this request
                header["release"], self.unused = self.unused[:4096], self.unused[4096:]
            reply = self._send(header, encoder.buffers)
        return self._result(reply)

    def _send(self, header: dict, buffers: list) -> Reply:
        self.requests += 1
        reply = self.transport(header, buffers)
        if reply.output and self.output_budget > 0:
            text = reply.output[: self.output_budget]
            self.output_budget -= len(text)
            sys.stdout.write(text)
        return reply

    def _result(self, reply: Reply) -> Any:
        header = reply.header if isinstance(reply.header, dict) else {}
        if "err" in header:
            raise self._exception(header["err"])
        if "ok" not in header:
            raise wire.WireError("the kernel's reply has neither a result nor an error")
        decoder = wire.Decoder(reply.buffers, limits=self.limits, make_handle=self._handle)
        return decoder.decode(header["ok"])

    def _exception(self, err: Any) -> BaseException:
        """The student's exception as a built-in one of the same kind (ValueError, ...), or a RemoteError."""
        err = err if isinstance(err, dict) else {}
        mro = [m for m in err.get("mro", []) if isinstance(m, str)][:64]
        message = str(err.get("msg", ""))[:20_000]
        name = mro[0].rsplit(".", 1)[-1] if mro else "Exception"
        for qualified in mro:
            module, _, cls_name = qualified.rpartition(".")
            cls = getattr(__import__("builtins"), cls_name, None) if module == "builtins" else None
            if isinstance(cls, type) and issubclass(cls, Exception) and cls is not Exception:
                if cls is StopIteration:
                    break
                try:
                    exc = cls(message)
                except Exception:  # noqa: BLE001 - an exception class that wants other arguments
                    continue
                exc.remote_type = name  # type: ignore[attr-defined]
                return exc
        return RemoteError(name, message, str(err.get("tb", ""))[:20_000])

    # ------------------------------------------------------------------ values

    def _outgoing(self, value: Any, encoder: wire.Encoder) -> Any:
        """How a judge value that is not data travels: handles by reference, trusted objects by value."""
        if type(value) is Handle:
            return {"$ref": object.__getattribute__(value, "_hid")}
        if isinstance(value, RemoteClassMeta):
            return {"$ref": value.__remote_id__}
        if isinstance(value, _FUNCTIONS) and not _library_function(value):
            raise TypeError(f"cannot send {value!r} to the student's kernel: the judge never hands the kernel "
                            "code of its own to call back (tests must not pass their functions into student code)")
        try:
            data = wire.torch_save_bytes(_without_hooks(value))
        except Exception as err:  # noqa: BLE001 - say what could not travel
            raise TypeError(f"cannot send a {type(value).__name__} to the student's kernel: {err}") from err
        return {"$obj": encoder.add_buffer(data)}

    def _handle(self, info: wire.HandleInfo) -> Any:
        if info.is_class:
            cls = self.classes.get(info.id)
            if cls is None:
                cls = self.classes[info.id] = stand_in(self, info)
            return cls
        ref = self.handles.get(info.id)
        existing = ref() if ref is not None else None
        if existing is not None:
            return existing
        handle = Handle(self, info)
        self.handles[info.id] = weakref.ref(handle)
        weakref.finalize(handle, self._forget, info.id)
        return handle

    def _forget(self, hid: int) -> None:
        self.handles.pop(hid, None)
        self.unused.append(hid)

    def resolve(self, name: str) -> Any:
        """The kernel's global ``name``: data, a handle or a stand-in class (NameError when it is not there)."""
        return self.request("global", name=name)

    # ------------------------------------------------------------------ calls

    def call(self, hid: int, args: tuple, kwargs: dict) -> Any:
        torch = wire.torch
        grad_inputs = [t for t in wire.tensors_in((args, kwargs), _is_local_tensor) if t.requires_grad] \
            if torch is not None else []
        if not grad_inputs or not torch.is_grad_enabled():
            return self.request("call", h=hid, values={"args": list(args), "kwargs": dict(kwargs)})
        sent_args, sent_kwargs = _detached((list(args), dict(kwargs)))
        answer = self.request("call", h=hid, record=True, values={"args": sent_args, "kwargs": sent_kwargs})
        if not isinstance(answer, dict) or answer.get("record") is None:
            return answer.get("value") if isinstance(answer, dict) else answer
        value = answer["value"]
        outputs = [value] if isinstance(value, torch.Tensor) else list(value)
        if not outputs or not all(isinstance(o, torch.Tensor) and (o.is_floating_point() or o.is_complex())
                                  for o in outputs):
            return value
        attached = _RemoteGrad.apply(self, answer["record"], len(grad_inputs), *grad_inputs,
                                     *[o.detach() for o in outputs])
        if isinstance(value, torch.Tensor):
            return attached[0]
        return type(value)(attached)

    def backward(self, record: int, grads: list, inputs: list) -> list:
        result = self.request("backward", record=record, values={"grads": grads})
        if not isinstance(result, list) or len(result) != len(inputs):
            raise wire.WireError("the kernel returned the wrong number of gradients")
        checked = []
        for g, (shape, dtype) in zip(result, inputs):
            if g is not None and (type(g) is not wire.torch.Tensor or tuple(g.shape) != shape):
                raise wire.WireError(f"a gradient of the wrong shape came back from the student's kernel: "
                                     f"{tuple(getattr(g, 'shape', ()))} for an input of shape {shape}")
            checked.append(None if g is None else g.to(dtype))
        return checked


def _without_hooks(value: Any) -> Any:
    """A copy of an ``nn.Module`` without its hooks (transformers installs closures that cannot be pickled and
    are not needed for a forward pass); any other value unchanged."""
    torch = wire.torch
    if torch is None or not isinstance(value, torch.nn.Module):
        return value
    import copy  # noqa: PLC0415

    clone = copy.deepcopy(value)
    for module in clone.modules():
        for name, hooks in list(vars(module).items()):
            if "hooks" in name and isinstance(hooks, dict):
                hooks.clear()
    return clone


def _is_local_tensor(value: Any) -> bool:
    return type(value) is not Handle and isinstance(value, wire.torch.Tensor)


def _detached(value: Any) -> Any:
    """A copy of the argument structure whose tensors are detached (their requires_grad flag kept)."""
    torch = wire.torch
    if type(value) is Handle:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(True) if value.requires_grad else value
    if type(value) in (list, tuple):
        return type(value)(_detached(v) for v in value)
    if type(value) is dict:
        return {k: _detached(v) for k, v in value.items()}
    return value


def _make_remote_grad():  # noqa: ANN202 - a torch.autograd.Function subclass, built when torch is there
    torch = wire.torch

    class RemoteGrad(torch.autograd.Function):
        """Outputs computed in the kernel, attached to the judge's graph; backward asks the kernel."""

        @staticmethod
        def forward(ctx, remote, record, n_in, *tensors):  # noqa: ANN001, ANN205
            ctx.remote, ctx.record = remote, record
            ctx.inputs = [(tuple(t.shape), t.dtype) for t in tensors[:n_in]]
            return tuple(t.clone() for t in tensors[n_in:])

        @staticmethod
        def backward(ctx, *grad_outputs):  # noqa: ANN001, ANN205
            grads = ctx.remote.backward(ctx.record, list(grad_outputs), ctx.inputs)
            return (None, None, None, *grads, *([None] * len(grad_outputs)))

    return RemoteGrad


class _LazyGrad:
    fn = None

    def apply(self, *args: Any) -> Any:
        if self.fn is None:
            self.fn = _make_remote_grad()
        return self.fn.apply(*args)


_RemoteGrad = _LazyGrad()

"""The oracle: the student's kernel answering the judge's questions while a notebook is graded.

:func:`install` runs inside the sandboxed kernel before any of the student's code. It registers the Jupyter
comm target ``course-oracle``; the judge (:mod:`course_utils.grader.judge`) opens a comm and sends requests
such as "call the object behind handle 3 with these arguments" or "what is the global ``causal_mask``?".
Each reply is plain data in the wire format (:mod:`course_utils.grader.wire`): numbers, strings, containers,
tensor bytes, or handles to objects that are not data. Nothing here calls back into the judge.

Nothing in this module is secret, and the student's code can replace any of it: that only changes the student's
own answers, because every verdict is reached in the judge.

Requests (``op``)::

    global(name)                 the kernel's global ``name`` (by value when it is data)
    getattr(h, name) / setattr(h, name, value) / getitem(h, key) / setitem(h, key, value)
    call(h, args, kwargs, record)  h(*args, **kwargs); with ``record`` the tensors marked requires_grad are
                                   leaves and the call's graph is kept for a later ``backward``
    backward(record, grads)      input gradients of a recorded call, given its outputs' gradients
    iter(h) / next(h, n) (up to n items) / len(h) / bool(h) / repr(h) / str(h) / contains(h, item) / isinstance(h, cls)
    value(h)                     the object behind h as data, or an error if it is not data
    release(ids)                 forget handles and records (any request may also carry ``release``)
"""

from __future__ import annotations

import itertools
import sys
import traceback
from typing import Any

from course_utils.grader import wire

TARGET = "course-oracle"
MAX_REPR = 20_000
MAX_RECORDS = 512


class Oracle:
    """The handle table and the request dispatcher (one per kernel)."""

    def __init__(self, namespace: dict) -> None:
        self.namespace = namespace
        self.objects: dict[int, Any] = {}
        self.records: dict[int, tuple[list, list]] = {}
        self.ids = itertools.count(1)
        self.known: dict[int, int] = {}      # id(object) -> handle: one handle per object while it is held

    # ------------------------------------------------------------------ encoding helpers

    def handle(self, value: Any) -> dict:
        hid = self._keep(value)
        cls = value if isinstance(value, type) else type(value)
        info = {"mro": wire.type_names(cls), "callable": callable(value), "class": isinstance(value, type)}
        if not isinstance(value, type):   # the classes of its MRO as handles: isinstance() is then answered locally
            info["mro_ids"] = [self._keep(klass) for klass in getattr(cls, "__mro__", (cls,))[:64]]
        return {"$h": [hid, info]}

    def _keep(self, value: Any) -> int:
        """The handle id of ``value``, kept in the table (one id per object while it is held)."""
        hid = self.known.get(id(value))
        if hid is None or self.objects.get(hid) is not value:
            hid = next(self.ids)
            self.objects[hid] = value
            self.known[id(value)] = hid
        return hid

    def by_value(self, value: Any, encoder: wire.Encoder) -> Any:
        """Containers and tensors as data; tensors carrying an autograd graph, and non-data, as handles."""
        def fallback(v: Any, _encoder: wire.Encoder) -> Any:
            return self.handle(v)

        def walk(v: Any, depth: int = 0) -> Any:
            kind = type(v)
            if depth > 100:
                return self.handle(v)
            if kind in (list, tuple):
                items = [walk(x, depth + 1) for x in v]
                return {"$l" if kind is list else "$t": items}
            if kind is dict:
                return {"$d": [[walk(k, depth + 1), walk(x, depth + 1)] for k, x in v.items()]}
            if wire.is_plain_tensor(v) and v.requires_grad and v.grad_fn is not None:
                return self.handle(v)          # keeps its graph: .backward() is forwarded
            try:
                return encoder.encode(v)
            except wire.WireError:
                return self.handle(v)

        encoder.fallback = fallback
        return walk(value)

    def by_reference(self, value: Any, encoder: wire.Encoder) -> Any:
        """Immutable scalars (and tuples of them) as data; anything that can change as a handle."""
        if type(value) in wire.IMMUTABLE_SCALARS or _immutable_tuple(value):
            return encoder.encode(value)
        try:
            import torch  # noqa: PLC0415

            if type(value) in (torch.Size, torch.dtype, torch.device):
                return encoder.encode(value)
        except ImportError:  # pragma: no cover
            pass
        return self.handle(value)

    # ------------------------------------------------------------------ requests

    def decode(self, node: Any, buffers: list) -> Any:
        return wire.Decoder(buffers, trusted=True, resolve=self.objects.__getitem__,
                            unpickle=wire.torch_load_bytes,
                            limits=wire.Limits(max_bytes=2 ** 40, max_nodes=10 ** 8)).decode(node)

    def answer(self, request: dict, buffers: list) -> tuple[dict, list[bytes]]:
        """One reply: ``{"id", "ok": value}`` or ``{"id", "err": {mro, msg, tb}}``, and its buffers.

        The request's ``grad`` flag is the judge's autograd mode (``torch.no_grad()`` in a test applies here too).
        """
        encoder = wire.Encoder()
        try:
            with _grad_mode(request.get("grad")):
                result = self._dispatch(request, buffers, encoder)
            return {"id": request.get("id"), "ok": result}, encoder.buffers
        except BaseException as err:  # noqa: BLE001 - everything the student's code raises is an answer
            text = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=8))
            try:
                message = str(err)[:MAX_REPR]
            except BaseException:  # noqa: BLE001 - a __str__ that raises
                message = "<the exception's message could not be shown>"
            return {"id": request.get("id"), "err": {"mro": wire.type_names(type(err)), "msg": message,
                                                    "tb": text[-MAX_REPR:]}}, []

    def _dispatch(self, req: dict, buffers: list, enc: wire.Encoder) -> Any:
        self._release(req.get("release") or [])
        op = req.get("op")
        arg = lambda key: self.decode(req.get(key), buffers)  # noqa: E731
        obj = lambda: self.objects[req["h"]]  # noqa: E731
        if op == "ping":
            return "pong"
        if op == "global":
            name = req["name"]
            if name not in self.namespace:
                raise NameError(f"name {name!r} is not defined")
            return self.by_value(self.namespace[name], enc)
        if op == "getattr":
            return self.by_reference(getattr(obj(), req["name"]), enc)
        if op == "setattr":
            setattr(obj(), req["name"], arg("value"))
            return None
        if op == "getitem":
            return self.by_reference(obj()[arg("key")], enc)
        if op == "setitem":
            obj()[arg("key")] = arg("value")
            return None
        if op == "call":
            args, kwargs = arg("args"), arg("kwargs")
            if req.get("record"):
                return self._recorded_call(obj(), args, kwargs, enc)
            return self.by_value(obj()(*args, **kwargs), enc)
        if op == "backward":
            return self._backward(req["record"], arg("grads"), enc)
        if op == "iter":
            return self.handle(iter(obj()))
        if op == "next":
            items, iterator = [], obj()
            for _ in range(max(1, min(int(req.get("n", 1)), 256))):
                try:
                    items.append(self.by_value(next(iterator), enc))
                except StopIteration:
                    return _record_node(items={"$l": items}, stop=True)
            return _record_node(items={"$l": items}, stop=False)
        if op == "len":
            return len(obj())
        if op == "bool":
            return bool(obj())
        if op == "repr":
            return repr(obj())[:MAX_REPR]
        if op == "str":
            return str(obj())[:MAX_REPR]
        if op == "contains":
            return arg("item") in obj()
        if op == "isinstance":
            return isinstance(obj(), self.objects[req["cls"]])
        if op == "value":
            try:
                return enc.encode(obj())
            except wire.WireError as err:
                raise TypeError(f"not plain data: {err}") from None
        if op == "release":
            self._release(req.get("ids") or [])
            return None
        raise ValueError(f"unknown request {op!r}")

    def _release(self, ids: list) -> None:
        for hid in ids if isinstance(ids, list) else []:
            gone = self.objects.pop(hid, None)
            if gone is not None and self.known.get(id(gone)) == hid:
                del self.known[id(gone)]
            self.records.pop(hid, None)

    def _recorded_call(self, fn: Any, args: Any, kwargs: Any, enc: wire.Encoder) -> Any:
        """Call with the grad-requiring tensor arguments as leaves; keep the graph for :meth:`_backward`."""
        import torch  # noqa: PLC0415

        leaves = [t for t in wire.tensors_in((args, kwargs), wire.is_plain_tensor) if t.requires_grad]
        with torch.enable_grad():
            out = fn(*args, **kwargs)
        outputs = [out] if wire.is_plain_tensor(out) else (
            list(out) if type(out) in (tuple, list) and all(wire.is_plain_tensor(o) for o in out) else [])
        if outputs and any(o.requires_grad for o in outputs):
            rid = next(self.ids)
            self.records[rid] = (leaves, outputs)
            while len(self.records) > MAX_RECORDS:
                self.records.pop(next(iter(self.records)))
            return _record_node(record=rid, value=enc.encode(out))
        return _record_node(record=None, value=self.by_value(out, enc))

    def _backward(self, rid: int, grads: list, enc: wire.Encoder) -> Any:
        import torch  # noqa: PLC0415

        leaves, outputs = self.records.pop(rid)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
        if not pairs or not leaves:
            return [None] * len(leaves)
        result = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True)
        return enc.encode([None if g is None else g.detach() for g in result])


def _record_node(**fields: Any) -> dict:
    """A dict of already encoded values, as a wire node (string keys)."""
    return {"$d": [[key, value] for key, value in fields.items()]}


def _immutable_tuple(value: Any) -> bool:
    return type(value) is tuple and len(value) < 10_000 and all(
        type(v) in wire.IMMUTABLE_SCALARS or _immutable_tuple(v) for v in value)


class _grad_mode:
    """``torch.set_grad_enabled(flag)`` for the duration of a request (nothing when flag is not a bool)."""

    def __init__(self, flag: Any) -> None:
        self.flag, self.previous = flag, None

    def __enter__(self) -> None:
        if type(self.flag) is bool:
            import torch  # noqa: PLC0415

            self.previous = torch.is_grad_enabled()
            torch.set_grad_enabled(self.flag)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            import torch  # noqa: PLC0415

            torch.set_grad_enabled(self.previous)


def install() -> None:
    """Register the comm target in this kernel (called once, before any student code runs)."""
    from IPython import get_ipython  # noqa: PLC0415

    shell = get_ipython()
    oracle = Oracle(shell.user_ns)

    def on_open(comm: Any, _msg: dict) -> None:
        def on_msg(msg: dict) -> None:
            content = msg.get("content", {}).get("data", {})
            reply, buffers = oracle.answer(content if isinstance(content, dict) else {}, msg.get("buffers") or [])
            sys.stdout.flush()
            sys.stderr.flush()
            comm.send(reply, buffers=buffers)

        comm.on_msg(on_msg)

    shell.kernel.comm_manager.register_target(TARGET, on_open)

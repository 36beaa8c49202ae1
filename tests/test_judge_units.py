"""The trusted judge's pieces, without a kernel: the wire format, the oracle and the proxies, the cell plan.

The oracle normally answers over a Jupyter comm inside the sandboxed kernel; here it answers in-process, through the
same ``answer(request, buffers)`` entry point, so every rule of the protocol is tested fast. The end-to-end runs
(a real sandboxed kernel, real hostile submissions) are in test_grading.py.
"""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest
import torch

from course_utils import checks
from course_utils.grader import oracle, proxy, wire
from course_utils.grader import plan as cells


def roundtrip(value, limits=wire.Limits()):
    encoder = wire.Encoder()
    node = encoder.encode(value)
    return wire.Decoder(encoder.buffers, limits=limits).decode(node)


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2 ** 80, 1.5, "tête", b"\x00\xff", complex(1, -2), [1, [2, (3, "x")]], (1,), {"a": 1, 2: [3]},
    {1, 2}, frozenset({"a"}), slice(1, None, 2), Ellipsis, torch.float16, torch.device("cpu"),
])
def test_plain_values_survive_the_wire(value):
    assert roundtrip(value) == value and type(roundtrip(value)) is type(value)


def test_non_finite_floats_and_tensors_of_every_dtype_survive_the_wire():
    assert math.isnan(roundtrip(float("nan"))) and roundtrip(float("-inf")) == float("-inf")
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int64, torch.uint8,
                  torch.bool, torch.complex64):
        for shape in ((), (0,), (3,), (2, 3, 4)):
            t = (torch.arange(math.prod(shape) or 1)[: math.prod(shape)].reshape(shape) % 2).to(dtype)
            back = roundtrip(t)
            assert back.dtype == dtype and back.shape == t.shape and torch.equal(back, t)
    p = torch.nn.Parameter(torch.ones(2))
    back = roundtrip(p)
    assert isinstance(back, torch.nn.Parameter) and back.requires_grad
    transposed = torch.arange(6.0).reshape(2, 3).T     # not contiguous
    assert torch.equal(roundtrip(transposed), transposed)
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert np.array_equal(roundtrip(arr), arr) and roundtrip(np.float32(2.5)) == 2.5


@pytest.mark.parametrize("node, buffers, why", [
    ({"$obj": 0}, [b"x"], "object by value"),
    ({"$ref": 1}, [], "reference"),
    ({"$pickle": 0}, [b""], "unknown tag"),
    ({"$tensor": ["float32", [2], 0, False, False]}, [b"\x00" * 4], "needs 8 bytes"),
    ({"$tensor": ["object", [1], 0, False, False]}, [b"\x00" * 8], "dtype"),
    ({"$nd": ["|O", [1], 0]}, [b"\x00" * 8], "dtype"),
    ({"$b": 3}, [], "no buffer"),
    ({"a": 1, "b": 2}, [], "not a wire value"),
    ([1, 2], [], "not a wire value"),
])
def test_the_judge_decodes_data_only(node, buffers, why):
    with pytest.raises(wire.WireError, match=why):
        wire.Decoder(buffers).decode(node)


def test_the_judge_bounds_what_it_accepts():
    deep = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(wire.WireError, match="nested"):
        roundtrip(deep)
    with pytest.raises(wire.WireError, match="bytes"):
        roundtrip(torch.zeros(1000), limits=wire.Limits(max_bytes=100))
    with pytest.raises(wire.WireError, match="values"):
        roundtrip(list(range(1000)), limits=wire.Limits(max_nodes=100))


# ------------------------------------------------------------------------------------------- oracle + proxies


class Student:
    """An in-process stand-in for a student's kernel: an oracle over a namespace, and a log of the requests."""

    def __init__(self, namespace: dict) -> None:
        self.oracle = oracle.Oracle(namespace)
        self.requests: list[dict] = []
        self.remote = proxy.Remote(self.transport)

    def transport(self, header: dict, buffers: list) -> proxy.Reply:
        self.requests.append(header)
        reply, out = self.oracle.answer(header, buffers)
        return proxy.Reply(reply, out, "")


STUDENT_CODE = '''
import torch
from torch import nn

def double(x):
    return 2 * x

def loss(a, b):
    return ((a - b) ** 2).sum()

def picky(n):
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(range(n))

class Scaler(nn.Module):
    def __init__(self, base, s):
        super().__init__()
        self.base, self.s = base, s
        self.w = nn.Parameter(torch.ones(base.out_features))
    def forward(self, x):
        return self.base(x) * self.w * self.s

answer_q1 = "b"
'''


@pytest.fixture()
def student():
    namespace: dict = {}
    exec(STUDENT_CODE, namespace)  # noqa: S102 - the test's own "student"
    return Student(namespace)


def test_calls_return_data_and_raise_the_students_errors(student):
    double = student.remote.resolve("double")
    assert torch.equal(double(torch.tensor([1.0, 2.0])), torch.tensor([2.0, 4.0]))
    assert student.remote.resolve("answer_q1") == "b"
    picky = student.remote.resolve("picky")
    assert picky(3) == [0, 1, 2]
    err = checks.expect_raises(ValueError, picky, -1, what="picky(-1)")
    assert "got -1" in str(err)
    with pytest.raises(NameError):
        student.remote.resolve("not_defined")


def test_a_students_class_is_a_stand_in_and_its_instances_are_handles(student):
    Scaler = student.remote.resolve("Scaler")
    lin = torch.nn.Linear(3, 2)
    layer = Scaler(lin, 3.0)                          # built in the "kernel" from a copy of lin
    assert isinstance(layer, Scaler) and isinstance(layer, torch.nn.Module)
    assert not isinstance(lin, Scaler)
    x = torch.randn(4, 3)
    checks.expect_close(layer(x), lin(x) * 3.0, what="forward")
    assert isinstance(layer.w, torch.nn.Parameter) and layer.s == 3.0
    with torch.no_grad():
        layer.w.mul_(2)                                # forwarded, under the judge's no_grad
    checks.expect_close(layer(x), lin(x) * 6.0, what="after an in-place change made through the handle")
    layer.s = 1.0
    assert layer.s == 1.0
    names = [name for name, _ in layer.named_parameters()]
    assert names == ["w", "base.weight", "base.bias"]
    layer(x).pow(2).sum().backward()                   # the graph lives in the kernel
    assert layer.w.grad is not None and layer.base.weight.grad is not None


def test_a_students_loss_drives_a_training_loop_in_the_judge(student):
    remote_loss = student.remote.resolve("loss")
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(5)
    value = remote_loss(a, b)
    assert value.requires_grad
    value.backward()
    expected = 2 * (a.detach() - b)
    assert torch.allclose(a.grad, expected)
    opt = torch.optim.SGD([a], lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        remote_loss(a, b).backward()
        opt.step()
    assert float(((a.detach() - b) ** 2).sum()) < 1e-3


def test_expected_values_never_travel_to_the_kernel(student):
    double = student.remote.resolve("double")
    marker = 123456.0
    got = double(torch.tensor([1.0]))
    with pytest.raises(checks.CheckFailure):
        checks.expect_close(got, [marker], what="a check that fails")
    Scaler = student.remote.resolve("Scaler")
    layer = Scaler(torch.nn.Linear(1, 1), 1.0)
    assert (layer.s == marker) is False and (layer.w != torch.tensor([marker])).all()
    sent = repr(student.requests)
    assert "123456" not in sent, "a comparison sent the expected value to the kernel"


def test_the_judge_never_hands_the_kernel_its_own_code(student):
    double = student.remote.resolve("double")
    with pytest.raises(TypeError, match="call back"):
        double(lambda: 1)
    assert double(torch.tensor(1)) == 2          # a torch function is fine: the kernel uses its own torch


def test_a_kernel_cannot_return_code(student):
    class Sneaky:
        def __reduce__(self):
            return (print, ("pwned",))
    student.oracle.namespace["sneaky"] = lambda: Sneaky()
    got = student.remote.resolve("sneaky")()
    assert type(got) is proxy.Handle, "an object that is not data stays in the kernel, as a handle"
    with pytest.raises(TypeError, match="not plain data"):
        checks.plain(got)


# --------------------------------------------------------------------------------------------------- the plan


def _cell(kind: str, source: str, grade_id: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "schema_version": 3, "points": 1 if kind == "test" else 0,
                                 "solution": kind == "solution", "grade": kind == "test",
                                 "locked": kind in ("locked", "test")}
    return cell


def test_the_plan_proxies_exercise_names_and_reruns_only_the_locked_cells_tests_need():
    nb = [
        _cell("locked", "import torch\nmodel = torch.nn.Linear(2, 2)", "setup"),
        _cell("locked", "print(model)\nfig = 1", "show"),                      # only shows: not needed
        _cell("solution", "def f(x):\n    return x\nanswer = 3", "ex"),
        _cell("locked", "model.eval()", "mutate"),                              # changes model in place: needed
        _cell("locked", "trained = [f(1) for _ in range(3)]", "demo-uses-f"),   # needed by the test below
        _cell("test", "for i in range(2):\n    q = i\nassert f(q) == q and answer == 3 and trained and model",
              "t1"),
    ]
    plan = cells.plan(nb)
    [test] = plan.tests
    assert test.exercise_names == ["answer", "f"]
    assert [plan.locked_id(i) for i in test.locked_cells] == ["setup", "mutate", "demo-uses-f"]
    assert plan.cell_exercise_names == {4: ["f"]}
    assert "q" not in cells.analyse(nb[-1].source).reads, "a loop variable is the test's own"

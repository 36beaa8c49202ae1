"""Feedback-rich checks for the exercises.

A failing check says four things: the input, what was expected, what came back, and a hint at the likely
mistake. Checks never hold a reference answer (learners can read installed code): the expected value comes
from the test cell, computed with the field's own libraries (torch, transformers, peft, rouge-score) or
written there by hand.

Results are coerced to plain types before comparing (a tensor becomes a float64 tensor copied out of the
learner's object, anything else must be a plain Python value), so an object whose ``__eq__`` always says
True cannot pass a check. While grading, the checks run in the trusted judge and the learner's objects are
proxies (:mod:`course_utils.grader.proxy`); every check first fetches such an object's value as data.

    >>> import torch
    >>> from course_utils.checks import expect_close
    >>> expect_close(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), what="softmax of [0, 0]")
"""

from __future__ import annotations

import math
from typing import Any, Sequence

_PLAIN_SCALARS = (bool, int, float, str, type(None))


class CheckFailure(AssertionError):
    """A check that failed, with a message written for the learner."""


def _data(value: Any) -> Any:
    """The plain data behind the grader's proxy for a learner's object (anything else unchanged)."""
    fetch = getattr(type(value), "__course_value__", None)
    return fetch(value) if fetch is not None else value


def _fmt(value: Any, limit: int = 300) -> str:
    text = repr(value)
    try:
        import torch

        if isinstance(value, torch.Tensor):
            with torch.no_grad():
                body = repr(value.detach().cpu()).replace("\n", "\n            ")
            text = f"{body}  (shape {tuple(value.shape)}, dtype {str(value.dtype).replace('torch.', '')})"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(what: str, *, inputs: Any = None, expected: Any = None, got: Any = None, hint: str | None = None,
         show: Sequence[str] = ("inputs", "expected", "got")) -> None:
    """Raise :class:`CheckFailure` with the standard four-part message."""
    lines = [f"Check failed: {what}"]
    parts = {"inputs": ("input", inputs), "expected": ("expected", expected), "got": ("got", got)}
    for key in show:
        label, value = parts[key]
        if value is not None or key == "got":
            lines.append(f"  {label + ':':<10}{value if isinstance(value, str) and key == 'inputs' else _fmt(value)}")
    if hint:
        lines.append(f"  {'hint:':<10}{hint}")
    raise CheckFailure("\n".join(lines))


def plain(value: Any, *, what: str = "the result") -> Any:
    """``value`` as plain Python data (tensors and arrays become lists), or a CheckFailure if it is not data."""
    try:
        import numpy as np
        import torch
    except ImportError:  # pragma: no cover
        np = torch = None  # type: ignore[assignment]
    value = _data(value)
    if type(value) in _PLAIN_SCALARS:
        return value
    if torch is not None and isinstance(value, torch.Tensor):
        return torch.Tensor.tolist(torch.Tensor.detach(value).cpu())
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if type(value) in (list, tuple):
        return type(value)(plain(v, what=what) for v in value)
    if type(value) is dict:
        return {plain(k, what=what): plain(v, what=what) for k, v in value.items()}
    fail(f"{what} must be plain data (numbers, strings, lists, tensors)",
         got=f"an object of type {type(value).__name__}",
         hint="return the value itself, not a custom object.", show=("got",))


def as_tensor(value: Any, *, what: str = "the result"):
    """A float64 copy of ``value`` (a tensor, array, number or nested list), or a CheckFailure."""
    import torch

    value = _data(value)
    if isinstance(value, torch.Tensor):
        if type(value) is not torch.Tensor and not isinstance(value, torch.nn.Parameter):
            fail(f"{what} must be a plain torch.Tensor", got=f"a {type(value).__name__}", show=("got",))
        return torch.Tensor.detach(value).to("cpu", torch.float64).clone()
    try:
        return torch.tensor(plain(value, what=what), dtype=torch.float64)
    except (TypeError, ValueError) as err:
        fail(f"{what} must be a tensor or a list of numbers", got=value, hint=str(err), show=("got",))


def expect_type(value: Any, types: type | tuple[type, ...], *, what: str, hint: str | None = None) -> None:
    """``value`` is an instance of ``types``."""
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        fail(f"{what} should be a {names}", expected=names, got=f"{type(value).__name__}: {_fmt(value, 120)}",
             hint=hint, show=("expected", "got"))


def expect_shape(value: Any, shape: Sequence[int], *, what: str, inputs: Any = None,
                 hint: str | None = None) -> None:
    """``value`` is a tensor of exactly ``shape``."""
    import torch

    value = _data(value)
    expect_type(value, torch.Tensor, what=what)
    if tuple(value.shape) != tuple(shape):
        fail(f"{what} has the wrong shape", inputs=inputs, expected=tuple(shape), got=tuple(value.shape),
             hint=hint)


def expect_close(got: Any, expected: Any, *, what: str, inputs: Any = None, hint: str | None = None,
                 atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """``got`` equals ``expected`` within tolerance, with the same shape; both coerced to float64."""
    g = as_tensor(got, what=what)
    e = as_tensor(expected, what="the expected value")
    if tuple(g.shape) != tuple(e.shape):
        fail(f"{what} has the wrong shape", inputs=inputs, expected=tuple(e.shape), got=tuple(g.shape), hint=hint)
    import torch

    same_inf = torch.isinf(g) == torch.isinf(e)
    finite = torch.isfinite(g) & torch.isfinite(e)
    inf_equal = bool(torch.equal(g[~finite & same_inf], e[~finite & same_inf])) if bool((~finite).any()) else True
    if not bool(same_inf.all()) or not inf_equal or bool(torch.isnan(g).any() != torch.isnan(e).any()):
        fail(what, inputs=inputs, expected=expected, got=got, hint=hint or "infinite or NaN values differ.")
    if bool(finite.any()):
        diff = (g[finite] - e[finite]).abs()
        bound = atol + rtol * e[finite].abs()
        if bool((diff > bound).any()):
            worst = float((diff - bound).max() + bound.max())
            fail(what, inputs=inputs, expected=expected, got=got,
                 hint=(hint + f" (largest difference {worst:.3g})") if hint else f"largest difference {worst:.3g}")


def expect_equal(got: Any, expected: Any, *, what: str, inputs: Any = None, hint: str | None = None) -> None:
    """``got`` equals ``expected`` exactly, after coercing both to plain Python data."""
    g, e = plain(got, what=what), plain(expected, what="the expected value")
    if type(g) is not type(e) and not (isinstance(g, (int, float)) and isinstance(e, (int, float))
                                       and not isinstance(g, bool)):
        fail(what, inputs=inputs, expected=expected, got=got,
             hint=hint or f"expected a {type(e).__name__}, got a {type(g).__name__}.")
    if g != e:
        fail(what, inputs=inputs, expected=expected, got=got, hint=hint)


def expect_number(got: Any, expected: float, *, what: str, inputs: Any = None, hint: str | None = None,
                  rel: float = 1e-6, abs_: float = 1e-9) -> None:
    """``got`` is a real number (int, float or a one-element tensor) close to ``expected``."""
    value = plain(got, what=what)
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{what} should be a number", inputs=inputs, expected=expected, got=got, hint=hint)
    if not math.isclose(float(value), float(expected), rel_tol=rel, abs_tol=abs_):
        fail(what, inputs=inputs, expected=expected, got=value, hint=hint)


def expect_true(condition: Any, *, what: str, inputs: Any = None, got: Any = None, hint: str | None = None) -> None:
    """``condition`` is exactly True (a plain bool or a one-element bool tensor)."""
    value = plain(condition, what=what)
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is not True:
        fail(what, inputs=inputs, got=got if got is not None else condition, hint=hint, show=("inputs", "got"))


def expect_raises(exc: type[BaseException] | tuple[type[BaseException], ...], fn: Any, *args: Any, what: str,
                  hint: str | None = None, **kwargs: Any) -> BaseException:
    """Calling ``fn(*args, **kwargs)`` raises ``exc``; returns the exception for further checks."""
    try:
        fn(*args, **kwargs)
    except exc as err:
        return err
    except Exception as err:  # noqa: BLE001 - we report whatever came instead
        names = exc.__name__ if isinstance(exc, type) else " or ".join(e.__name__ for e in exc)
        fail(what, inputs=_call_repr(args, kwargs), expected=f"{names} raised",
             got=f"{type(err).__name__}: {err}", hint=hint)
    names = exc.__name__ if isinstance(exc, type) else " or ".join(e.__name__ for e in exc)
    fail(what, inputs=_call_repr(args, kwargs), expected=f"{names} raised", got="no exception", hint=hint)
    raise AssertionError("unreachable")  # pragma: no cover


def _call_repr(args: tuple, kwargs: dict) -> str:
    parts = [_fmt(a, 80) for a in args] + [f"{k}={_fmt(v, 80)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def expect_unchanged(before: Any, after: Any, *, what: str, hint: str | None = None) -> None:
    """A tensor argument was not modified in place (compare a clone taken before the call)."""
    import torch

    if not torch.equal(as_tensor(before), as_tensor(after)):
        fail(what, expected=before, got=after,
             hint=hint or "work on a copy (e.g. `x = x.clone()` or out-of-place ops), never modify the input.")


# ----------------------------------------------------------------------------------------------
# Concept questions: the answer is a plain value in a code cell (``answer_q3 = "b"``). The visible check
# only looks at its form; the hidden check compares it with the key and, when it is wrong, explains the
# misconception that answer shows, without printing the key.


def _choice_text(options: Sequence[str]) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _normal_choice(value: Any) -> Any:
    return value.strip().lower() if type(value) is str else value


def expect_choice(answer: Any, options: Sequence[str], *, what: str) -> None:
    """A multiple-choice answer has the right form: one of ``options`` (a string such as ``"b"``).

    ``options`` is a sequence of strings (``"abcd"`` means ``"a"``, ``"b"``, ``"c"``, ``"d"``). Upper case and
    surrounding spaces are forgiven; anything else is said plainly, without judging the choice itself.
    """
    allowed = [str(o).lower() for o in options]
    value = None if answer is Ellipsis else plain(answer, what=what)
    if value is None:
        fail(f"{what} is not answered yet", got=value,
             hint=f"replace it with your choice: {_choice_text(allowed)} (a string, in quotes).", show=("got",))
    if type(value) is not str:
        fail(f"{what} should be one letter in quotes", got=value,
             hint=f"write the letter as a string, e.g. {what.split()[0]} = {allowed[0]!r}; the options are "
                  f"{_choice_text(allowed)}.", show=("got",))
    if _normal_choice(value) not in allowed:
        fail(f"{what} is not one of the options", got=value,
             hint=f"answer with exactly one of {_choice_text(allowed)}.", show=("got",))


def expect_numeric(answer: Any, *, what: str, unit: str | None = None) -> None:
    """A numeric answer has the right form: a finite int or float (not a string, not a bool)."""
    value = None if answer is Ellipsis else plain(answer, what=what)
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    unit_text = f" in {unit}" if unit else ""
    if value is None:
        fail(f"{what} is not answered yet", got=value, hint=f"replace it with a number{unit_text}.", show=("got",))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = f"write a number{unit_text}, e.g. 3.5e9 or 12 (no quotes, no units in the value)."
        fail(f"{what} should be a number", got=value, hint=hint, show=("got",))
    if not math.isfinite(value):
        fail(f"{what} should be a finite number", got=value, hint=f"a finite number{unit_text}.", show=("got",))


def expect_mapping(answer: Any, keys: Sequence[str], values: Sequence[str], *, what: str) -> None:
    """A matching answer has the right form: a dict with exactly ``keys``, each mapped to one of ``values``."""
    value = plain(answer, what=what)
    if type(value) is not dict:
        fail(f"{what} should be a dict", got=value,
             hint=f"a dict {{key: choice}} with the keys {_choice_text(list(keys))}.", show=("got",))
    missing = [k for k in keys if k not in value]
    extra = [k for k in value if k not in keys]
    if missing or extra:
        fail(f"{what} should have exactly the keys given", got=sorted(map(str, value)),
             hint=(f"missing {missing}; " if missing else "") + (f"unexpected {extra}; " if extra else "")
             + "keep the keys of the cell as they are and fill in the values.", show=("got",))
    allowed = [str(v).lower() for v in values]
    for k in keys:
        v = value[k]
        if v is None:
            fail(f"{what}[{k!r}] is not answered yet", got=v, hint=f"one of {_choice_text(allowed)}.", show=("got",))
        if type(v) is not str or _normal_choice(v) not in allowed:
            fail(f"{what}[{k!r}] is not one of the options", got=v,
                 hint=f"answer with exactly one of {_choice_text(allowed)} (a string).", show=("got",))


def expect_answer(answer: Any, key: Any, *, what: str, explain: dict | None = None, otherwise: str | None = None,
                  rel: float = 0.02) -> None:
    """A concept question's answer equals ``key``; a wrong answer fails with the misconception it shows.

    * a string key (multiple choice): compared without case or surrounding spaces; ``explain`` maps each
      wrong option to what choosing it suggests;
    * a number key: equal within ``rel`` (relative); ``explain`` maps typical wrong values (compared with
      the same tolerance) to the mistake that gives them;
    * a dict key (matching): every entry must match; ``explain`` maps ``(key, wrong value)`` to a message.

    The key itself is never printed (the failure message reaches the learner's feedback): only the answer
    given and why it is wrong. ``otherwise`` is the explanation for a wrong answer ``explain`` does not list.
    """
    explain = explain or {}
    value = plain(answer, what=what)
    fallback = otherwise or "not this one: reread the section above and try again."
    if isinstance(key, str):
        if _normal_choice(value) != key.lower():
            fail(f"{what}: not the right choice", got=value,
                 hint=explain.get(_normal_choice(value), fallback), show=("got",))
    elif isinstance(key, (int, float)) and not isinstance(key, bool):
        while isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"{what} should be a number", got=value, hint=fallback, show=("got",))
        if not math.isclose(float(value), float(key), rel_tol=rel, abs_tol=0.0):
            hint = next((text for wrong, text in explain.items()
                         if math.isclose(float(value), float(wrong), rel_tol=rel, abs_tol=0.0)), fallback)
            fail(f"{what}: not the right value", got=value, hint=hint, show=("got",))
    elif isinstance(key, dict):
        if type(value) is not dict:
            fail(f"{what} should be a dict", got=value, hint=fallback, show=("got",))
        wrong = [(k, value.get(k)) for k in key if _normal_choice(value.get(k)) != str(key[k]).lower()]
        if wrong:
            k, v = wrong[0]
            hint = explain.get((k, _normal_choice(v)), explain.get(k, fallback))
            fail(f"{what}: {len(wrong)} of {len(key)} matched wrongly, among them {k!r}", got=v, hint=hint,
                 show=("got",))
    else:  # pragma: no cover - a mistake in the test cell, not in the answer
        raise TypeError(f"expect_answer: unsupported key type {type(key).__name__}")

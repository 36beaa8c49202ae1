"""Predict, then run: the self-check of the start notebook.

The learner writes a prediction (a shape, a list of numbers, a number) in one cell; the next cell computes the
real value with torch and compares. Nothing is graded and no answer is stored here: the truth is computed in
front of the learner, who sees both and an explanation.

    >>> import torch
    >>> from course_utils.review.selfcheck import compare_prediction
    >>> compare_prediction((2, 4), (torch.randn(2, 3) @ torch.randn(3, 4)).shape, what="the shape",
    ...                    explain="(2, 3) @ (3, 4): the inner 3s meet, (2, 4) remains.")
    ✅ the shape: (2, 4), as you predicted.
    (2, 3) @ (3, 4): the inner 3s meet, (2, 4) remains.
    True
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["compare_prediction"]


def _normal(value: Any) -> Any:
    """Shapes, tensors, tuples and lists as nested tuples of plain numbers; numbers as floats."""
    try:
        import torch

        if isinstance(value, torch.Size):
            return tuple(int(v) for v in value)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().tolist()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(value, (list, tuple)):
        return tuple(_normal(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)


def _same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return a == b


def compare_prediction(prediction: Any, actual: Any, *, what: str, explain: str, tol: float = 1e-4) -> bool:
    """Print whether ``prediction`` matches ``actual`` (shapes, nested numbers, plain values), then ``explain``.

    A prediction that is still ``...`` (or ``None``) is not judged: the learner is asked to write one first.
    Returns True when the prediction was right.
    """
    if prediction is Ellipsis or prediction is None:
        print(f"⏳ {what}: write your prediction in the cell above (replace the ...), run it, then run this cell.")
        return False
    shown = _normal(actual)
    shown_text = repr(shown) if not isinstance(shown, float) or not shown.is_integer() else repr(int(shown))
    if _same(_normal(prediction), shown, tol):
        print(f"✅ {what}: {shown_text}, as you predicted.")
        ok = True
    else:
        print(f"❌ {what}: you predicted {prediction!r}, torch says {shown_text}.")
        ok = False
    print(explain)
    return ok
